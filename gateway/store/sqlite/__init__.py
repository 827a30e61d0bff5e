"""The SQLite store backend (see `connection.py` for how it runs its SQL)."""

from gateway.store.sqlite.connection import SqliteMigrationTarget, SqliteStore

__all__ = ["SqliteMigrationTarget", "SqliteStore"]
