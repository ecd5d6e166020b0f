"""The network service's state in SQL: schema, engine and migrations."""
