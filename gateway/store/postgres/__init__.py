"""The PostgreSQL store: connection.py holds the pool and says how replicas share one
database safely; each other module holds one concern's SQL."""

from gateway.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
