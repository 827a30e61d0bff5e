"""Known callee locations in PostgreSQL, by the blind index of the number (a row written
before encryption holds the number in clear and is found too; the indexed one wins)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.model import KnownLocation
from gateway.store.core import LOCATION_COLUMNS, located, location_values
from gateway.store.postgres.connection import PostgresConnection


class PostgresKnownLocations(PostgresConnection):
    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        lookup = self._lookup_forms(dict.fromkeys(numbers))
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT number, {LOCATION_COLUMNS}"
                " FROM known_locations WHERE number = ANY($1::text[])",
                list(lookup),
            )
        return located(rows, lookup, self._cipher)

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO known_locations (number, {LOCATION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (number) DO UPDATE SET timezone = excluded.timezone,"
                " latitude = excluded.latitude, longitude = excluded.longitude,"
                " region = excluded.region, postal_code = excluded.postal_code",
                self._cipher.blind(number),
                *location_values(location),
            )
