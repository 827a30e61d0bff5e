"""Known callee locations in SQLite, by the blind index of the number (a row written
before encryption holds the number in clear and is found too; the indexed one wins)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.model import KnownLocation
from gateway.store.core import located, location_value
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import rows_for_stored_forms, transaction

_UPSERT_KNOWN_LOCATION = """
INSERT INTO known_locations (number, location) VALUES (?, ?)
ON CONFLICT (number) DO UPDATE SET location = excluded.location
"""


class SqliteKnownLocations(SqliteConnection):
    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        lookup = self._lookup_forms(dict.fromkeys(numbers))
        rows = self._read_on_loop(lambda conn: _select_known_locations(conn, list(lookup)))
        return located(rows, lookup, self._cipher)

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        stored = self._cipher.blind(number), location_value(location, self._cipher)
        await self._run(lambda conn: _upsert_known_location(conn, *stored))


def _select_known_locations(
    conn: sqlite3.Connection, stored: Sequence[str]
) -> list[tuple[Any, ...]]:
    with transaction(conn, write=False):
        return list(rows_for_stored_forms(
            conn,
            "SELECT number, location FROM known_locations WHERE number IN ({keys})",
            stored,
        ))


def _upsert_known_location(conn: sqlite3.Connection, number: str, location: str) -> None:
    with transaction(conn, write=True):
        conn.execute(_UPSERT_KNOWN_LOCATION, (number, location))
