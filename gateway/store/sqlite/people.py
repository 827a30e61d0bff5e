"""People who sign in, and their sessions, in SQLite."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime
from typing import Any

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
)
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, to_text, transaction


class SqlitePeople(SqliteConnection):
    async def save_person(self, row: PersonRow) -> None:
        await self._run(lambda conn: _save_person(conn, row))

    async def update_person(
        self, person_id: str, changes: PersonChanges, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        return await self._run(lambda conn: _update_person(conn, person_id, changes, at))

    async def set_person_active(
        self, person_id: str, active: bool, at: datetime
    ) -> tuple[PersonRow, PersonRow] | None:
        return await self._run(lambda conn: _set_person_active(conn, person_id, active, at))

    async def person(self, person_id: str) -> PersonRow | None:
        return self._read_on_loop(lambda conn: _one_person(conn, "person_id", person_id))

    async def person_by_user_name(self, user_name: str) -> PersonRow | None:
        return self._read_on_loop(lambda conn: _one_person(conn, "user_name", user_name))

    async def person_by_external_id(self, external_id: str) -> PersonRow | None:
        return self._read_on_loop(lambda conn: _one_person(conn, "external_id", external_id))

    async def people(
        self, start: int = 0, count: int = 100, user_name: str | None = None
    ) -> tuple[list[PersonRow], int]:
        return self._read_on_loop(lambda conn: _people(conn, start, count, user_name))

    async def delete_person(self, person_id: str) -> bool:
        return await self._run(lambda conn: _delete_person(conn, person_id))

    async def add_session(self, row: SessionRow) -> None:
        await self._run(lambda conn: _add_session(conn, row))

    async def session(self, session_hash: str, now: float) -> SessionRow | None:
        row = self._read_on_loop(lambda conn: _session(conn, session_hash))
        if row is not None and row.expires_at <= now:
            await self.end_sessions(session_hash=session_hash)
            return None
        return row

    async def touch_session(self, session_hash: str, at: float) -> None:
        await self._run(
            lambda conn: _touch(conn, session_hash, at), batchable=True, durable=False
        )

    async def end_sessions(
        self, *, session_hash: str | None = None, person_id: str | None = None,
        account: str | None = None,
    ) -> int:
        where = session_filter(session_hash, person_id, account)
        return await self._run(lambda conn: _end_sessions(conn, where))

    async def use_once(self, mark: str, now: float, expires_at: float) -> bool:
        return await self._run(lambda conn: _use_once(conn, mark, now, expires_at))

    async def take_once(self, mark: str, now: float) -> bool:
        return await self._run(lambda conn: _take_once(conn, mark, now))


def _check_unique(
    conn: sqlite3.Connection, person_id: str, values: list[tuple[str, object]]
) -> None:
    """Raises Conflict naming the first unique column whose value another person has."""
    for column, value in values:
        if column in UNIQUE_PERSON_COLUMNS and value is not None and conn.execute(
            f"SELECT 1 FROM people WHERE {column} = ? AND person_id != ?", (value, person_id)
        ).fetchone():
            raise Conflict(column)


def _save_person(conn: sqlite3.Connection, row: PersonRow) -> None:
    with transaction(conn, write=True):
        _check_unique(conn, row.person_id,
                      [("user_name", row.user_name), ("external_id", row.external_id)])
        conn.execute(
            f"INSERT OR REPLACE INTO people ({PERSON_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.person_id, row.user_name, to_text(row.created_at), to_text(row.updated_at),
                row.external_id, row.display_name, int(row.active), groups_text(row.groups),
                row.role, row.attributes,
            ),
        )


def _update_person(
    conn: sqlite3.Connection, person_id: str, changes: PersonChanges, at: datetime
) -> tuple[PersonRow, PersonRow] | None:
    with transaction(conn, write=True):
        before = _select_person(conn, "person_id", person_id)
        if before is None:
            return None
        after = changed_person(before, changes, at)
        if after is None:
            return before, before
        assignments = person_assignments(before, after)
        _check_unique(conn, person_id, assignments)
        conn.execute(
            f"UPDATE people SET {''.join(f'{column} = ?, ' for column, _ in assignments)}"
            "updated_at = ? WHERE person_id = ?",
            (*(value for _, value in assignments), to_text(at), person_id),
        )
    return after, before


def _set_person_active(
    conn: sqlite3.Connection, person_id: str, active: bool, at: datetime
) -> tuple[PersonRow, PersonRow] | None:
    with transaction(conn, write=True):
        before = _select_person(conn, "person_id", person_id)
        if before is None:
            return None
        if before.active == active:
            return before, before
        conn.execute(
            "UPDATE people SET active = ?, updated_at = ? WHERE person_id = ?",
            (int(active), to_text(at), person_id),
        )
    return dataclasses.replace(before, active=active, updated_at=at), before


def _person(values: tuple[Any, ...]) -> PersonRow:
    (
        person_id, user_name, created, updated, external_id, display_name, active, groups, role,
        attributes,
    ) = values
    return PersonRow(
        person_id, user_name, from_text(created), from_text(updated), external_id,
        display_name, bool(active), groups_from_text(groups), role, attributes,
    )


def _one_person(conn: sqlite3.Connection, column: str, value: str) -> PersonRow | None:
    with transaction(conn, write=False):
        return _select_person(conn, column, value)


def _select_person(conn: sqlite3.Connection, column: str, value: str) -> PersonRow | None:
    row = conn.execute(
        f"SELECT {PERSON_COLUMNS} FROM people WHERE {column} = ?", (value,)
    ).fetchone()
    return None if row is None else _person(row)


def _people(
    conn: sqlite3.Connection, start: int, count: int, user_name: str | None
) -> tuple[list[PersonRow], int]:
    where, values = ("WHERE user_name = ?", (user_name,)) if user_name is not None else ("", ())
    start, count = page_window(start, count)
    with transaction(conn, write=False):
        (total,) = conn.execute(f"SELECT COUNT(*) FROM people {where}", values).fetchone()
        rows = conn.execute(
            f"SELECT {PERSON_COLUMNS} FROM people {where} ORDER BY user_name LIMIT ? OFFSET ?",
            (*values, count, start),
        ).fetchall()
    return [_person(row) for row in rows], int(total)


def _delete_person(conn: sqlite3.Connection, person_id: str) -> bool:
    with transaction(conn, write=True):
        conn.execute("DELETE FROM sessions WHERE person_id = ?", (person_id,))
        conn.execute("DELETE FROM scim_group_members WHERE person_id = ?", (person_id,))
        cursor = conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
    return cursor.rowcount == 1


def _add_session(conn: sqlite3.Connection, row: SessionRow) -> None:
    with transaction(conn, write=True):
        conn.execute(
            f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.session_hash, row.method, row.role, row.created_at, row.last_seen_at,
                row.expires_at, row.person_id, row.account,
            ),
        )


def _session(conn: sqlite3.Connection, session_hash: str) -> SessionRow | None:
    with transaction(conn, write=False):
        row = conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_hash = ?", (session_hash,)
        ).fetchone()
    return None if row is None else SessionRow(*row)


def _touch(conn: sqlite3.Connection, session_hash: str, at: float) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "UPDATE sessions SET last_seen_at = ? WHERE session_hash = ?", (at, session_hash)
        )


def _end_sessions(conn: sqlite3.Connection, where: dict[str, str]) -> int:
    condition = " AND ".join(f"{column} = ?" for column in where)
    with transaction(conn, write=True):
        cursor = conn.execute(f"DELETE FROM sessions WHERE {condition}", tuple(where.values()))
    return cursor.rowcount


def _use_once(conn: sqlite3.Connection, mark: str, now: float, expires_at: float) -> bool:
    with transaction(conn, write=True):
        conn.execute("DELETE FROM used_once WHERE expires_at <= ?", (now,))
        cursor = conn.execute(
            "INSERT OR IGNORE INTO used_once (mark, expires_at) VALUES (?, ?)", (mark, expires_at)
        )
    return cursor.rowcount == 1


def _take_once(conn: sqlite3.Connection, mark: str, now: float) -> bool:
    with transaction(conn, write=True):
        cursor = conn.execute(
            "DELETE FROM used_once WHERE mark = ? AND expires_at > ?", (mark, now)
        )
    return cursor.rowcount == 1
