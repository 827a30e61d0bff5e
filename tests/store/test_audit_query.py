"""The audit log read a page at a time, its actions, and the chain's check, on both backends."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.model import AuditEvent
from gateway.store import open_store
from gateway.store.base import AuditChain, AuditProblem, AuditQuery, Store
from tests.store.test_store import T0, backend_url

ENTRIES = [
    ("Ada.Lovelace@acme.example", "suppression.add"),
    ("grace@acme.example", "suppression.remove"),
    ("ADA-bot", "consent.add"),
    ("olga", "suppression.import"),
    ("olga", "suppressionist.add"),  # not of the suppression. family
    ("50%_ada", "review.signin"),
]


@pytest.fixture(params=["sqlite", "postgres"])
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, str]]:
    url = backend_url(request, tmp_path)
    store = open_store(url)
    await store.open()
    yield store, url
    await store.close()


async def logged(store: Store) -> list[AuditEvent]:
    return [
        await store.append_audit(AuditEvent(T0 + timedelta(minutes=n), actor, action,
                                            details={"n": n}))
        for n, (actor, action) in enumerate(ENTRIES)
    ]


async def actors(store: Store, **query: object) -> list[str]:
    return [e.actor for e in await store.query_audit(AuditQuery(**query))]  # type: ignore[arg-type]


async def test_filters_select_by_actor_action_and_time(opened: tuple[Store, str]) -> None:
    store, _ = opened
    appended = await logged(store)

    assert await store.query_audit(AuditQuery()) == list(reversed(appended))
    assert await actors(store, actor="ADA") == ["50%_ada", "ADA-bot", "Ada.Lovelace@acme.example"]
    assert await actors(store, actor="%_") == ["50%_ada"], "wildcards are text"
    assert await actors(store, action="suppression.add") == ["Ada.Lovelace@acme.example"]
    assert await actors(store, action="suppression.") == [
        "olga", "grace@acme.example", "Ada.Lovelace@acme.example"]
    assert await actors(store, action="suppression") == []
    assert await actors(store, actor="olga", action="suppression.") == ["olga"]
    assert await actors(store, since=T0 + timedelta(minutes=2),
                        until=T0 + timedelta(minutes=4)) == ["olga", "ADA-bot"]


async def test_pages_follow_the_ids_down(opened: tuple[Store, str]) -> None:
    store, _ = opened
    appended = await logged(store)
    seen: list[int | None] = []
    before_id = None
    while page := await store.query_audit(AuditQuery(limit=4, before_id=before_id)):
        seen += [e.id for e in page]
        before_id = page[-1].id
    assert seen == [e.id for e in reversed(appended)]
    assert await store.query_audit(AuditQuery(action="suppression.", before_id=appended[1].id)
                                   ) == [appended[0]]


async def test_actions_are_listed_once_each_in_order(opened: tuple[Store, str]) -> None:
    store, _ = opened
    assert await store.audit_actions() == []
    await logged(store)
    await logged(store)
    assert await store.audit_actions() == sorted({action for _, action in ENTRIES})


async def test_the_check_counts_entries_and_names_the_chains_start(
    opened: tuple[Store, str]
) -> None:
    store, _ = opened
    assert await store.check_audit() == AuditChain(entries=0)
    appended = await logged(store)
    assert await store.check_audit() == AuditChain(entries=len(ENTRIES))

    await store.prune_audit(T0 + timedelta(minutes=2))

    chain = await store.check_audit()
    assert (chain.entries, chain.problem, chain.anchor_entry_id) == (
        len(ENTRIES) - 2, None, appended[1].id)
    assert chain.pruned_at is not None and chain.pruned_at.tzinfo is not None


async def test_the_check_names_a_tampered_entry(opened: tuple[Store, str]) -> None:
    store, url = opened
    appended = await logged(store)
    statement = f"UPDATE audit SET actor = 'mallory' WHERE id = {appended[3].id}"
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite://"))) as db, db:
            db.execute(statement)
    else:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    problem = AuditProblem(appended[3].id or 0, "content does not match its hash")
    assert await store.check_audit() == AuditChain(entries=3, problem=problem)
    assert await store.verify_audit() == problem
