"""People who sign in, and their sessions, in PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import asyncpg

from gateway.store.base import Conflict, PersonChanges, PersonRow, SessionRow
from gateway.store.core import (
    PERSON_COLUMNS,
    SESSION_COLUMNS,
    UNIQUE_PERSON_COLUMNS,
    changed_person,
    groups_from_text,
    groups_text,
    page_window,
    person_assignments,
    session_filter,
    utc,
)
from gateway.store.postgres.connection import PostgresConnection, affected


class PostgresPeople(PostgresConnection):
    async def save_person(self, row: PersonRow) -> None:
        async with self._transaction() as conn:
            await _check_unique(conn, row.person_id,
                                [("user_name", row.user_name), ("external_id", row.external_id)])
            try:
                await conn.execute(
                    f"INSERT INTO people ({PERSON_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    " ON CONFLICT (person_id) DO UPDATE SET user_name = excluded.user_name,"
                    " updated_at = excluded.updated_at, external_id = excluded.external_id,"
                    " display_name = excluded.display_name, active = excluded.active,"
                    " groups = excluded.groups, role = excluded.role,"
                    " attributes = excluded.attributes",
                    row.person_id, row.user_name, utc(row.created_at), utc(row.updated_at),
                    row.external_id, row.display_name, row.active, groups_text(row.groups),
                    row.role, row.attributes,
                )
            except asyncpg.UniqueViolationError as exc:  # another writer got there meanwhile
                raise Conflict("user_name or external_id") from exc

    async def update_person(
        self, person_id: str, changes: PersonChanges, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        async with self._transaction() as conn:
            before = await _locked_person(conn, person_id)
            if before is None:
                return None
            after = changed_person(before, changes, at)
            if after is None:
                return before, before
            assignments = person_assignments(before, after)
            await _check_unique(conn, person_id, assignments)
            sets = "".join(f"{column} = ${n}, " for n, (column, _) in enumerate(assignments, 1))
            n = len(assignments)
            try:
                await conn.execute(
                    f"UPDATE people SET {sets}updated_at = ${n + 1} WHERE person_id = ${n + 2}",
                    *(value for _, value in assignments), utc(at), person_id,
                )
            except asyncpg.UniqueViolationError as exc:  # another writer got there meanwhile
                raise Conflict("user_name or external_id") from exc
        return after, before

    async def set_person_active(
        self, person_id: str, active: bool, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        async with self._transaction() as conn:
            before = await _locked_person(conn, person_id)
            if before is None:
                return None
            if before.active == active:
                return before, before
            await conn.execute(
                "UPDATE people SET active = $1, updated_at = $2 WHERE person_id = $3",
                active, utc(at), person_id,
            )
        return dataclasses.replace(before, active=active, updated_at=at), before

    async def person(self, person_id: str) -> PersonRow | None:
        return await self._one_person("person_id", person_id)

    async def person_by_user_name(self, user_name: str) -> PersonRow | None:
        return await self._one_person("user_name", user_name)

    async def person_by_external_id(self, external_id: str) -> PersonRow | None:
        return await self._one_person("external_id", external_id)

    async def _one_person(self, column: str, value: str) -> PersonRow | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {PERSON_COLUMNS} FROM people WHERE {column} = $1", value
            )
        return None if row is None else _person(row)

    async def people(
        self, start: int = 0, count: int = 100, user_name: str | None = None
    ) -> tuple[list[PersonRow], int]:
        where, values = ("WHERE user_name = $1", [user_name]) if user_name is not None else (
            "", []
        )
        page = f"LIMIT ${len(values) + 1} OFFSET ${len(values) + 2}"
        start, count = page_window(start, count)
        async with self._connection() as conn:
            total = await conn.fetchval(f"SELECT COUNT(*) FROM people {where}", *values)
            rows = await conn.fetch(
                f"SELECT {PERSON_COLUMNS} FROM people {where} ORDER BY user_name {page}",
                *values, count, start,
            )
        return [_person(row) for row in rows], int(total)

    async def delete_person(self, person_id: str) -> bool:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM sessions WHERE person_id = $1", person_id)
            await conn.execute(
                "DELETE FROM scim_group_members WHERE person_id = $1", person_id
            )
            status = await conn.execute("DELETE FROM people WHERE person_id = $1", person_id)
        return affected(status) == 1

    async def add_session(self, row: SessionRow) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO sessions ({SESSION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                row.session_hash, row.method, row.role, row.created_at, row.last_seen_at,
                row.expires_at, row.person_id, row.account,
            )

    async def session(self, session_hash: str, now: float) -> SessionRow | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_hash = $1", session_hash
            )
        if row is None:
            return None
        if row["expires_at"] <= now:
            await self.end_sessions(session_hash=session_hash)
            return None
        return SessionRow(*row)

    async def touch_session(self, session_hash: str, at: float) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE sessions SET last_seen_at = $1 WHERE session_hash = $2", at, session_hash
            )

    async def end_sessions(
        self, *, session_hash: str | None = None, person_id: str | None = None,
        account: str | None = None,
    ) -> int:
        where = session_filter(session_hash, person_id, account)
        condition = " AND ".join(f"{column} = ${n}" for n, column in enumerate(where, 1))
        async with self._connection() as conn:
            status = await conn.execute(
                f"DELETE FROM sessions WHERE {condition}", *where.values()
            )
        return affected(status)

    async def use_once(self, mark: str, now: float, expires_at: float) -> bool:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM used_once WHERE expires_at <= $1", now)
            status = await conn.execute(
                "INSERT INTO used_once (mark, expires_at) VALUES ($1, $2)"
                " ON CONFLICT (mark) DO NOTHING",
                mark, expires_at,
            )
        return affected(status) == 1

    async def take_once(self, mark: str, now: float) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                "DELETE FROM used_once WHERE mark = $1 AND expires_at > $2", mark, now
            )
        return affected(status) == 1


async def _locked_person(conn: asyncpg.Connection, person_id: str) -> PersonRow | None:
    """The person as stored, locked until the transaction ends (a concurrent writer of the
    same person waits, then reads what this one wrote)."""
    row = await conn.fetchrow(
        f"SELECT {PERSON_COLUMNS} FROM people WHERE person_id = $1 FOR UPDATE", person_id
    )
    return None if row is None else _person(row)


async def _check_unique(
    conn: asyncpg.Connection, person_id: str, values: list[tuple[str, object]]
) -> None:
    """Raises Conflict naming the first unique column whose value another person has."""
    for column, value in values:
        if column in UNIQUE_PERSON_COLUMNS and value is not None and await conn.fetchval(
            f"SELECT 1 FROM people WHERE {column} = $1 AND person_id != $2", value, person_id
        ):
            raise Conflict(column)


def _person(row: Any) -> PersonRow:
    return PersonRow(
        row["person_id"], row["user_name"], row["created_at"], row["updated_at"],
        row["external_id"], row["display_name"], bool(row["active"]),
        groups_from_text(row["groups"]), row["role"], row["attributes"],
    )
