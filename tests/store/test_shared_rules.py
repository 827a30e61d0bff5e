"""Rules both backends share are written once (gateway/store/core.py, audit_chain.py,
erasure.py); these tests fail when a backend drifts from them or writes one again.

The erasure and purge table lists are checked against each backend's real schema (every
table must be classified, so a migration adding a table must say whether an erasure or a
purge clears it) and against what an erasure and a purge actually change there.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

import gateway.store
from gateway.model import Channel, KnownLocation
from gateway.store import open_store
from gateway.store.base import (
    ERASED_SOURCE,
    AgentKeyRow,
    GroupRow,
    PersonRow,
    SessionRow,
    Store,
)
from gateway.store.erasure import (
    ERASED_TABLES,
    NOT_ERASED,
    NOT_PURGED,
    PURGED_TABLES,
)
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.store.test_decisions import decision
from tests.store.test_store import T0, audit_event, backend_url, block, consent, suppression

ERASURE_KEY = b"erasure-key-for-tests-0123456789"
PERSON = "+14155550101"
SOMEONE_ELSE = "+14155550199"

Rows = dict[str, list[str]]


class Database:
    """The backend's own view of its tables, read beside the store."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def tables(self) -> set[str]:
        return set(await self._column("SELECT name FROM sqlite_master WHERE type = 'table'"
                                      " AND name NOT LIKE 'sqlite_%'",
                                      "SELECT table_name FROM information_schema.tables"
                                      " WHERE table_schema = current_schema()"))

    async def columns(self, table: str) -> set[str]:
        return set(await self._column(f"SELECT name FROM pragma_table_info('{table}')",
                                      "SELECT column_name FROM information_schema.columns"
                                      f" WHERE table_schema = current_schema()"
                                      f" AND table_name = '{table}'"))

    async def contents(self) -> Rows:
        """Every table's rows, order aside."""
        contents: Rows = {}
        for table in await self.tables():
            rows = await self._rows(f"SELECT * FROM {table}")
            contents[table] = sorted(repr(tuple(row)) for row in rows)
        return contents

    async def _column(self, sqlite_sql: str, postgres_sql: str) -> list[str]:
        sql = sqlite_sql if self._url.startswith("sqlite:") else postgres_sql
        return [row[0] for row in await self._rows(sql)]

    async def _rows(self, sql: str) -> list[tuple[object, ...]]:
        if self._url.startswith("sqlite:"):
            path = Path(self._url.removeprefix("sqlite://"))
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                return db.execute(sql).fetchall()
        conn = await asyncpg.connect(self._url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Database]]:
    url = backend_url(request, tmp_path)
    store = open_store(url)
    await store.open()
    yield store, Database(url)
    await store.close()


def changed(before: Rows, after: Rows) -> set[str]:
    return {table for table in before if before[table] != after[table]}


async def test_every_table_of_the_schema_is_classified_for_erasure_and_purge(
    opened: tuple[Store, Database],
) -> None:
    _, database = opened
    tables = await database.tables()

    assert set(ERASED_TABLES) | set(NOT_ERASED) == tables
    assert not set(ERASED_TABLES) & set(NOT_ERASED)
    assert set(PURGED_TABLES) | set(NOT_PURGED) == tables
    assert not set(PURGED_TABLES) & set(NOT_PURGED)
    for table, named in ERASED_TABLES.items():
        assert {*named.columns, *named.email_columns} <= await database.columns(table), table


async def person_in_every_table(store: Store, number: str) -> None:
    await store.add_suppressions([suppression(number)])
    await store.add_consents([consent(number)])
    await store.set_known_location(number, KnownLocation(region="US-CA"))
    await store.reserve_contact(number, Channel.SMS, T0, f"g-{number}", [])
    await store.mark_notice_sent(number, T0)
    await store.claim_delivery("m1", number, T0, 60)
    await store.record_block(block(number, channel=Channel.SMS))
    await store.record_decisions([decision(number, channel=Channel.SMS)])
    await store.record_inbound(f"SM-{number}", T0)
    # rows that name no recipient, which neither an erasure nor a purge may need
    await store.count_login_failure([f"prefix {number}"], T0.timestamp(), 60.0, 1, 60.0)
    await store.count_login_failure([f"account {number}"], T0.timestamp(), 60.0, 5, 60.0)
    await store.add_agent_key(AgentKeyRow(f"k{number[-6:]}", "acme", "digest", T0))
    await store.save_person(PersonRow(f"p{number}", f"{number[-4:]}@staff.example", T0, T0))
    await store.save_group(GroupRow(f"g{number}", f"staff {number}", T0, T0,
                                    members=(f"p{number}",)))
    await store.add_session(SessionRow(f"s{number}", "break-glass", "owner", 0.0, 0.0, 9e9,
                                       account="acme"))
    await store.use_once(f"saml:{number}", 0.0, 9e9)


async def test_an_erasure_changes_exactly_the_erased_tables(
    opened: tuple[Store, Database],
) -> None:
    store, database = opened
    await store.use_erasure_key(ERASURE_KEY)
    for number in (PERSON, SOMEONE_ELSE):
        await person_in_every_table(store, number)
    for n in range(3):
        await store.append_audit(audit_event(n))
    await store.prune_audit(T0 + timedelta(seconds=1))  # leaves an anchor
    before = await database.contents()
    assert all(before.values()), "every table holds a row"

    counts = await store.erase_personal_data(PERSON, T0, "ops@example.com")

    assert list(counts) == list(ERASED_TABLES)
    assert set(counts.values()) == {1}
    after = await database.contents()
    assert changed(before, after) == set(ERASED_TABLES)
    assert all(after[table] for table in ERASED_TABLES), "someone else's rows stay"


async def test_a_purge_empties_exactly_the_purged_tables(
    opened: tuple[Store, Database],
) -> None:
    store, database = opened
    await store.use_erasure_key(ERASURE_KEY)
    await person_in_every_table(store, PERSON)
    for n in range(3):
        await store.append_audit(audit_event(n))
    await store.prune_audit(T0 + timedelta(seconds=1))
    before = await database.contents()
    assert all(before.values()), "every table holds a row"

    await store.purge(audit_event(9))

    after = await database.contents()
    assert changed(before, after) == set(PURGED_TABLES)
    assert {t for t in PURGED_TABLES if after[t]} == {"suppressions", "audit"}
    assert {s.source for s in await store.list_suppressions()} == {ERASED_SOURCE}
    assert len(after["audit"]) == 1


# --- the backends' source -----------------------------------------------------------------

BACKENDS = [SqliteStore, PostgresStore]
BACKEND_SOURCES = sorted(
    path
    for package in ("sqlite", "postgres")
    for path in (Path(gateway.store.__file__).parent / package).glob("*.py")
)

# A backend needing one of these is computing a shared rule itself: the audit chain's hash
# (audit_chain.py), an erased alias or the erasure key's fingerprint (erasure.py), or a
# JSON column's encoding (core.py, audit_chain.py).
SHARED_MODULES = {"hashlib", "hmac", "json"}
SHARED_NAMES = {"entry_hash", "canonical_json", "GENESIS_HASH", "erased_address", "ERASED_PREFIX"}


def source_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def concern_methods() -> set[str]:
    return {
        name
        for protocol in Store.__mro__
        if protocol.__module__ == "gateway.store.base"
        for name, member in vars(protocol).items()
        if inspect.iscoroutinefunction(member)
    }


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda backend: backend.__name__)
def test_each_backend_implements_every_concern(backend: type) -> None:
    """The stores do not inherit `Store` (a missing method would fall back to a stub)."""
    assert len(concern_methods()) == 87
    for name in concern_methods():
        method = getattr(backend, name)
        assert inspect.iscoroutinefunction(method), name
        assert method.__module__ != "gateway.store.base", name


@pytest.mark.parametrize("path", BACKEND_SOURCES, ids=source_id)
def test_backends_compute_no_shared_rule_themselves(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {alias.name for alias in node.names}
    assert not imported & (SHARED_MODULES | SHARED_NAMES)


@pytest.mark.parametrize("path", BACKEND_SOURCES, ids=source_id)
def test_backends_list_no_tables_themselves(path: Path) -> None:
    """Which tables an erasure or a purge touches is erasure.py's list: a collection of
    table names in a backend is that list written again."""
    tables = {*ERASED_TABLES, *NOT_ERASED}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            named = {
                item.value
                for item in items
                if isinstance(item, ast.Constant) and item.value in tables
            }
            assert len(named) < 2, f"line {node.lineno} lists tables {sorted(named)}"
