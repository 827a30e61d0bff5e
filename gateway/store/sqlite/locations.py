"""Known callee locations in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from gateway.model import KnownLocation
from gateway.store.core import LOCATION_COLUMNS, location_values
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import rows_for_keys, transaction

_UPSERT_KNOWN_LOCATION = f"""
INSERT INTO known_locations (number, {LOCATION_COLUMNS})
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (number) DO UPDATE SET
    timezone = excluded.timezone,
    latitude = excluded.latitude,
    longitude = excluded.longitude,
    region = excluded.region,
    postal_code = excluded.postal_code
"""


class SqliteKnownLocations(SqliteConnection):
    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        unique = list(dict.fromkeys(numbers))
        return self._read_on_loop(lambda conn: _select_known_locations(conn, unique))

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        await self._run(lambda conn: _upsert_known_location(conn, number, location))


def _select_known_locations(
    conn: sqlite3.Connection, numbers: Sequence[str]
) -> dict[str, KnownLocation]:
    with transaction(conn, write=False):
        rows = rows_for_keys(
            conn,
            f"SELECT number, {LOCATION_COLUMNS} FROM known_locations WHERE number IN ({{keys}})",
            numbers,
        )
        return {number: KnownLocation(*location) for number, *location in rows}


def _upsert_known_location(conn: sqlite3.Connection, number: str, location: KnownLocation) -> None:
    with transaction(conn, write=True):
        conn.execute(_UPSERT_KNOWN_LOCATION, (number, *location_values(location)))
