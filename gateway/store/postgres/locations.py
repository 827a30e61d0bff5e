"""Known callee locations in PostgreSQL, by the blind index of the number (a row written
before encryption holds the number in clear and is found too; the indexed one wins)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.model import KnownLocation
from gateway.store.core import located, location_value
from gateway.store.postgres.connection import PostgresConnection


class PostgresKnownLocations(PostgresConnection):
    async def known_locations(self, numbers: Iterable[str]) -> dict[str, KnownLocation]:
        lookup = self._lookup_forms(dict.fromkeys(numbers))
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT number, location FROM known_locations WHERE number = ANY($1::text[])",
                list(lookup),
            )
        return located(rows, lookup, self._cipher)

    async def set_known_location(self, number: str, location: KnownLocation) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO known_locations (number, location) VALUES ($1, $2)"
                " ON CONFLICT (number) DO UPDATE SET location = excluded.location",
                self._cipher.blind(number),
                location_value(location, self._cipher),
            )
