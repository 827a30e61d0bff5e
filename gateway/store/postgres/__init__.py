"""The PostgreSQL store backend (see `connection.py` for how it shares one database)."""

from gateway.store.postgres.connection import PostgresStore

__all__ = ["PostgresStore"]
