"""The SQLite store: connection.py runs the SQL (one file, one worker thread, the event
loop's own connections); each other module holds one concern's SQL."""

from gateway.store.sqlite.sql import SqliteMigrationTarget
from gateway.store.sqlite.store import SqliteStore

__all__ = ["SqliteMigrationTarget", "SqliteStore"]
