"""The instance host: one process that serves reads and can become the writer, or step down.

It sits above writer/ and reader/ and joins them (host.py), serves the Topology, Instance
and Sql gRPC services (services.py, sql_service.py) and runs the process (server.py).
Nothing in sixfold/, storage_node/, writer/ or reader/ imports it.
"""
