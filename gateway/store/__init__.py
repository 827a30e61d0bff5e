"""Store backends behind the `Store` protocol, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from gateway.store.base import Store, StoreUnavailable
from gateway.store.migrations import Migration
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

__all__ = ["migrate", "open_store"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """The store for `url`, not yet opened: the caller awaits `store.open()`.

    `sqlite:///ABSOLUTE/PATH` (the parent directory is created here) or
    `postgresql://user:password@host:port/database` (libpq URI, query options included).
    """
    return _backend(url)


async def migrate(url: str) -> list[Migration]:
    """Apply the pending schema migrations of the store at `url` (what `open` also does at
    start-up); returns the ones this call applied, empty when the schema was current."""
    store = _backend(url)
    try:
        await store.open()
        return store.applied_migrations
    finally:
        await store.close()


def _backend(url: str) -> SqliteStore | PostgresStore:
    if url.startswith(_SQLITE_PREFIX):
        return SqliteStore(_sqlite_path(url))
    if url.startswith(_POSTGRES_PREFIXES):
        return PostgresStore(url)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:/// or postgresql://")


def _sqlite_path(url: str) -> Path:
    """The path is taken literally (no percent-decoding) and is always absolute, so
    `sqlite:///var/gw.db` and the config's `sqlite:////var/gw.db` name the same file."""
    path = Path("/" + url.removeprefix(_SQLITE_PREFIX).lstrip("/"))
    if path == Path("/"):
        raise ValueError(f"SQLite store URL names no file: {url!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create {path.parent}: {exc}") from exc
    return path
