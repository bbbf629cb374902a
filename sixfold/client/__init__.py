"""The client side: the DB-API 2.0 connection and cluster discovery."""
