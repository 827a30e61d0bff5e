"""The PostgreSQL store: shared state for several gateway replicas on one database.

Nothing is cached in memory: every decision reads the database, so an opt-out taken by one
replica is honored by every other on its next message (no LISTEN/NOTIFY needed), and a
consent recorded anywhere counts everywhere at once.

Correctness across processes comes from the database, never from this process:
- `reserve_contact` (contacts.py) counts and inserts under a transaction-scoped advisory
  lock on the recipient, so two replicas cannot both see room for the last contact;
- audit appends (and prunes, purges) serialize on one advisory lock inside the inserting
  transaction (audit.py), so the hash chain stays linear and id order is chain order;
- delivery claims are one INSERT ... ON CONFLICT (deliveries.py), so exactly one claimant
  wins;
- migrations run under a session advisory lock, so replicas starting together apply each
  migration once.

Writers run at READ COMMITTED: after a lock is granted, the next statement's snapshot sees
everything committed by the lock's previous holder. Every driver, network or server error
becomes `StoreUnavailable` (fail closed); the pool replaces broken connections, so the store
recovers by itself once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from gateway.store.base import StoreUnavailable
from gateway.store.core import Parameters, utc
from gateway.store.migrations import (
    VERSION_TABLE_DDL,
    Migration,
    discover_migrations,
    migration_directory,
    run_migrations_async,
)
from gateway.store.sealing import SealedColumns

# Advisory lock keys. The one-bigint and two-int key spaces never overlap; the class ids
# (first int) keep this application's locks apart from anything else on the database.
_MIGRATION_LOCK = 0x67_77_6D_69  # "gwmi"
AUDIT_LOCK_CLASS = 0x67_77_61_75  # "gwau"
CONTACT_LOCK_CLASS = 0x67_77_63_6F  # "gwco"
LOGIN_LOCK_CLASS = 0x67_77_6C_67  # "gwlg"

_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresConnection(SealedColumns):
    """The PostgreSQL store's connection pool: each module of the store (suppressions.py,
    blocks.py, ...) adds its methods to this, running its SQL on `_connection()` or
    `_transaction()`."""

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 10,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self.applied_migrations: list[Migration] = []

    async def open(self) -> None:
        """Connect and apply pending migrations: the migration run is the first query, so a
        wrong address, password or database name fails here, at start-up."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._pool is None:
            async with self._guarded():
                self._pool = await self._create_pool()
        self.applied_migrations = await self._migrate()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._connect_timeout_s)
            except (*_DATABASE_ERRORS, TimeoutError):
                self._pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def _create_pool(self) -> asyncpg.Pool:
        """No floor of idle connections: asyncpg would keep reconnecting in the background
        (and logging each failure) while the database is down; callers reconnect anyway."""
        return await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_connections,
            timeout=self._connect_timeout_s,
            command_timeout=self._command_timeout_s,
            server_settings={"application_name": "compliance-gateway", "jit": "off"},
        )

    async def _migrate(self) -> list[Migration]:
        """Under a session advisory lock, so replicas starting at once apply each
        migration exactly once (the others wait, then find nothing pending)."""
        migrations = discover_migrations(migration_directory("postgres"))
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                return await run_migrations_async(PostgresMigrationTarget(conn), migrations)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; any database failure inside becomes StoreUnavailable."""
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        pool = self._pool
        async with self._guarded():
            async with pool.acquire(timeout=self._command_timeout_s) as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, *, snapshot: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """Writers run at READ COMMITTED (see the module docstring); readers that need one
        consistent view of several queries get a read-only REPEATABLE READ snapshot."""
        async with self._connection() as conn:
            isolation = "repeatable_read" if snapshot else "read_committed"
            async with conn.transaction(isolation=isolation, readonly=snapshot):
                yield conn

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        try:
            yield
        except _DATABASE_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL at {self._where}: {_error_text(exc)}") from exc


class PostgresMigrationTarget:
    """Runs migrations on one connection; each migration is one transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def ensure_version_table(self) -> None:
        await self._connection.execute(VERSION_TABLE_DDL)

    async def applied_versions(self) -> set[int]:
        rows = await self._connection.fetch("SELECT version FROM schema_migrations")
        return {version for (version,) in rows}

    async def apply(self, migration: Migration) -> bool:
        conn = self._connection
        async with conn.transaction():
            if await conn.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            ):
                return False
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise StoreUnavailable(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC).isoformat(timespec="microseconds"),
            )
        return True


def describe_dsn(dsn: str) -> str:
    """user@host:port/database, for messages: never the password."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    user = unquote(parts.username or query.get("user", [""])[0])
    database = unquote(parts.path.lstrip("/")) or user
    return f"{user + '@' if user else ''}{host}:{port}/{database}"


def _error_text(exc: BaseException) -> str:
    """The server's or driver's own words; a socket error says the server is unreachable."""
    text = str(exc) or type(exc).__name__
    return f"server unreachable ({text})" if isinstance(exc, OSError) else text



def affected(status: str) -> int:
    """Rows a command touched, from its status tag ('DELETE 3', 'INSERT 0 2')."""
    return int(status.rsplit(" ", 1)[-1])


def read_time(value: datetime) -> datetime:
    """asyncpg reads timestamptz as an aware datetime already."""
    return value


class Numbered(Parameters):
    def placeholder(self, position: int) -> str:
        return f"${position}"

    def time(self, moment: datetime) -> str:
        return self.bind(utc(moment))

    def contains(self, column: str, text: str) -> str:
        return f"strpos({column}, {self.bind(text)}) > 0"

    def ascii_lower(self, column: str) -> str:
        """Under the C collation lower() folds A-Z only, whatever the database's own
        collation (a Unicode one would fold "Ü" too, which SQLite's lower() does not)."""
        return f'lower({column} COLLATE "C")'

    def bucket(self, bucket_s: int) -> str:
        """The start of the epoch-aligned bucket of `bucket_s` seconds a row's time falls
        in, as a timestamptz to group by. date_bin (PostgreSQL 14) is cheap per row;
        floor(extract(epoch ...)) was numeric arithmetic on every row, which cost a week of
        the decision log most of the 300 ms a console page may take."""
        return f"date_bin(make_interval(secs => {self.bind(bucket_s)}), time, 'epoch')"


async def fetch_page(
    conn: asyncpg.Connection,
    select: str,
    where: Callable[[Parameters], str],
    order: str,
    limit: int,
) -> list[asyncpg.Record]:
    """One page of a list paged by key: `where` writes the filter and the cursor's seek."""
    params = Numbered()
    return await conn.fetch(
        f"{select} {where(params)} ORDER BY {order} LIMIT {params.bind(limit)}", *params.values
    )
