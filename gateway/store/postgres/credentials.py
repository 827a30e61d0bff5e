"""Shared settings, sign-in failure counts and agent keys, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.store.base import AgentKeyRow
from gateway.store.core import AGENT_KEY_COLUMNS, utc
from gateway.store.postgres.connection import LOGIN_LOCK_CLASS, PostgresConnection, affected


class PostgresCredentials(PostgresConnection):
    async def claim_setting(self, name: str, value: str) -> str:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                name,
                value,
            )
            return str(await conn.fetchval("SELECT value FROM settings WHERE name = $1", name))

    async def settings_named(self, prefix: str) -> dict[str, str]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT name, value FROM settings WHERE starts_with(name, $1)", prefix
            )
        return {str(row["name"]): str(row["value"]) for row in rows}

    async def put_setting(self, name: str, value: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )

    async def drop_setting(self, name: str) -> None:
        async with self._connection() as conn:
            await conn.execute("DELETE FROM settings WHERE name = $1", name)

    async def login_locked_until(self, scopes: Sequence[str], now: float) -> float:
        async with self._connection() as conn:
            until = await conn.fetchval(
                "SELECT MAX(locked_until) FROM login_lockouts"
                " WHERE scope = ANY($1::text[]) AND locked_until > $2",
                list(scopes),
                now,
            )
        return float(until or 0.0)

    async def count_login_failure(
        self, scopes: Sequence[str], now: float, window_s: float, limit: int, lockout_s: float
    ) -> tuple[str, ...]:
        """Each scope's count is taken under a transaction-level advisory lock on the scope,
        so two replicas counting the last failure at once reach the limit exactly once;
        the lockout row's upsert decides which of them reports it."""
        locked: list[str] = []
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM login_failures WHERE failed_at <= $1", now - window_s)
            await conn.execute("DELETE FROM login_lockouts WHERE locked_until <= $1", now)
            for scope in sorted(scopes):
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", LOGIN_LOCK_CLASS, scope
                )
                await conn.execute(
                    "INSERT INTO login_failures (scope, failed_at) VALUES ($1, $2)", scope, now
                )
                count = await conn.fetchval(
                    "SELECT COUNT(*) FROM login_failures WHERE scope = $1", scope
                )
                if count < limit:
                    continue
                await conn.execute("DELETE FROM login_failures WHERE scope = $1", scope)
                status = await conn.execute(
                    "INSERT INTO login_lockouts (scope, locked_until) VALUES ($1, $2)"
                    " ON CONFLICT (scope) DO NOTHING",
                    scope,
                    now + lockout_s,
                )
                if affected(status) == 1:
                    locked.append(scope)
        return tuple(locked)

    async def add_agent_key(self, row: AgentKeyRow) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO agent_keys ({AGENT_KEY_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                row.key_id, row.account, row.digest, utc(row.created_at),
                _optional_utc(row.expires_at), _optional_utc(row.last_used_at),
                _optional_utc(row.revoked_at),
            )

    async def agent_key(self, key_id: str) -> AgentKeyRow | None:
        rows = await self._select_keys("WHERE key_id = $1", key_id)
        return rows[0] if rows else None

    async def agent_keys(self, account: str | None = None) -> list[AgentKeyRow]:
        if account:
            return await self._select_keys("WHERE account = $1", account)
        return await self._select_keys("")

    async def _select_keys(self, where: str, *values: Any) -> list[AgentKeyRow]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {AGENT_KEY_COLUMNS} FROM agent_keys {where}"
                " ORDER BY created_at, key_id",
                *values,
            )
        return [AgentKeyRow(*row) for row in rows]

    async def revoke_agent_key(self, key_id: str, at: datetime) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(
                "UPDATE agent_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL",
                utc(at),
                key_id,
            )
        return affected(status) == 1

    async def agent_key_used(self, key_id: str, at: datetime) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE agent_keys SET last_used_at = $1 WHERE key_id = $2", utc(at), key_id
            )


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)
