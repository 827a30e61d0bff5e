"""Running SQL on one sqlite3 connection: transactions, stored times, key lists longer than
one statement takes, placeholders, and migrations; used by every module of the SQLite store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.store.core import Parameters, utc
from gateway.store.migrations import VERSION_TABLE_DDL, Migration
from gateway.store.writer_lock import write_queue

# Stays under SQLITE_MAX_VARIABLE_NUMBER even on SQLite builds older than 3.32 (999).
_PARAMETERS_PER_QUERY = 900
UNION_ARMS = 8
"""Keys up to which `rows_for_stored_forms` asks one equality per key: a message's own
lookups (its recipient's blind index and clear form, its mailbox's, their erased aliases)."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Connection]:
    """Writers take the write lock up front (IMMEDIATE); readers get one snapshot. Inside a
    group commit's transaction, a savepoint stands for the transaction."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT work")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO work")
                conn.execute("RELEASE work")
            raise
        conn.execute("RELEASE work")
        return
    with write_queue(conn) if write else contextlib.nullcontext():
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            # A failed rollback leaves the connection suspect; the caller discards it anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def to_text(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, so text order is time order."""
    return utc(moment).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def rows_for_keys(
    conn: sqlite3.Connection,
    query: str,
    keys: Sequence[str],
    parameters: Sequence[object] = (),
) -> Iterator[tuple[Any, ...]]:
    """Rows of `query` for every key, `{keys}` in it standing for the IN list, in as many
    queries as the parameter limit needs; `parameters` bind before the keys. Callers read
    inside one transaction so that every chunk sees the same snapshot."""
    return _rows_in_chunks(conn, query, list(dict.fromkeys(keys)), parameters)


def _rows_in_chunks(
    conn: sqlite3.Connection, query: str, keys: list[str], parameters: Sequence[object]
) -> Iterator[tuple[Any, ...]]:
    """`rows_for_keys` of keys already distinct."""
    for start in range(0, len(keys), _PARAMETERS_PER_QUERY):
        chunk = keys[start : start + _PARAMETERS_PER_QUERY]
        placeholders = ", ".join("?" * len(chunk))
        yield from conn.execute(query.format(keys=placeholders), [*parameters, *chunk])


def rows_for_stored_forms(
    conn: sqlite3.Connection,
    query: str,
    keys: Sequence[str],
    parameters: Sequence[object] = (),
) -> Iterator[tuple[Any, ...]]:
    """`rows_for_keys` for a lookup by a few values' stored forms (two per value while
    encryption is on: `sealing.lookup_forms`). Up to UNION_ARMS keys are asked one equality
    each, the SELECTs joined by UNION ALL: SQLite answers an IN list of more than one value
    through a temporary index it builds for every statement, which costs a single-message
    lookup about as much as the indexed read itself. `query` must be one SELECT that does
    not order its rows; an aggregate without GROUP BY comes back once per key."""
    keys = list(dict.fromkeys(keys))
    if not 1 < len(keys) <= UNION_ARMS:
        return _rows_in_chunks(conn, query, keys, parameters)
    arm = query.format(keys="?")
    return conn.execute(
        " UNION ALL ".join([arm] * len(keys)),
        [value for key in keys for value in (*parameters, key)],
    )


def row_id(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:
        raise sqlite3.OperationalError("insert did not report a row id")
    return cursor.lastrowid


def escape_like(text: str) -> str:
    """Codes such as QUIET_HOURS contain `_`, which LIKE would treat as a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def select_page(
    conn: sqlite3.Connection,
    select: str,
    where: Callable[[Parameters], str],
    order: str,
    limit: int,
) -> list[Any]:
    """One page of a list paged by key: `where` writes the filter and the cursor's seek."""
    params = QMarks()
    return conn.execute(
        f"{select} {where(params)} ORDER BY {order} LIMIT {params.bind(limit)}", params.values
    ).fetchall()


class QMarks(Parameters):
    """Numbered (?NNN), so a condition may name one value twice."""

    def placeholder(self, position: int) -> str:
        return f"?{position}"

    def time(self, moment: datetime) -> str:
        return self.bind(to_text(moment))

    def contains(self, column: str, text: str) -> str:
        """LIKE, as this store has always matched (ASCII letters without case)."""
        return f"{column} LIKE {self.bind(f'%{escape_like(text)}%')} ESCAPE '\\'"


class SqliteMigrationTarget:
    """Runs migrations on one connection that is in autocommit mode (isolation_level=None)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def ensure_version_table(self) -> None:
        self._connection.execute(VERSION_TABLE_DDL)

    def applied_versions(self) -> set[int]:
        rows = self._connection.execute("SELECT version FROM schema_migrations")
        return {version for (version,) in rows}

    def apply(self, migration: Migration) -> bool:
        with transaction(self._connection, write=True) as conn:
            recorded = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if recorded:
                return False
            for statement in _split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, to_text(datetime.now(UTC))),
            )
        return True


def _split_statements(script: str) -> list[str]:
    """`executescript` would commit the migration's transaction, so statements run one by
    one; a statement ends with the line on which it is complete."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip():
        statements.append(pending)
    return statements
