"""Store backends behind the `Store` protocol, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from gateway.store.base import Store, StoreUnavailable
from gateway.store.sqlite import SqliteStore

__all__ = ["open_store"]

_SQLITE_PREFIX = "sqlite:///"


def open_store(url: str) -> Store:
    """The store for `url`, not yet opened: the caller awaits `store.open()`.

    `sqlite:///ABSOLUTE/PATH` (the parent directory is created here) or `postgresql://…`.
    """
    if url.startswith(_SQLITE_PREFIX):
        return SqliteStore(_sqlite_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreUnavailable("PostgreSQL backend is not available in this version")
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
