"""Groups provisioned over SCIM, and their members, in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.store.base import Conflict, GroupRow
from gateway.store.core import GROUP_COLUMNS, group_key, page_window
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import from_text, rows_for_keys, to_text, transaction

# A member who is no person (deleted meanwhile) is not read back.
_MEMBERS = (
    "SELECT m.group_id, m.person_id FROM scim_group_members m"
    " JOIN people p ON p.person_id = m.person_id WHERE m.group_id IN ({keys})"
    " ORDER BY m.group_id, m.person_id"
)


class SqliteScimGroups(SqliteConnection):
    async def save_group(self, row: GroupRow) -> None:
        await self._run(lambda conn: _save_group(conn, row))

    async def group(self, group_id: str) -> GroupRow | None:
        found = self._read_on_loop(lambda conn: _select(conn, "WHERE group_id = ?", (group_id,)))
        return found[0] if found else None

    async def group_by_display_name(self, display_name: str) -> GroupRow | None:
        key = group_key(display_name)
        found = self._read_on_loop(lambda conn: _select(conn, "WHERE display_key = ?", (key,)))
        return found[0] if found else None

    async def groups(
        self, start: int = 0, count: int = 100, display_name: str | None = None
    ) -> tuple[list[GroupRow], int]:
        where, values = (
            ("WHERE display_key = ?", (group_key(display_name),))
            if display_name is not None else ("", ())
        )
        offset, limit = page_window(start, count)
        return self._read_on_loop(lambda conn: _page(conn, where, values, offset, limit))

    async def groups_of_person(self, person_id: str) -> list[GroupRow]:
        return self._read_on_loop(
            lambda conn: _select(
                conn,
                "WHERE group_id IN"
                " (SELECT group_id FROM scim_group_members WHERE person_id = ?)",
                (person_id,),
            )
        )

    async def delete_group(self, group_id: str) -> bool:
        return await self._run(lambda conn: _delete_group(conn, group_id))


def _save_group(conn: sqlite3.Connection, row: GroupRow) -> None:
    key = group_key(row.display_name)
    with transaction(conn, write=True):
        if conn.execute(
            "SELECT 1 FROM scim_groups WHERE display_key = ? AND group_id != ?",
            (key, row.group_id),
        ).fetchone():
            raise Conflict("display_name")
        conn.execute(
            f"INSERT OR REPLACE INTO scim_groups ({GROUP_COLUMNS}, display_key)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                row.group_id, row.display_name, to_text(row.created_at),
                to_text(row.updated_at), row.external_id, key,
            ),
        )
        conn.execute("DELETE FROM scim_group_members WHERE group_id = ?", (row.group_id,))
        conn.executemany(
            "INSERT INTO scim_group_members (group_id, person_id)"
            " SELECT ?, person_id FROM people WHERE person_id = ?",
            [(row.group_id, person_id) for person_id in dict.fromkeys(row.members)],
        )


def _select(conn: sqlite3.Connection, where: str, values: Sequence[object]) -> list[GroupRow]:
    with transaction(conn, write=False):
        rows = conn.execute(
            f"SELECT {GROUP_COLUMNS} FROM scim_groups {where} ORDER BY display_key", values
        ).fetchall()
        return _with_members(conn, rows)


def _page(
    conn: sqlite3.Connection, where: str, values: Sequence[object], start: int, count: int
) -> tuple[list[GroupRow], int]:
    with transaction(conn, write=False):
        (total,) = conn.execute(f"SELECT COUNT(*) FROM scim_groups {where}", values).fetchone()
        rows = conn.execute(
            f"SELECT {GROUP_COLUMNS} FROM scim_groups {where}"
            " ORDER BY display_key LIMIT ? OFFSET ?",
            (*values, count, start),
        ).fetchall()
        return _with_members(conn, rows), int(total)


def _with_members(conn: sqlite3.Connection, rows: list[Any]) -> list[GroupRow]:
    members: dict[str, list[str]] = {}
    for group_id, person_id in rows_for_keys(conn, _MEMBERS, [row[0] for row in rows]):
        members.setdefault(group_id, []).append(person_id)
    return [
        GroupRow(
            group_id, display_name, from_text(created), from_text(updated), external_id,
            tuple(members.get(group_id, ())),
        )
        for group_id, display_name, created, updated, external_id in rows
    ]


def _delete_group(conn: sqlite3.Connection, group_id: str) -> bool:
    with transaction(conn, write=True):
        conn.execute("DELETE FROM scim_group_members WHERE group_id = ?", (group_id,))
        cursor = conn.execute("DELETE FROM scim_groups WHERE group_id = ?", (group_id,))
    return cursor.rowcount == 1
