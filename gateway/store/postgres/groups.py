"""Groups provisioned over SCIM, and their members, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.store.base import Conflict, GroupRow
from gateway.store.core import GROUP_COLUMNS, group_key, page_window, utc
from gateway.store.postgres.connection import PostgresConnection, affected

# A member who is no person (deleted meanwhile) is not read back.
_MEMBERS = (
    "SELECT m.group_id, m.person_id FROM scim_group_members m"
    " JOIN people p ON p.person_id = m.person_id WHERE m.group_id = ANY($1::text[])"
    " ORDER BY m.group_id, m.person_id"
)


class PostgresScimGroups(PostgresConnection):
    async def save_group(self, row: GroupRow) -> None:
        key = group_key(row.display_name)
        async with self._transaction() as conn:
            if await conn.fetchval(
                "SELECT 1 FROM scim_groups WHERE display_key = $1 AND group_id != $2",
                key, row.group_id,
            ):
                raise Conflict("display_name")
            try:
                await conn.execute(
                    f"INSERT INTO scim_groups ({GROUP_COLUMNS}, display_key)"
                    " VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (group_id) DO UPDATE SET display_name = excluded.display_name,"
                    " display_key = excluded.display_key, updated_at = excluded.updated_at,"
                    " external_id = excluded.external_id",
                    row.group_id, row.display_name, utc(row.created_at), utc(row.updated_at),
                    row.external_id, key,
                )
            except asyncpg.UniqueViolationError as exc:  # another writer got there meanwhile
                raise Conflict("display_name") from exc
            await conn.execute("DELETE FROM scim_group_members WHERE group_id = $1", row.group_id)
            await conn.execute(
                "INSERT INTO scim_group_members (group_id, person_id)"
                " SELECT $1, person_id FROM people WHERE person_id = ANY($2::text[])",
                row.group_id, list(dict.fromkeys(row.members)),
            )

    async def group(self, group_id: str) -> GroupRow | None:
        found = await self._select("WHERE group_id = $1", [group_id])
        return found[0] if found else None

    async def group_by_display_name(self, display_name: str) -> GroupRow | None:
        found = await self._select("WHERE display_key = $1", [group_key(display_name)])
        return found[0] if found else None

    async def groups(
        self, start: int = 0, count: int = 100, display_name: str | None = None
    ) -> tuple[list[GroupRow], int]:
        where, values = (
            ("WHERE display_key = $1", [group_key(display_name)])
            if display_name is not None else ("", [])
        )
        page = f"LIMIT ${len(values) + 1} OFFSET ${len(values) + 2}"
        start, count = page_window(start, count)
        async with self._transaction(snapshot=True) as conn:
            total = await conn.fetchval(f"SELECT COUNT(*) FROM scim_groups {where}", *values)
            rows = await conn.fetch(
                f"SELECT {GROUP_COLUMNS} FROM scim_groups {where} ORDER BY display_key {page}",
                *values, count, start,
            )
            return await _with_members(conn, rows), int(total)

    async def groups_of_person(self, person_id: str) -> list[GroupRow]:
        return await self._select(
            "WHERE group_id IN (SELECT group_id FROM scim_group_members WHERE person_id = $1)",
            [person_id],
        )

    async def delete_group(self, group_id: str) -> bool:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM scim_group_members WHERE group_id = $1", group_id)
            status = await conn.execute("DELETE FROM scim_groups WHERE group_id = $1", group_id)
        return affected(status) == 1

    async def _select(self, where: str, values: Sequence[object]) -> list[GroupRow]:
        async with self._transaction(snapshot=True) as conn:
            rows = await conn.fetch(
                f"SELECT {GROUP_COLUMNS} FROM scim_groups {where} ORDER BY display_key", *values
            )
            return await _with_members(conn, rows)


async def _with_members(conn: asyncpg.Connection, rows: Sequence[Any]) -> list[GroupRow]:
    members: dict[str, list[str]] = {}
    if rows:
        for found in await conn.fetch(_MEMBERS, [row["group_id"] for row in rows]):
            members.setdefault(found["group_id"], []).append(found["person_id"])
    return [
        GroupRow(
            row["group_id"], row["display_name"], row["created_at"], row["updated_at"],
            row["external_id"], tuple(members.get(row["group_id"], ())),
        )
        for row in rows
    ]
