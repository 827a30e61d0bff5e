"""Suppression entries found by their mailbox as well as their address, on both backends:
lookups, counts of new addresses, removal with its audit entry in the same transaction,
folding stored entries when the mailbox rules change, erasure and purge keeping the mailbox,
and the indexes that keep each of these from scanning the table."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from gateway.model import AuditEvent, Suppression
from gateway.store import open_store
from gateway.store.base import ERASED_SOURCE, Store, erased_address
from gateway.store.core import unfolded_query
from gateway.store.postgres import PostgresStore
from gateway.store.postgres.suppressions import SUPPRESSED_QUERY
from tests.store.test_store import T0, backend_url

ERASURE_KEY = b"erasure-key-for-tests-0123456789"
MAILBOX = "bobsmith@gmail.com"
DOTTED = "bob.smith@gmail.com"
TAGGED = "bob.smith+news@googlemail.com"
NUMBER = "+14155550101"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(backend_url(request, tmp_path))
    await opened.open()
    await opened.use_erasure_key(ERASURE_KEY)
    yield opened
    await opened.close()


def entry(address: str, mailbox: str = "", *, source: str = "one-click") -> Suppression:
    return Suppression(address, source, "asked", T0, "recipient", mailbox)


def fold(address: str) -> str:
    """A stand-in for the gateway's folding: Gmail's dots and tags, nothing else."""
    local, _, domain = address.partition("@")
    if domain in ("gmail.com", "googlemail.com"):
        return local.split("+")[0].replace(".", "") + "@gmail.com"
    if local == "refused":
        raise ValueError("not an address the folding takes")
    return address


async def test_a_key_is_suppressed_by_an_entry_address_or_mailbox(store: Store) -> None:
    await store.add_suppressions([entry(DOTTED, MAILBOX), entry(NUMBER)])
    assert await store.suppressed([MAILBOX, DOTTED, TAGGED, NUMBER]) == {MAILBOX, DOTTED, NUMBER}
    assert await store.suppressed(["b.obsmith@gmail.com"]) == frozenset(), "stores never fold"
    assert await store.suppressed([""]) == frozenset(), "'' is no mailbox, not every number"
    assert await store.remove_suppressions([""]) == 0
    assert await store.suppressed([NUMBER]) == {NUMBER}


async def test_another_spelling_of_a_suppressed_mailbox_is_not_new(store: Store) -> None:
    assert await store.add_suppressions([entry(DOTTED, MAILBOX)]) == 1
    assert await store.add_suppressions([entry(TAGGED, MAILBOX, source="api")]) == 0
    assert await store.add_suppressions([entry("ann@x.example", "ann@x.example")]) == 1
    entries = await store.list_suppressions()
    assert [(e.address, e.mailbox) for e in entries] == [
        ("ann@x.example", "ann@x.example"), (TAGGED, MAILBOX), (DOTTED, MAILBOX),
    ]


async def test_an_import_counts_new_addresses_by_mailbox(store: Store) -> None:
    await store.add_suppressions([entry(DOTTED, MAILBOX)])
    addresses = [TAGGED, "ann@x.example", NUMBER]
    new = await store.import_suppressions(
        addresses, source="import:list.csv", reason="list", actor="operator", time=T0,
        audit=lambda n: AuditEvent(T0, "operator", "suppression.import", details={"new": n}),
        mailboxes={TAGGED: MAILBOX, "ann@x.example": "ann@x.example"},
    )
    assert new == 2
    listed = {(e.address, e.mailbox) for e in await store.list_suppressions()}
    assert {(TAGGED, MAILBOX), ("ann@x.example", "ann@x.example"), (NUMBER, "")} <= listed


async def test_an_erased_mailbox_counts_as_present(store: Store) -> None:
    await store.add_suppressions([entry(DOTTED, MAILBOX)])
    await store.erase_personal_data(DOTTED, T0, "dpo", MAILBOX)
    assert await store.add_suppressions([entry(TAGGED, MAILBOX)]) == 0


async def test_removal_lifts_every_entry_of_the_mailbox_and_audits_them(store: Store) -> None:
    await store.add_suppressions([
        entry(DOTTED, MAILBOX), entry(TAGGED, MAILBOX, source="postmark:HardBounce"),
        entry(MAILBOX), entry("ann@x.example", "ann@x.example"), entry(NUMBER),
    ])
    audited: list[Sequence[Suppression]] = []

    def audit(removed: Sequence[Suppression]) -> AuditEvent:
        audited.append(removed)
        return AuditEvent(T0, "operator", "suppression.remove", subject=MAILBOX)

    assert await store.remove_suppressions([MAILBOX], audit) == 1
    assert [(e.address, e.source) for e in audited[0]] == [
        (TAGGED, "postmark:HardBounce"), (DOTTED, "one-click"), (MAILBOX, "one-click"),
    ]
    assert [e.action for e in await store.audit_events()] == ["suppression.remove"]
    assert await store.suppressed([MAILBOX, DOTTED, TAGGED]) == frozenset()
    assert await store.suppressed(["ann@x.example", NUMBER]) == {"ann@x.example", NUMBER}


async def test_a_failing_audit_keeps_every_entry(store: Store) -> None:
    await store.add_suppressions([entry(DOTTED, MAILBOX)])

    def broken(removed: Sequence[Suppression]) -> AuditEvent:
        raise RuntimeError("audit failed")

    with pytest.raises(RuntimeError):
        await store.remove_suppressions([MAILBOX], broken)
    assert await store.suppressed([MAILBOX]) == {MAILBOX}


async def test_folding_fills_the_mailboxes_then_follows_the_rules(store: Store) -> None:
    """Rows written before the column (mailbox '') are folded at the first update; later
    updates with the same rules only look at rows still without one; new rules refold all.
    Numbers and erased rows are left alone, and an address the folding refuses keeps
    itself."""
    erased = Suppression(erased_address(ERASURE_KEY, "old@x.example"), ERASED_SOURCE, "e", T0)
    await store.add_suppressions(
        [entry(DOTTED), entry(TAGGED), entry("refused@x.example"), entry(NUMBER), erased]
    )
    assert await store.update_mailboxes(fold, "rules-1") == 3
    mailboxes = {e.address: e.mailbox for e in await store.list_suppressions()}
    assert mailboxes == {
        DOTTED: MAILBOX, TAGGED: MAILBOX, "refused@x.example": "refused@x.example",
        NUMBER: "", erased.address: "",
    }
    assert await store.suppressed([MAILBOX]) == {MAILBOX}

    await store.add_suppressions([entry("carol+x@x.example"), entry("dan@x.example", "stale")])
    assert await store.update_mailboxes(fold, "rules-1") == 1, "only the unfolded row"
    mailboxes = {e.address: e.mailbox for e in await store.list_suppressions()}
    assert mailboxes["carol+x@x.example"] == "carol+x@x.example"
    assert mailboxes["dan@x.example"] == "stale"

    assert await store.update_mailboxes(str.upper, "rules-2") == 5
    mailboxes = {e.address: e.mailbox for e in await store.list_suppressions()}
    assert mailboxes[DOTTED] == DOTTED.upper() and mailboxes["dan@x.example"] == "DAN@X.EXAMPLE"
    assert mailboxes[NUMBER] == "" and mailboxes[erased.address] == ""
    assert await store.update_mailboxes(str.upper, "rules-2") == 0


async def test_erasure_replaces_every_spelling_and_keeps_the_mailbox_hashed(store: Store) -> None:
    await store.add_suppressions([
        entry(DOTTED, MAILBOX), entry(TAGGED, MAILBOX, source="api"), entry(NUMBER),
    ])
    data = await store.personal_data(DOTTED, MAILBOX)
    assert {e.address for e in data.suppressions} == {DOTTED, TAGGED}

    counts = await store.erase_personal_data(DOTTED, T0, "dpo", MAILBOX)

    assert counts["suppressions"] == 2
    (row,) = [e for e in await store.list_suppressions() if e.address != NUMBER]
    assert (row.address, row.mailbox, row.source) == (
        erased_address(ERASURE_KEY, DOTTED), erased_address(ERASURE_KEY, MAILBOX), ERASED_SOURCE
    )
    assert await store.suppressed([TAGGED, MAILBOX]) == {MAILBOX}
    assert await store.suppressed([DOTTED]) == {DOTTED}
    later = await store.personal_data("bobsmith+x@gmail.com", MAILBOX)
    assert later.suppressions == () and len(later.erased_suppressions) == 1


async def test_a_purge_keeps_every_mailbox_hashed(store: Store) -> None:
    await store.add_suppressions([entry(DOTTED, MAILBOX), entry(NUMBER)])
    await store.purge(AuditEvent(T0, "owner", "workspace.purge"))
    assert await store.suppressed([TAGGED, MAILBOX]) == {MAILBOX}
    assert await store.suppressed([NUMBER]) == {NUMBER}
    assert {e.source for e in await store.list_suppressions()} == {ERASED_SOURCE}


def test_sqlite_lookups_and_folding_use_their_indexes(tmp_path: Path) -> None:
    """The mailbox index leaves out '' (every number) and still serves the lookups; the
    rows to fold at start-up come from an index that holds only them."""
    path = tmp_path / "gateway.db"

    async def create() -> None:
        opened = open_store(f"sqlite:///{path}")
        await opened.open()
        await opened.close()

    asyncio.run(create())
    with contextlib.closing(sqlite3.connect(path)) as db:
        lookup = db.execute(
            "EXPLAIN QUERY PLAN SELECT DISTINCT mailbox FROM suppressions"
            " WHERE mailbox IN (?, ?) AND mailbox <> ''", ("a", "b"),
        ).fetchall()
        unfolded = db.execute(f"EXPLAIN QUERY PLAN {unfolded_query(False)}").fetchall()
    assert "suppressions_mailbox" in str(lookup)
    assert "suppressions_unfolded" in str(unfolded)


async def test_postgresql_mailbox_lookups_search_an_index(postgres_url: str) -> None:
    """With a large table of numbers (mailbox '') and of addresses, a lookup probes both the
    primary key and the mailbox index rather than scanning."""
    store = PostgresStore(postgres_url)
    await store.open()
    await store.add_suppressions(
        [entry(f"+1415555{i:04d}") for i in range(10_000)]
        + [entry(f"user{i}@x.com", f"user{i}@x.com") for i in range(10_000)]
    )
    await store.close()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("ANALYZE suppressions")
        plan = await connection.fetchval(
            f"EXPLAIN (FORMAT JSON) {SUPPRESSED_QUERY}", ["user7@x.com", "nobody@x.com"]
        )
        unfolded = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {unfolded_query(False)}")
    finally:
        await connection.close()
    assert "suppressions_pkey" in plan and "suppressions_mailbox" in plan
    assert '"Seq Scan"' not in plan
    assert "suppressions_unfolded" in unfolded
