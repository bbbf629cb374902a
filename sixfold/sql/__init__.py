"""What the writer's and the readers' SQL sides share: the database's layout on the volume
(layout.py), SQLite on a thread of its own (engine.py), and SQL values on the wire
(values.py)."""
