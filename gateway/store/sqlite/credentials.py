"""Shared settings, sign-in failure counts and agent keys, in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from gateway.store.base import AgentKeyRow
from gateway.store.core import AGENT_KEY_COLUMNS
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.sql import escape_like, from_text, to_text, transaction


class SqliteCredentials(SqliteConnection):
    async def claim_setting(self, name: str, value: str) -> str:
        return await self._run(lambda conn: _claim_setting(conn, name, value))

    async def settings_named(self, prefix: str) -> dict[str, str]:
        return await self._run(lambda conn: _settings_named(conn, prefix))

    async def put_setting(self, name: str, value: str) -> None:
        await self._run(lambda conn: _put_setting(conn, name, value))

    async def drop_setting(self, name: str) -> None:
        await self._run(lambda conn: _drop_setting(conn, name))

    async def login_locked_until(self, scopes: Sequence[str], now: float) -> float:
        return self._read_on_loop(lambda conn: _locked_until(conn, scopes, now))

    async def count_login_failure(
        self, scopes: Sequence[str], now: float, window_s: float, limit: int, lockout_s: float
    ) -> tuple[str, ...]:
        return await self._run(
            lambda conn: _count_failure(conn, scopes, now, window_s, limit, lockout_s),
            batchable=True, durable=False,
        )

    async def add_agent_key(self, row: AgentKeyRow) -> None:
        await self._run(lambda conn: _add_key(conn, row))

    async def agent_key(self, key_id: str) -> AgentKeyRow | None:
        rows = self._read_on_loop(
            lambda conn: _select_keys(conn, "WHERE key_id = ?", (key_id,))
        )
        return rows[0] if rows else None

    async def agent_keys(self, account: str | None = None) -> list[AgentKeyRow]:
        where, values = ("WHERE account = ?", (account,)) if account else ("", ())
        return await self._run(lambda conn: _select_keys(conn, where, values))

    async def revoke_agent_key(self, key_id: str, at: datetime) -> bool:
        return await self._run(lambda conn: _revoke_key(conn, key_id, to_text(at)))

    async def agent_key_used(self, key_id: str, at: datetime) -> None:
        await self._run(
            lambda conn: _key_used(conn, key_id, to_text(at)), batchable=True, durable=False
        )


def _claim_setting(conn: sqlite3.Connection, name: str, value: str) -> str:
    with transaction(conn, write=True):
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, value),
        )
        (stored,) = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return str(stored)


def _put_setting(conn: sqlite3.Connection, name: str, value: str) -> None:
    with transaction(conn, write=True):
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


def _drop_setting(conn: sqlite3.Connection, name: str) -> None:
    with transaction(conn, write=True):
        conn.execute("DELETE FROM settings WHERE name = ?", (name,))


def _settings_named(conn: sqlite3.Connection, prefix: str) -> dict[str, str]:
    with transaction(conn, write=False):
        rows = conn.execute(
            "SELECT name, value FROM settings WHERE name LIKE ? ESCAPE '\\'",
            (escape_like(prefix) + "%",),
        ).fetchall()
    return {str(name): str(value) for name, value in rows}


def _locked_until(conn: sqlite3.Connection, scopes: Sequence[str], now: float) -> float:
    marks = ",".join("?" * len(scopes))
    with transaction(conn, write=False):
        (until,) = conn.execute(
            f"SELECT MAX(locked_until) FROM login_lockouts WHERE scope IN ({marks})"
            " AND locked_until > ?",
            (*scopes, now),
        ).fetchone()
    return float(until or 0.0)


def _count_failure(
    conn: sqlite3.Connection, scopes: Sequence[str], now: float, window_s: float, limit: int,
    lockout_s: float,
) -> tuple[str, ...]:
    """One IMMEDIATE transaction: of two processes counting the last failure at once, one
    sees the other's row, so the limit is reached exactly once."""
    since = now - window_s
    locked: list[str] = []
    with transaction(conn, write=True):
        conn.execute("DELETE FROM login_failures WHERE failed_at <= ?", (since,))
        conn.execute("DELETE FROM login_lockouts WHERE locked_until <= ?", (now,))
        for scope in scopes:
            conn.execute(
                "INSERT INTO login_failures (scope, failed_at) VALUES (?, ?)", (scope, now)
            )
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM login_failures WHERE scope = ?", (scope,)
            ).fetchone()
            if count < limit:
                continue
            conn.execute("DELETE FROM login_failures WHERE scope = ?", (scope,))
            cursor = conn.execute(
                "INSERT INTO login_lockouts (scope, locked_until) VALUES (?, ?)"
                " ON CONFLICT (scope) DO NOTHING",
                (scope, now + lockout_s),
            )
            if cursor.rowcount == 1:
                locked.append(scope)
    return tuple(locked)


def _add_key(conn: sqlite3.Connection, row: AgentKeyRow) -> None:
    with transaction(conn, write=True):
        conn.execute(
            f"INSERT INTO agent_keys ({AGENT_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.key_id, row.account, row.digest, to_text(row.created_at),
                _optional_text(row.expires_at), _optional_text(row.last_used_at),
                _optional_text(row.revoked_at),
            ),
        )


def _select_keys(
    conn: sqlite3.Connection, where: str, values: tuple[str, ...]
) -> list[AgentKeyRow]:
    with transaction(conn, write=False):
        rows = conn.execute(
            f"SELECT {AGENT_KEY_COLUMNS} FROM agent_keys {where} ORDER BY created_at, key_id",
            values,
        ).fetchall()
    return [
        AgentKeyRow(
            key_id, account, digest, from_text(created),
            _optional_time(expires), _optional_time(used), _optional_time(revoked),
        )
        for key_id, account, digest, created, expires, used, revoked in rows
    ]


def _revoke_key(conn: sqlite3.Connection, key_id: str, at: str) -> bool:
    with transaction(conn, write=True):
        cursor = conn.execute(
            "UPDATE agent_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            (at, key_id),
        )
    return cursor.rowcount == 1


def _key_used(conn: sqlite3.Connection, key_id: str, at: str) -> None:
    with transaction(conn, write=True):
        conn.execute("UPDATE agent_keys SET last_used_at = ? WHERE key_id = ?", (at, key_id))


def _optional_text(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)
