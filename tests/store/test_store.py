"""The store contract, run against every backend through the `Store` protocol only.

Tests at the end of the file are SQLite-specific: they tamper with the file directly, break
it underneath a running store, or share it between two store instances.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from gateway.cli import main
from gateway.model import (
    AuditEvent,
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    KnownLocation,
    Reason,
    Suppression,
)
from gateway.store import open_store
from gateway.store.audit_chain import GENESIS_HASH, entry_hash
from gateway.store.base import (
    ERASED_SOURCE,
    MAX_PAGE_START,
    AgentKeyRow,
    AuditProblem,
    BlockQuery,
    Conflict,
    DeliveryClaim,
    GroupRow,
    PersonChanges,
    PersonRow,
    SessionRow,
    Store,
    StoreUnavailable,
    erased_address,
)
from gateway.store.migrations import (
    Migration,
    discover_migrations,
    migration_directory,
    pending_migrations,
    run_migrations,
)
from gateway.store.postgres import PostgresStore
from gateway.store.postgres.suppressions import SUPPRESSED_QUERY
from gateway.store.sqlite import SqliteMigrationTarget, SqliteStore
from tests.conftest import start_postgres_server, write_config
from tests.postgres_server import PostgresServer, free_port

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def store_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/data/gateway.db"
    raise ValueError(backend)


def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of the backend `request.param` names."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return store_url(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every contract test runs on both backends, each on a database of its own."""
    opened = open_store(backend_url(request, tmp_path))
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database with connections of their own, as two replicas have."""
    url = backend_url(request, tmp_path)
    first, second = open_store(url), open_store(url)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def suppression(address: str, *, source: str = "import", at: datetime = T0) -> Suppression:
    return Suppression(address, source, f"reason for {address}", at, actor="ops@example.com")


def block(
    recipient: str,
    *,
    at: datetime = T0,
    codes: tuple[str, ...] = ("SUPPRESSED",),
    channel: Channel = Channel.EMAIL,
    account: str = "acme",
) -> BlockRecord:
    return BlockRecord(
        time=at,
        channel=channel,
        account=account,
        sender="agent@acme.example",
        recipient=recipient,
        reasons=tuple(Reason(code, f"{code} message", f"rule.{code.lower()}") for code in codes),
        rules_version="2024-05-01",
    )


def audit_event(n: int, **details: object) -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(seconds=n),
        actor=f"actor-{n}",
        action="suppression.add",
        subject=f"user{n}@example.com",
        details={"n": n, **details},
    )


# --- suppressions -------------------------------------------------------------------------


async def test_add_suppressions_counts_only_new_addresses(store: Store) -> None:
    """An address already suppressed from another source is not new; it gains a row for the
    new source and keeps the old one untouched."""
    assert await store.add_suppressions([suppression("a@x.com"), suppression("b@x.com")]) == 2

    later = T0 + timedelta(days=1)
    second_source = Suppression("b@x.com", "unsubscribe", "clicked link", later, actor="web")
    assert await store.add_suppressions([second_source, suppression("c@x.com")]) == 1

    assert await store.list_suppressions() == [
        suppression("a@x.com"),
        suppression("b@x.com"),
        second_source,
        suppression("c@x.com"),
    ]


async def test_re_adding_the_same_source_refreshes_its_row_only(store: Store) -> None:
    await store.add_suppressions(
        [suppression("a@x.com", source="import"), suppression("a@x.com", source="operator")]
    )
    later = T0 + timedelta(days=1)
    refreshed = Suppression("a@x.com", "import", "re-imported", later, actor="cron")

    assert await store.add_suppressions([refreshed]) == 0

    assert await store.list_suppressions() == [
        refreshed,
        suppression("a@x.com", source="operator"),
    ]


async def test_a_batch_repeating_an_address_counts_it_once(store: Store) -> None:
    later = T0 + timedelta(days=1)
    batch = [
        suppression("a@x.com", source="second"),
        suppression("a@x.com"),
        suppression("a@x.com", source="second", at=later),
        suppression("b@x.com"),
        suppression("b@x.com"),
    ]
    assert await store.add_suppressions(batch) == 2
    assert await store.list_suppressions() == [
        suppression("a@x.com"),
        suppression("a@x.com", source="second", at=later),
        suppression("b@x.com"),
    ]
    assert await store.add_suppressions(batch) == 0


async def test_suppressed_returns_only_the_present_subset(store: Store) -> None:
    await store.add_suppressions([suppression("a@x.com"), suppression("+14155550100")])
    found = await store.suppressed(["a@x.com", "A@x.com", "b@x.com", "+14155550100", "a@x.com"])
    assert found == frozenset({"a@x.com", "+14155550100"})


async def test_suppressed_looks_up_more_addresses_than_one_query_takes(store: Store) -> None:
    """More addresses than common SQLite builds take as parameters (999, 32766, 250000)."""
    present = [f"user{i}@x.com" for i in range(2500)]
    await store.add_suppressions([suppression(a) for a in present])
    absent = [f"other{i}@x.com" for i in range(250_000)]
    assert await store.suppressed(absent + present) == frozenset(present)


async def test_addresses_are_stored_exactly_as_given(store: Store) -> None:
    """Normalizing is the caller's job; the store must not second-guess a key."""
    await store.add_suppressions([suppression("Mixed@X.com")])
    assert [s.address for s in await store.list_suppressions()] == ["Mixed@X.com"]
    assert await store.suppressed(["mixed@x.com", "Mixed@X.com"]) == frozenset({"Mixed@X.com"})


async def test_remove_suppressions_returns_how_many_existed(store: Store) -> None:
    """Counts addresses, not rows: a@x.com has two sources and is one address."""
    await store.add_suppressions(
        [
            suppression("a@x.com"),
            suppression("a@x.com", source="operator"),
            suppression("b@x.com"),
        ]
    )
    assert await store.remove_suppressions(["a@x.com", "missing@x.com", "a@x.com"]) == 1
    assert await store.suppressed(["a@x.com", "b@x.com"]) == frozenset({"b@x.com"})
    assert [s.address for s in await store.list_suppressions()] == ["b@x.com"]


async def test_operator_removal_lifts_every_source(store: Store) -> None:
    number = "+14155550101"
    await store.add_suppressions(
        [
            suppression(number, source="national-dnc:dnc.txt"),
            suppression(number, source="sms-keyword"),
            suppression(number, source="operator"),
            suppression("+14155550102", source="sms-keyword"),
        ]
    )

    assert await store.remove_suppressions([number]) == 1

    assert await store.suppressed([number, "+14155550102"]) == frozenset({"+14155550102"})
    assert [(s.address, s.source) for s in await store.list_suppressions()] == [
        ("+14155550102", "sms-keyword")
    ]
    assert await store.remove_suppressions_from_source([number], "national-dnc:dnc.txt") == 0
    assert await store.remove_suppressions([number]) == 0


async def test_count_suppressed_counts_addresses_not_rows(store: Store) -> None:
    assert await store.count_suppressed() == 0
    await store.add_suppressions(
        [suppression("a@x.com"), suppression("a@x.com", source="operator"), suppression("b@x.com")]
    )
    assert await store.count_suppressed() == 2


async def test_empty_batches_change_nothing(store: Store) -> None:
    await store.add_suppressions([suppression("a@x.com")])
    assert await store.add_suppressions([]) == 0
    assert await store.remove_suppressions([]) == 0
    assert await store.suppressed([]) == frozenset()
    assert len(await store.list_suppressions()) == 1


async def test_suppression_times_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    local = datetime(2024, 5, 1, 14, 30, 0, 1, tzinfo=PLUS_TWO)
    await store.add_suppressions([suppression("a@x.com", at=local)])
    (stored,) = await store.list_suppressions()
    assert stored.time == local
    assert stored.time.utcoffset() == timedelta(0)


async def test_removing_from_a_source_leaves_other_sources(store: Store) -> None:
    """A START lifts the STOP it answers, never an operator's or a provider's entry."""
    await store.add_suppressions(
        [
            suppression("+14155550101", source="sms-stop"),
            suppression("+14155550102", source="operator"),
            suppression("+14155550103", source="sms-stop"),
        ]
    )
    everyone = ["+14155550101", "+14155550102", "+14155550103"]

    removed = await store.remove_suppressions_from_source(
        ["+14155550101", "+14155550102", "+14155550199", "+14155550101"], "sms-stop"
    )

    assert removed == 1
    assert await store.suppressed(everyone) == frozenset({"+14155550102", "+14155550103"})
    for near_miss in ("sms", "SMS-STOP", "sms-stop "):
        assert await store.remove_suppressions_from_source(["+14155550103"], near_miss) == 0
    assert await store.remove_suppressions_from_source([], "sms-stop") == 0
    assert await store.suppressed(everyone) == frozenset({"+14155550102", "+14155550103"})


async def test_a_start_does_not_lift_a_do_not_call_listing(store: Store) -> None:
    """A number on the national DNC list texts STOP, then START: the START lifts the STOP
    only, and the number stays suppressed by the DNC import."""
    number = "+14155550101"
    dnc = suppression(number, source="national-dnc:x")
    stop = Suppression(number, "sms-keyword", "replied 'STOP'", T0 + timedelta(days=1))
    assert await store.add_suppressions([dnc]) == 1
    assert await store.add_suppressions([stop]) == 0

    assert await store.remove_suppressions_from_source([number], "sms-keyword") == 1

    assert await store.suppressed([number]) == frozenset({number})
    assert await store.list_suppressions() == [dnc]
    assert await store.remove_suppressions_from_source([number], "sms-keyword") == 0
    assert await store.suppressed([number]) == frozenset({number})


async def test_removing_from_a_source_recorded_before_a_time(store: Store) -> None:
    """A START lifts only a STOP written before the time it names: a row written at that
    time or later stays, and other sources stay whatever their time."""
    older, at_cutoff, newer, other = (
        "+14155550101", "+14155550102", "+14155550103", "+14155550104"
    )
    cutoff = T0 + timedelta(seconds=30)
    await store.add_suppressions([
        suppression(older, source="sms-keyword", at=cutoff - timedelta(microseconds=1)),
        suppression(at_cutoff, source="sms-keyword", at=cutoff),
        suppression(newer, source="sms-keyword", at=cutoff + timedelta(seconds=1)),
        suppression(other, source="operator", at=T0),
    ])
    everyone = [older, at_cutoff, newer, other]

    removed = await store.remove_suppressions_from_source(
        everyone, "sms-keyword", recorded_before=cutoff.astimezone(PLUS_TWO)
    )

    assert removed == 1
    assert await store.suppressed(everyone) == frozenset({at_cutoff, newer, other})
    assert await store.remove_suppressions_from_source(
        [newer], "sms-keyword", recorded_before=None
    ) == 1


async def test_a_rewritten_row_is_judged_by_its_new_time(store: Store) -> None:
    """A STOP repeated after the cutoff refreshes the row's time, so it is not lifted."""
    number = "+14155550101"
    cutoff = T0 + timedelta(minutes=5)
    await store.add_suppressions([suppression(number, source="sms-keyword", at=T0)])
    await store.add_suppressions([suppression(number, source="sms-keyword", at=cutoff)])
    removed = await store.remove_suppressions_from_source(
        [number], "sms-keyword", recorded_before=cutoff
    )
    assert removed == 0
    assert await store.suppressed([number]) == {number}


# --- inbound messages ---------------------------------------------------------------------


async def test_an_inbound_message_id_is_recorded_once(store: Store) -> None:
    sid = "SM" + "a" * 32
    assert not await store.inbound_seen(sid)
    assert await store.record_inbound(sid, T0) is True
    assert await store.inbound_seen(sid)
    assert await store.record_inbound(sid, T0 + timedelta(seconds=5)) is False
    assert not await store.inbound_seen(sid.lower().replace("sm", "SM", 1)[:-1] + "b")
    assert not await store.inbound_seen(sid.lower())


async def test_two_stores_recording_one_inbound_id_have_one_winner(
    two_stores: tuple[Store, Store],
) -> None:
    """Two replicas given the same webhook at once: exactly one records it as new, and
    either then knows it."""
    sid = "SM" + "c" * 32
    results = await asyncio.gather(
        *(store.record_inbound(sid, T0) for _ in range(10) for store in two_stores)
    )
    assert results.count(True) == 1
    assert all([await store.inbound_seen(sid) for store in two_stores])


async def test_a_postmark_reactivation_does_not_lift_a_one_click_opt_out(store: Store) -> None:
    """A one-click opt-out later followed by a spam complaint and a bounce: Postmark's
    reactivation lifts both of its own entries and leaves the opt-out."""
    address = "a@x.com"
    one_click = suppression(address, source="one-click")
    await store.add_suppressions(
        [
            one_click,
            suppression(address, source="postmark:SpamComplaint", at=T0 + timedelta(days=1)),
            suppression(address, source="postmark:HardBounce", at=T0 + timedelta(days=2)),
            suppression("b@x.com", source="postmark:HardBounce"),
        ]
    )

    removed = await store.remove_suppressions_with_source_prefix(
        [address, "b@x.com", "missing@x.com", address], "postmark:"
    )

    assert removed == 3
    assert await store.suppressed([address, "b@x.com"]) == frozenset({address})
    assert await store.list_suppressions() == [one_click]
    assert await store.remove_suppressions_with_source_prefix([address], "postmark:") == 0
    assert await store.remove_suppressions_with_source_prefix([address], "one_click") == 0
    assert await store.list_suppressions() == [one_click]


async def test_remove_with_source_prefix_leaves_other_sources(store: Store) -> None:
    await store.add_suppressions(
        [
            Suppression("a@x.example.net", "postmark:HardBounce", "b", T0),
            Suppression("b@x.example.net", "one-click", "u", T0),
            Suppression("c@x.example.net", "postmark_x", "odd", T0),
        ]
    )
    removed = await store.remove_suppressions_with_source_prefix(
        ["a@x.example.net", "b@x.example.net", "c@x.example.net"], "postmark:"
    )
    assert removed == 1
    assert await store.suppressed(["a@x.example.net", "b@x.example.net", "c@x.example.net"]) == {
        "b@x.example.net",
        "c@x.example.net",
    }


async def test_a_large_import_counts_only_new_addresses(store: Store) -> None:
    """Speed is measured under bench/, not asserted here (shared machines are noisy)."""
    entries = [suppression(f"user{i}@x.com") for i in range(100_000)]
    assert await store.add_suppressions(entries) == 100_000
    assert await store.add_suppressions(entries[:10]) == 0
    assert await store.suppressed(["user99999@x.com", "nobody@x.com"]) == {"user99999@x.com"}

    second_list = [replace(e, source="national-dnc:second.txt") for e in entries]
    fresh = [suppression(f"new{i}@x.com") for i in range(5)]
    assert await store.add_suppressions(second_list + fresh + fresh) == 5
    listed = await store.list_suppressions()
    assert len(listed) == 200_005
    assert {(s.address, s.source) for s in listed} == {
        (s.address, s.source) for s in entries + second_list + fresh
    }


def import_audit(new: int) -> AuditEvent:
    return AuditEvent(time=T0, actor="operator", action="suppression.import",
                      subject="national-dnc:dnc.txt", details={"new": new})


async def import_numbers(store: Store, addresses: list[str], **options: object) -> int:
    arguments: dict = {"source": "national-dnc:dnc.txt", "reason": "do-not-call list",
                       "actor": "operator", "time": T0, "audit": import_audit, **options}
    return await store.import_suppressions(addresses, **arguments)


async def test_an_import_counts_new_addresses_and_leaves_one_audit_entry(store: Store) -> None:
    await store.add_suppressions([suppression("+12125550100", source="sms-stop")])
    await store.use_erasure_key(b"e" * 32)
    await store.add_suppressions([suppression("+12125550101")])
    await store.erase_personal_data("+12125550101", T0, "operator")
    addresses = [f"+1212555{n:04d}" for n in range(100, 120_100)]
    written: list[int] = []
    new = await import_numbers(store, [*addresses, addresses[5]], progress=written.append)
    assert new == len(addresses) - 2  # one present from another source, one only erased
    assert written[-1] == len(addresses) + 1
    assert written == sorted(written)
    assert await store.suppressed(["+12125550100", "+12125550101", addresses[-1]]) == {
        "+12125550100", "+12125550101", addresses[-1],
    }
    imported = [e for e in await store.audit_events() if e.action == "suppression.import"]
    assert [e.details for e in imported] == [{"new": new}]
    assert await store.verify_audit() is None
    assert await import_numbers(store, addresses) == 0
    listed = [s for s in await store.list_suppressions() if s.source == "national-dnc:dnc.txt"]
    assert len(listed) == len(addresses)
    assert {(s.reason, s.actor, s.time) for s in listed} == {("do-not-call list", "operator", T0)}


async def test_an_import_that_fails_at_its_end_applies_nothing(store: Store) -> None:
    """The audit entry is the last write of the import's transaction: when it cannot be
    built, every chunk written before it is rolled back."""

    def broken_audit(new: int) -> AuditEvent:
        raise StoreUnavailable("audit log unavailable")

    addresses = [f"+1212555{n:04d}" for n in range(100, 120_100)]
    with pytest.raises(StoreUnavailable):
        await import_numbers(store, addresses, audit=broken_audit)
    assert await store.suppressed([addresses[0], addresses[-1]]) == frozenset()
    assert await store.list_suppressions() == []
    assert await store.audit_events() == []


# --- shared settings, sign-in counts, agent keys ------------------------------------------

NOW_S = T0.timestamp()


async def test_the_first_claim_of_a_setting_wins_and_prefixes_match_literally(
    store: Store,
) -> None:
    assert await store.claim_setting("key:a_b", "first") == "first"
    assert await store.claim_setting("key:a_b", "second") == "first"
    await store.claim_setting("key:aXb", "other")
    await store.claim_setting("key:a_b:legacy", "kept")
    assert await store.settings_named("key:a_b") == {"key:a_b": "first", "key:a_b:legacy": "kept"}
    assert await store.settings_named("nothing:") == {}


async def test_a_put_setting_replaces_and_a_dropped_one_is_gone(store: Store) -> None:
    await store.put_setting("beat:a", "1")
    await store.put_setting("beat:a", "2")
    await store.put_setting("beat:b", "1")
    assert await store.settings_named("beat:") == {"beat:a": "2", "beat:b": "1"}
    await store.drop_setting("beat:a")
    await store.drop_setting("beat:never")
    assert await store.settings_named("beat:") == {"beat:b": "1"}
    assert await store.claim_setting("beat:a", "3") == "3"


async def test_the_limit_th_failure_in_the_window_locks_once(store: Store) -> None:
    scopes = ["prefix 192.0.2.0/24", "account demo"]
    for n in range(2):
        assert await store.count_login_failure(scopes, NOW_S + n, 60.0, 3, 300.0) == ()
    assert await store.login_locked_until(scopes, NOW_S + 2) == 0.0
    locked = await store.count_login_failure(scopes, NOW_S + 2, 60.0, 3, 300.0)
    assert sorted(locked) == sorted(scopes)
    assert await store.login_locked_until(["account demo"], NOW_S + 3) == NOW_S + 302
    assert await store.login_locked_until(["account other"], NOW_S + 3) == 0.0
    # a failure during the lockout counts afresh but does not lock (or report) it again
    assert await store.count_login_failure(scopes, NOW_S + 4, 60.0, 1, 300.0) == ()
    assert await store.login_locked_until(scopes, NOW_S + 302) == 0.0


async def test_failures_older_than_the_window_do_not_count(store: Store) -> None:
    for n in range(5):
        locked = await store.count_login_failure(["keys 10.0.0.0/24"], NOW_S + 40 * n, 60.0, 3, 9.0)
        assert locked == ()


async def test_replicas_counting_at_once_lock_a_scope_exactly_once(
    two_stores: tuple[Store, Store],
) -> None:
    """Ten failures at once on two replicas with a limit of four: each failure is counted,
    so two lockouts would need eight before the first; only one is reported."""
    results = await asyncio.gather(*(
        store.count_login_failure(["prefix 198.51.100.0/24"], NOW_S, 60.0, 4, 300.0)
        for _ in range(5) for store in two_stores
    ))
    assert [scope for locked in results for scope in locked] == ["prefix 198.51.100.0/24"]
    for store in two_stores:
        assert await store.login_locked_until(["prefix 198.51.100.0/24"], NOW_S) == NOW_S + 300


async def test_agent_keys_are_listed_revoked_once_and_marked_used(store: Store) -> None:
    later = T0 + timedelta(days=1)
    await store.add_agent_key(AgentKeyRow("00aa", "katie", "d1", T0, expires_at=later))
    await store.add_agent_key(AgentKeyRow("00bb", "katie", "d2", later))
    await store.add_agent_key(AgentKeyRow("00cc", "omar", "d3", T0 + timedelta(hours=1)))
    assert [row.key_id for row in await store.agent_keys()] == ["00aa", "00cc", "00bb"]
    assert [row.key_id for row in await store.agent_keys("katie")] == ["00aa", "00bb"]
    assert await store.agent_key("00aa") == AgentKeyRow("00aa", "katie", "d1", T0, later)
    assert await store.agent_key("nope") is None
    await store.agent_key_used("00bb", later)
    assert (await store.agent_key("00bb")).last_used_at == later
    assert await store.revoke_agent_key("00cc", later) is True
    assert await store.revoke_agent_key("00cc", later) is False
    assert await store.revoke_agent_key("nope", later) is False
    assert (await store.agent_key("00cc")).revoked_at == later


# --- people and sessions ------------------------------------------------------------------


def person(person_id: str, user_name: str, **changes: object) -> PersonRow:
    return replace(PersonRow(person_id, user_name, T0, T0), **changes)


async def test_people_are_found_by_id_user_name_and_external_id(store: Store) -> None:
    katie = person("p1", "katie@acme.example", external_id="okta|1", display_name="Katie",
                   groups=("sales", "compliance-managers"), role="manager")
    await store.save_person(katie)
    await store.save_person(person("p2", "omar@acme.example"))
    assert await store.person("p1") == katie
    assert await store.person_by_user_name("katie@acme.example") == katie
    assert await store.person_by_external_id("okta|1") == katie
    assert await store.person_by_external_id("okta|2") is None
    later = replace(katie, active=False, role=None, updated_at=T0 + timedelta(days=1))
    await store.save_person(later)
    assert await store.person("p1") == later


@pytest.mark.parametrize(("field", "value"), [("user_name", "omar@acme.example"),
                                              ("external_id", "okta|2")])
async def test_two_people_never_share_a_user_name_or_external_id(
    store: Store, field: str, value: str
) -> None:
    await store.save_person(person("p2", "omar@acme.example", external_id="okta|2"))
    with pytest.raises(Conflict, match=field):
        await store.save_person(replace(person("p1", "katie@acme.example"), **{field: value}))
    assert await store.person("p1") is None


async def test_people_come_in_pages_by_user_name(store: Store) -> None:
    for n in range(5):
        await store.save_person(person(f"p{n}", f"user{4 - n}@acme.example"))
    page, total = await store.people(start=1, count=2)
    assert [p.user_name for p in page] == ["user1@acme.example", "user2@acme.example"]
    assert total == 5
    page, total = await store.people(user_name="user3@acme.example")
    assert [p.person_id for p in page] == ["p1"] and total == 1


async def test_a_person_keeps_the_scim_attributes_as_given(store: Store) -> None:
    katie = person("p1", "katie@acme.example",
                   attributes='{"name": {"givenName": "Katie"}, "userName": "Katie@Acme.example"}')
    await store.save_person(katie)
    assert await store.person("p1") == katie
    await store.save_person(person("p2", "omar@acme.example"))
    assert (await store.person("p2")).attributes == "{}"


async def test_an_update_writes_only_the_columns_it_is_given(store: Store) -> None:
    katie = person("p1", "katie@acme.example", external_id="okta|1", display_name="Katie",
                   active=False, groups=("sales",), role=None, attributes='{"a": 1}')
    await store.save_person(katie)
    later = T0 + timedelta(hours=1)

    after, before = await store.update_person(
        "p1", PersonChanges(groups=("gateway-admins",), role="admin"), later)

    assert before == katie
    assert after == replace(katie, groups=("gateway-admins",), role="admin", updated_at=later)
    assert await store.person("p1") == after
    after, _ = await store.update_person(
        "p1", PersonChanges(user_name="katie.lee@acme.example", external_id=None,
                            display_name="Katie Lee", attributes="{}"), later)
    assert after == replace(katie, user_name="katie.lee@acme.example", external_id=None,
                            display_name="Katie Lee", attributes="{}", groups=("gateway-admins",),
                            role="admin", updated_at=later)
    assert await store.person("p1") == after  # active as it was: no update writes it
    assert await store.update_person("nobody", PersonChanges(role="admin"), later) is None


async def test_an_update_that_changes_nothing_writes_nothing(store: Store) -> None:
    katie = person("p1", "katie@acme.example", role="manager")
    await store.save_person(katie)
    same = await store.update_person("p1", PersonChanges(role="manager"), T0 + timedelta(days=1))
    assert same == (katie, katie)
    assert await store.person("p1") == katie  # updated_at unchanged


async def test_active_is_set_on_its_own(store: Store) -> None:
    katie = person("p1", "katie@acme.example", display_name="Katie", groups=("sales",))
    await store.save_person(katie)
    later = T0 + timedelta(hours=1)
    after, before = await store.set_person_active("p1", False, later)
    assert (before, after) == (katie, replace(katie, active=False, updated_at=later))
    assert await store.person("p1") == after
    assert await store.set_person_active("p1", False, T0 + timedelta(days=1)) == (after, after)
    assert await store.set_person_active("nobody", False, later) is None


async def test_a_writer_working_from_a_stale_read_never_undoes_a_deactivation(
    store: Store,
) -> None:
    """The lost update a whole-row write made: a writer read the person (active), another
    deactivated them, then the first wrote what it owns, and the row it read with it."""
    await store.save_person(person("p1", "katie@acme.example"))
    stale = await store.person("p1")
    assert stale is not None and stale.active
    await store.set_person_active("p1", False, T0 + timedelta(minutes=1))

    for changes in (PersonChanges(groups=("gateway-admins",), role="admin"),
                    PersonChanges(user_name=stale.user_name, display_name="Katie")):
        after, before = await store.update_person("p1", changes, T0 + timedelta(minutes=2))
        assert not before.active and not after.active
    assert not (await store.person("p1")).active


@pytest.mark.parametrize(("field", "value"), [("user_name", "omar@acme.example"),
                                              ("external_id", "okta|2")])
async def test_an_update_never_gives_two_people_one_user_name_or_external_id(
    store: Store, field: str, value: str
) -> None:
    await store.save_person(person("p2", "omar@acme.example", external_id="okta|2"))
    katie = person("p1", "katie@acme.example")
    await store.save_person(katie)
    with pytest.raises(Conflict, match=field):
        await store.update_person("p1", PersonChanges(**{field: value}), T0)
    assert await store.person("p1") == katie


@pytest.mark.parametrize("start", [2**63 - 1, 2**63, 2**64, MAX_PAGE_START + 1, -5])
async def test_any_page_start_and_count_are_answered(store: Store, start: int) -> None:
    await store.save_person(person("p1", "katie@acme.example"))
    await store.save_group(group("g1", "sales", "p1"))
    for count in (2**64, 2**63, -1):
        shown = start <= 0 and count > 0  # a start before the first is the first
        people, total = await store.people(start, count)
        assert total == 1 and [p.person_id for p in people] == (["p1"] if shown else [])
        groups, total = await store.groups(start, count)
        assert total == 1 and [g.group_id for g in groups] == (["g1"] if shown else [])


def group(group_id: str, display_name: str, *members: str, **changes: object) -> GroupRow:
    return replace(GroupRow(group_id, display_name, T0, T0, members=members), **changes)


async def test_groups_keep_their_members_and_are_found_by_display_name_without_case(
    store: Store,
) -> None:
    for n in (1, 2, 3):
        await store.save_person(person(f"p{n}", f"user{n}@acme.example"))
    managers = group("g1", "Compliance-Managers", "p2", "p1", "p2", external_id="okta|g1")
    await store.save_group(managers)
    await store.save_group(group("g2", "sales", "p1"))

    assert await store.group("g1") == replace(managers, members=("p1", "p2"))
    assert await store.group("nope") is None
    assert (await store.group_by_display_name("compliance-MANAGERS")).group_id == "g1"
    assert await store.group_by_display_name("compliance") is None
    assert [g.group_id for g in await store.groups_of_person("p1")] == ["g1", "g2"]
    assert await store.groups_of_person("p3") == []

    renamed = group("g1", "Auditors", "p3", updated_at=T0 + timedelta(hours=1))
    await store.save_group(renamed)
    assert await store.group("g1") == renamed
    assert await store.group_by_display_name("compliance-managers") is None
    assert [g.group_id for g in await store.groups_of_person("p1")] == ["g2"]


async def test_two_groups_never_share_a_display_name_whatever_its_case(store: Store) -> None:
    await store.save_group(group("g1", "Sales"))
    with pytest.raises(Conflict, match="display_name"):
        await store.save_group(group("g2", "SALES"))
    assert await store.group("g2") is None
    await store.save_group(group("g1", "SALES"))  # the group itself may change its case
    assert (await store.group("g1")).display_name == "SALES"


async def test_groups_come_in_pages_by_display_name(store: Store) -> None:
    for n in range(5):
        await store.save_group(group(f"g{n}", f"Team {4 - n}"))
    page, total = await store.groups(start=1, count=2)
    assert [g.display_name for g in page] == ["Team 1", "Team 2"] and total == 5
    page, total = await store.groups(start=0, count=0)
    assert page == [] and total == 5
    page, total = await store.groups(display_name="team 3")
    assert [g.group_id for g in page] == ["g1"] and total == 1


async def test_a_member_who_is_no_person_is_not_kept_and_a_deleted_one_leaves(
    store: Store,
) -> None:
    await store.save_person(person("p1", "katie@acme.example"))
    await store.save_person(person("p2", "omar@acme.example"))
    await store.save_group(group("g1", "sales", "p1", "p2", "ghost"))
    assert (await store.group("g1")).members == ("p1", "p2")
    assert await store.delete_person("p2") is True
    assert (await store.group("g1")).members == ("p1",)
    await store.save_person(person("p2", "omar@acme.example"))  # the id again: no membership
    assert (await store.group("g1")).members == ("p1",)
    assert await store.delete_group("g1") is True
    assert await store.delete_group("g1") is False
    assert await store.groups_of_person("p1") == []


def session_row(token_hash: str, **changes: object) -> SessionRow:
    now = T0.timestamp()
    return replace(SessionRow(token_hash, "oidc:okta", "manager", now, now, now + 3600,
                              person_id="p1"), **changes)


async def test_sessions_end_by_token_person_or_account_and_when_they_expire(
    store: Store,
) -> None:
    now = T0.timestamp()
    await store.save_person(person("p1", "katie@acme.example"))
    for row in (session_row("h1"), session_row("h2"),
                session_row("h3", person_id=None, account="boss", method="break-glass"),
                session_row("h4", expires_at=now + 10)):
        await store.add_session(row)
    assert await store.session("h1", now) == session_row("h1")
    await store.touch_session("h1", now + 60)
    assert (await store.session("h1", now + 61)).last_seen_at == now + 60
    assert await store.session("h4", now + 10) is None  # expired: gone
    assert await store.end_sessions(session_hash="h2") == 1
    assert await store.end_sessions(account="boss") == 1
    assert await store.delete_person("p1") is True
    assert await store.session("h1", now) is None
    assert await store.delete_person("p1") is False
    with pytest.raises(ValueError):
        await store.end_sessions()


async def test_a_mark_is_used_once_until_it_expires(store: Store) -> None:
    now = T0.timestamp()
    assert await store.use_once("saml:_a1", now, now + 300) is True
    assert await store.use_once("saml:_a1", now + 299, now + 600) is False  # a replay
    assert await store.use_once("saml:_a2", now, now + 300) is True
    # expired marks are forgotten by the next use, which may then reuse them
    assert await store.use_once("saml:_a1", now + 300, now + 900) is True



async def test_a_mark_is_taken_once_and_never_made_by_taking(store: Store) -> None:
    now = T0.timestamp()
    assert await store.take_once("req:r1", now) is False  # never made: and still not there
    assert await store.take_once("req:r1", now) is False
    await store.use_once("req:r1", now, now + 600)
    assert await store.take_once("req:r1", now + 1) is True
    assert await store.take_once("req:r1", now + 2) is False  # taken: gone
    await store.use_once("req:r2", now, now + 600)
    assert await store.take_once("req:r2", now + 600) is False  # expired


# --- blocks -------------------------------------------------------------------------------


async def test_record_block_round_trips_every_field(store: Store) -> None:
    record = BlockRecord(
        time=datetime(2024, 5, 1, 14, 0, 0, 654321, tzinfo=PLUS_TWO),
        channel=Channel.SMS,
        account="acme",
        sender="+14155550100",
        recipient="+14155550199",
        reasons=(
            Reason("SUPPRESSED", "recipient unsubscribed on 1 May", "suppression"),
            Reason("QUIET_HOURS", "21:30 local, outside 08:00 to 21:00 ✗", "tcpa.quiet_hours"),
        ),
        rules_version="v42",
        message_id="<m1@acme.example>",
        subject="Hello, “world”",
        size=1234,
        gateway_id="gw-7",
    )
    record_id = await store.record_block(record)

    (stored,) = await store.query_blocks(BlockQuery())
    assert stored == replace(record, id=record_id)
    assert stored.time.utcoffset() == timedelta(0)


async def test_record_block_returns_distinct_increasing_ids(store: Store) -> None:
    first = await store.record_block(block("a@x.com"))
    second = await store.record_block(block("a@x.com"))
    assert second > first


def hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture
async def blocks(store: Store) -> Store:
    """Six blocks an hour apart (b0 oldest), recorded out of time order so that newest
    first cannot pass as "last recorded first"; each filter below selects a known subset."""
    records = [
        block("b0@x.com", codes=("SUPPRESSED",)),
        block("b1@x.com", codes=("QUIET_HOURS", "SUPPRESSED"), channel=Channel.SMS),
        block("b2@x.com", codes=("QUIETXHOURS",), account="other"),
        block("b3@x.com", codes=("NOT_SUPPRESSED",), channel=Channel.CALL),
        block("b0@x.com", codes=("QUIET_HOURS",), account="other"),
        block("b5@x.com", codes=("SUPPRESSED", "FOOTER_MISSING")),
    ]
    timed = [replace(record, time=hour(n)) for n, record in enumerate(records)]
    for record in timed[3:] + timed[:3]:
        await store.record_block(record)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (BlockQuery(), ["b5", "b0", "b3", "b2", "b1", "b0"]),
        (BlockQuery(limit=2), ["b5", "b0"]),
        (BlockQuery(since=hour(2)), ["b5", "b0", "b3", "b2"]),
        (BlockQuery(until=hour(2)), ["b1", "b0"]),
        (BlockQuery(since=hour(1), until=hour(3)), ["b2", "b1"]),
        (BlockQuery(since=hour(1).astimezone(PLUS_TWO), until=hour(2)), ["b1"]),
        (BlockQuery(reason="SUPPRESSED"), ["b5", "b1", "b0"]),
        (BlockQuery(reason="QUIET_HOURS"), ["b0", "b1"]),
        (BlockQuery(reason="FOOTER_MISSING"), ["b5"]),
        (BlockQuery(reason="QUIET"), []),
        (BlockQuery(reason="%"), []),
        (BlockQuery(channel=Channel.SMS), ["b1"]),
        (BlockQuery(channel=Channel.EMAIL), ["b5", "b0", "b2", "b0"]),
        (BlockQuery(account="other"), ["b0", "b2"]),
        (BlockQuery(recipient="b0@x.com"), ["b0", "b0"]),
        (BlockQuery(recipient="b0"), []),
        (BlockQuery(reason="SUPPRESSED", channel=Channel.EMAIL, since=hour(1)), ["b5"]),
        (BlockQuery(account="other", recipient="b0@x.com", until=hour(4)), []),
    ],
)
async def test_query_blocks_filters_newest_first(
    blocks: Store, query: BlockQuery, expected: list[str]
) -> None:
    found = await blocks.query_blocks(query)
    assert [r.recipient.removesuffix("@x.com") for r in found] == expected
    assert [r.time for r in found] == sorted((r.time for r in found), reverse=True)


async def walk_pages(store: Store, query: BlockQuery) -> list[list[BlockRecord]]:
    """Every page of `query` (its limit is the page size) from its cursor on."""
    pages: list[list[BlockRecord]] = []
    before_id = query.before_id
    while page := await store.query_blocks(replace(query, before_id=before_id)):
        pages.append(page)
        before_id = page[-1].id
    return pages


@pytest.mark.parametrize("page_size", [1, 2, 4, 6, 7])
@pytest.mark.parametrize("query", [BlockQuery(), BlockQuery(reason="SUPPRESSED")])
async def test_before_id_pages_through_the_newest_first_order(
    blocks: Store, query: BlockQuery, page_size: int
) -> None:
    """The fixture records out of time order, so paging by `id <` alone would skip some."""
    pages = await walk_pages(blocks, replace(query, limit=page_size))
    walked = [record for page in pages for record in page]
    assert walked == await blocks.query_blocks(query)
    assert all(len(page) <= page_size for page in pages)


async def test_blocks_recorded_during_a_walk_neither_repeat_nor_hide_others(
    blocks: Store,
) -> None:
    everything = await blocks.query_blocks(BlockQuery())
    first = await blocks.query_blocks(BlockQuery(limit=2))
    await blocks.record_block(block("new@x.com", at=hour(10)))
    late_id = await blocks.record_block(block("late@x.com", at=hour(-1)))
    rest = await walk_pages(blocks, BlockQuery(limit=2, before_id=first[-1].id))
    walked = first + [record for page in rest for record in page]
    assert [r.id for r in walked] == [r.id for r in everything] + [late_id]


async def test_get_block_returns_the_record_or_none(store: Store) -> None:
    record = block("a@x.com", codes=("SUPPRESSED", "QUIET_HOURS"))
    record_id = await store.record_block(record)
    assert await store.get_block(record_id) == replace(record, id=record_id)
    assert await store.get_block(record_id + 1) is None


async def test_block_counts_count_each_code_of_each_block_once(blocks: Store) -> None:
    assert await blocks.block_counts(None, None) == [
        ("call", "NOT_SUPPRESSED", 1),
        ("email", "FOOTER_MISSING", 1),
        ("email", "QUIETXHOURS", 1),
        ("email", "QUIET_HOURS", 1),
        ("email", "SUPPRESSED", 2),
        ("sms", "QUIET_HOURS", 1),
        ("sms", "SUPPRESSED", 1),
    ]
    assert await blocks.block_counts(hour(1), hour(3)) == [
        ("email", "QUIETXHOURS", 1),
        ("sms", "QUIET_HOURS", 1),
        ("sms", "SUPPRESSED", 1),
    ]
    assert await blocks.block_counts(hour(6), None) == []


async def test_block_counts_a_code_repeated_in_one_block_once(store: Store) -> None:
    """Two rules can give the same code (say, two suppression sources)."""
    await store.record_block(block("a@x.com", codes=("SUPPRESSED", "SUPPRESSED")))
    assert await store.block_counts(None, None) == [("email", "SUPPRESSED", 1)]


async def test_block_series_buckets_align_to_the_epoch_and_skip_empty_ones(
    blocks: Store,
) -> None:
    two_hours = [(datetime(2024, 5, 1, h, tzinfo=UTC), 2) for h in (12, 14, 16)]
    assert await blocks.block_series(None, None, 7200) == two_hours
    assert await blocks.block_series(hour(1), hour(4), 7200) == [
        (datetime(2024, 5, 1, 12, tzinfo=UTC), 1),
        (datetime(2024, 5, 1, 14, tzinfo=UTC), 2),
    ]
    assert await blocks.block_series(hour(7), None, 60) == []
    with pytest.raises(ValueError, match="bucket_s"):
        await blocks.block_series(None, None, 0)


# --- deliveries ---------------------------------------------------------------------------


async def test_first_claim_wins_and_a_fresh_claim_is_in_flight(store: Store) -> None:
    assert await store.claim_delivery("m1", "a@x.com", T0, 300) is DeliveryClaim.CLAIMED
    later = T0 + timedelta(seconds=299)
    assert await store.claim_delivery("m1", "a@x.com", later, 300) is DeliveryClaim.IN_FLIGHT
    assert await store.claim_delivery("m1", "b@x.com", later, 300) is DeliveryClaim.CLAIMED
    assert await store.claim_delivery("m2", "a@x.com", later, 300) is DeliveryClaim.CLAIMED


async def test_completed_delivery_is_never_claimed_again(store: Store) -> None:
    await store.claim_delivery("m1", "a@x.com", T0, 300)
    await store.complete_delivery("m1", "a@x.com", "upstream-1")
    await store.release_delivery("m1", "a@x.com")
    much_later = T0 + timedelta(days=30)
    claim = await store.claim_delivery("m1", "a@x.com", much_later, 300)
    assert claim is DeliveryClaim.ALREADY_DELIVERED


async def test_completing_without_a_claim_still_records_the_delivery(store: Store) -> None:
    await store.complete_delivery("m1", "a@x.com", "upstream-1")
    claim = await store.claim_delivery("m1", "a@x.com", T0, 300)
    assert claim is DeliveryClaim.ALREADY_DELIVERED


async def test_released_claim_can_be_claimed_again_at_once(store: Store) -> None:
    await store.claim_delivery("m1", "a@x.com", T0, 300)
    await store.release_delivery("m1", "a@x.com")
    assert await store.claim_delivery("m1", "a@x.com", T0, 300) is DeliveryClaim.CLAIMED


async def test_stale_claim_is_taken_again_and_restarts_the_clock(store: Store) -> None:
    await store.claim_delivery("m1", "a@x.com", T0, 60)
    just_fresh = T0 + timedelta(seconds=60) - timedelta(microseconds=1)
    assert await store.claim_delivery("m1", "a@x.com", just_fresh, 60) is DeliveryClaim.IN_FLIGHT
    stale = T0 + timedelta(seconds=60)
    assert await store.claim_delivery("m1", "a@x.com", stale, 60) is DeliveryClaim.CLAIMED
    after_reclaim = stale + timedelta(seconds=30)
    claim = await store.claim_delivery("m1", "a@x.com", after_reclaim, 60)
    assert claim is DeliveryClaim.IN_FLIGHT


async def test_concurrent_claims_for_one_recipient_have_one_winner(store: Store) -> None:
    claims = await asyncio.gather(
        *(store.claim_delivery("m1", "a@x.com", T0, 300) for _ in range(50))
    )
    assert claims.count(DeliveryClaim.CLAIMED) == 1
    assert claims.count(DeliveryClaim.IN_FLIGHT) == 49


# --- consents -----------------------------------------------------------------------------


def consent(
    subject: str,
    *,
    kind: ConsentKind = ConsentKind.EXPRESS,
    channel: Channel = Channel.SMS,
    at: datetime = T0,
    expires_at: datetime | None = None,
    source: str = "web-form",
) -> Consent:
    return Consent(subject, channel, kind, at, expires_at, source, evidence=f"form for {subject}")


async def test_consents_round_trip_every_field(store: Store) -> None:
    purchase = Consent(
        subject="+14155550101",
        channel=Channel.CALL,
        kind=ConsentKind.IMPLIED_PURCHASE,
        obtained_at=datetime(2024, 5, 1, 14, 0, 0, 654321, tzinfo=PLUS_TWO),
        expires_at=datetime(2026, 5, 1, 14, 0, 0, 654321, tzinfo=PLUS_TWO),
        source="crm-import",
        evidence="order #42, “signed” ✓",
    )
    express = consent("+14155550101", at=T0 + timedelta(days=1))
    assert express.expires_at is None
    assert await store.add_consents([purchase, express]) == 2

    found = await store.consents_for(["+14155550101"])

    assert found == {"+14155550101": (purchase, express)}
    (stored_purchase, stored_express) = found["+14155550101"]
    assert stored_purchase.obtained_at.utcoffset() == timedelta(0)
    assert stored_purchase.expires_at is not None
    assert stored_purchase.expires_at.utcoffset() == timedelta(0)
    assert stored_express.expires_at is None


async def test_add_consents_counts_only_new_consents(store: Store) -> None:
    first = consent("a@x.com", channel=Channel.EMAIL)
    assert await store.add_consents([first, first]) == 1

    same_instant_elsewhere = replace(
        first, obtained_at=T0.astimezone(PLUS_TWO), source="other", evidence="other"
    )
    different = [
        replace(first, kind=ConsentKind.IMPLIED_INQUIRY),
        replace(first, channel=Channel.SMS),
        replace(first, obtained_at=T0 + timedelta(microseconds=1)),
        replace(first, subject="b@x.com"),
    ]
    assert await store.add_consents([same_instant_elsewhere, *different]) == 4
    assert await store.add_consents([]) == 0

    found = await store.consents_for(["a@x.com"])
    assert len(found["a@x.com"]) == 4
    assert first in found["a@x.com"]
    assert same_instant_elsewhere not in found["a@x.com"]


async def test_consents_for_orders_by_time_and_omits_subjects_without_any(store: Store) -> None:
    """Expired consents come back too: whether one still counts is the policy's call."""
    newest = consent("+14155550101", kind=ConsentKind.EXPRESS, at=hour(5))
    expired = consent(
        "+14155550101", kind=ConsentKind.IMPLIED_INQUIRY, at=hour(-5000), expires_at=hour(-1)
    )
    middle = consent("+14155550101", kind=ConsentKind.IMPLIED_PURCHASE, at=hour(1))
    other = consent("+14155550102", at=hour(3))
    await store.add_consents([newest, other, expired, middle])

    found = await store.consents_for(
        ["+14155550101", "+14155550199", "+14155550102", "+14155550101"]
    )

    assert found == {"+14155550101": (expired, middle, newest), "+14155550102": (other,)}
    assert await store.consents_for([]) == {}


async def test_consents_for_looks_up_more_subjects_than_one_query_takes(store: Store) -> None:
    present = [f"+1415555{i:04d}" for i in range(2000)]
    await store.add_consents([consent(subject) for subject in present])
    absent = [f"+1212555{i:04d}" for i in range(2000)]

    found = await store.consents_for(absent + present)

    assert sorted(found) == present
    assert all(found[subject] == (consent(subject),) for subject in present)


# --- known locations ----------------------------------------------------------------------


async def test_known_locations_round_trip_and_omit_unknown_numbers(store: Store) -> None:
    miami = KnownLocation("America/New_York", 25.7617, -80.1918, "US-FL", "33101")
    await store.set_known_location("+13055550100", miami)
    await store.set_known_location("+14165550100", KnownLocation(region="CA-ON"))

    found = await store.known_locations(["+13055550100", "+12125550100", "+14165550100"])

    assert found == {"+13055550100": miami, "+14165550100": KnownLocation(region="CA-ON")}
    assert found["+14165550100"].latitude is None
    assert await store.known_locations([]) == {}


async def test_setting_a_known_location_replaces_every_field(store: Store) -> None:
    await store.set_known_location(
        "+13055550100", KnownLocation("America/New_York", 25.7617, -80.1918, "US-FL", "33101")
    )
    moved = KnownLocation(timezone="America/Chicago", region="US-TX")
    await store.set_known_location("+13055550100", moved)

    assert await store.known_locations(["+13055550100"]) == {"+13055550100": moved}


# --- contacts -----------------------------------------------------------------------------

DAY_S = 86_400


async def record_contact(
    store: Store, recipient: str, at: datetime, *, channel: Channel = Channel.SMS
) -> None:
    """A contact that is recorded whatever the counts (no limits)."""
    assert await store.reserve_contact(recipient, channel, at, f"m-{at.isoformat()}", [])


async def count_of(store: Store, recipient: str) -> int:
    return (await store.contact_counts([recipient], T0 - timedelta(days=365)))[recipient]


async def test_reserving_without_limits_always_records(store: Store) -> None:
    for n in range(5):
        assert await store.reserve_contact("+14155550101", Channel.SMS, T0, f"m{n}", [])
    assert await count_of(store, "+14155550101") == 5


async def test_contact_counts_every_channel_at_or_after_since(store: Store) -> None:
    """Every requested recipient is in the answer; one never contacted has 0."""
    a = "+14155550101"
    await record_contact(store, a, hour(-2), channel=Channel.SMS)
    await record_contact(store, a, hour(-1), channel=Channel.CALL)
    await record_contact(store, a, hour(0), channel=Channel.EMAIL)
    await record_contact(store, "+14155550102", hour(-3))
    requested = [a, "+14155550102", "+14155550103", a]

    assert await store.contact_counts(requested, hour(-1)) == {
        a: 2,
        "+14155550102": 0,
        "+14155550103": 0,
    }
    just_after = hour(-1) + timedelta(microseconds=1)
    assert (await store.contact_counts([a], just_after))[a] == 1
    assert (await store.contact_counts([a], hour(-3).astimezone(PLUS_TWO)))[a] == 3
    assert await store.contact_counts([], hour(-3)) == {}


async def test_contact_counts_looks_up_more_recipients_than_one_query_takes(
    store: Store,
) -> None:
    recipients = [f"+1415555{i:04d}" for i in range(2000)]
    for recipient in recipients[::500]:
        await record_contact(store, recipient, T0)

    counts = await store.contact_counts(recipients, T0)

    assert len(counts) == 2000
    assert {r for r, n in counts.items() if n} == set(recipients[::500])
    assert set(counts.values()) == {0, 1}


@pytest.mark.parametrize(
    ("earlier", "allowed"),
    [
        (T0 - timedelta(seconds=3600), True),
        (T0 - timedelta(seconds=3600) + timedelta(microseconds=1), False),
        (T0, False),
        (T0 + timedelta(microseconds=1), False),
    ],
    ids=["exactly-window-old", "microsecond-newer", "same-instant", "after-now"],
)
async def test_reserve_counts_contacts_in_the_half_open_window(
    store: Store, earlier: datetime, allowed: bool
) -> None:
    """The window is everything after now - window_s, including contacts stamped after now
    by a replica whose clock runs ahead (counting them errs on the safe side)."""
    await record_contact(store, "+14155550101", earlier)

    reserved = await store.reserve_contact("+14155550101", Channel.SMS, T0, "m-new", [(1, 3600)])

    assert reserved is allowed
    assert await count_of(store, "+14155550101") == (2 if allowed else 1)


async def test_reserve_requires_every_limit_to_hold(store: Store) -> None:
    limits = [(2, 3600), (3, DAY_S)]
    daily = "+14155550101"
    await record_contact(store, daily, hour(-3))
    await record_contact(store, daily, hour(-2))
    assert await store.reserve_contact(daily, Channel.SMS, T0, "m1", limits)
    # One contact in the last hour, three in the last day: the daily limit refuses.
    assert not await store.reserve_contact(
        daily, Channel.CALL, T0 + timedelta(seconds=1), "m2", limits
    )
    assert await count_of(store, daily) == 3

    hourly = "+14155550102"
    await record_contact(store, hourly, T0 - timedelta(minutes=10))
    await record_contact(store, hourly, T0 - timedelta(minutes=5))
    # Two in the last hour, two in the last day: the hourly limit refuses.
    assert not await store.reserve_contact(hourly, Channel.SMS, T0, "m3", limits)
    assert await count_of(store, hourly) == 2


async def test_reserve_counts_only_the_same_recipient(store: Store) -> None:
    await record_contact(store, "+14155550102", T0)
    assert await store.reserve_contact("+14155550101", Channel.SMS, T0, "m1", [(1, DAY_S)])


async def test_releasing_a_contact_makes_room_again(store: Store) -> None:
    limits = [(2, DAY_S)]
    a, b = "+14155550101", "+14155550102"
    assert await store.reserve_contact(a, Channel.SMS, T0, "m1", limits)
    assert await store.reserve_contact(a, Channel.SMS, T0, "m2", limits)
    assert await store.reserve_contact(b, Channel.SMS, T0, "m1", limits)
    assert not await store.reserve_contact(a, Channel.SMS, T0, "m3", limits)

    await store.release_contact(a, "m1")
    await store.release_contact(a, "never-reserved")

    assert await store.contact_counts([a, b], T0) == {a: 1, b: 1}
    assert await store.reserve_contact(a, Channel.SMS, T0, "m3", limits)
    assert not await store.reserve_contact(a, Channel.SMS, T0, "m4", limits)


async def test_concurrent_reservations_never_exceed_the_limit(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.reserve_contact("+14155550101", Channel.SMS, T0, f"m{n}", [(3, DAY_S)])
            for n in range(20)
        )
    )
    assert results.count(True) == 3
    assert await count_of(store, "+14155550101") == 3


# --- opt-out notices ----------------------------------------------------------------------


async def test_notice_times_are_upserted_and_unknown_recipients_omitted(store: Store) -> None:
    await store.mark_notice_sent("+14155550101", hour(0).astimezone(PLUS_TWO))
    await store.mark_notice_sent("+14155550102", hour(1))
    await store.mark_notice_sent("+14155550102", hour(30))

    found = await store.notice_sent_at(["+14155550101", "+14155550102", "+14155550103"])

    assert found == {"+14155550101": hour(0), "+14155550102": hour(30)}
    assert found["+14155550101"].utcoffset() == timedelta(0)
    assert await store.notice_sent_at([]) == {}


# --- audit --------------------------------------------------------------------------------


async def test_audit_entries_chain_from_genesis(store: Store) -> None:
    appended = [await store.append_audit(audit_event(n)) for n in range(3)]

    assert [e.id for e in appended] == sorted({e.id for e in appended})
    assert appended[0].prev_hash == GENESIS_HASH
    for previous, current in itertools.pairwise(appended):
        assert current.prev_hash == previous.hash
    for entry in appended:
        assert entry.hash == entry_hash(entry.prev_hash, entry)
    assert await store.audit_events() == appended
    assert await store.verify_audit() is None


async def test_audit_content_round_trips_so_the_hash_recomputes(store: Store) -> None:
    event = AuditEvent(
        time=datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=PLUS_TWO),
        actor="admin",
        action="rules.reload",
        subject="rules/email.toml",
        details={"z": [1, 2.5, None, True], "a": {"nested": "é ✓"}, "when": T0},
    )
    appended = await store.append_audit(event)

    assert appended.time == event.time
    assert appended.details == {"z": [1, 2.5, None, True], "a": {"nested": "é ✓"}, "when": str(T0)}
    assert await store.audit_events() == [appended]
    assert await store.verify_audit() is None


async def test_empty_audit_log_verifies(store: Store) -> None:
    assert await store.audit_events() == []
    assert await store.verify_audit() is None


# --- privacy and retention ----------------------------------------------------------------

ERASURE_KEY = b"erasure-key-for-tests-0123456789"


async def test_erasure_keeps_only_a_keyed_hash_of_the_opt_out(store: Store) -> None:
    """Rows recorded as written ('Bob@X.com') are the person's too; others' rows stay."""
    await store.use_erasure_key(ERASURE_KEY)
    bob = "bob@x.com"
    await store.add_suppressions(
        [suppression(bob), suppression(bob, source="operator"), suppression("ann@x.com")]
    )
    await store.add_consents([consent(bob, channel=Channel.EMAIL)])
    await store.record_block(block("Bob@X.com"))
    await store.record_block(replace(block("ann@x.com"), sender="BOB@x.com"))
    kept_block = await store.record_block(block("ann@x.com"))
    await store.claim_delivery("m1", "Bob@x.com", T0, 60)
    await store.append_audit(replace(audit_event(1), subject=f"suppression of {bob}"))

    before = await store.personal_data(bob)
    assert [s.source for s in before.suppressions] == ["import", "operator"]
    assert (len(before.blocks), len(before.consents), len(before.deliveries)) == (2, 1, 1)
    assert [e.subject for e in before.audit] == [f"suppression of {bob}"]

    counts = await store.erase_personal_data(bob, T0, "ops@example.com")

    assert {k: counts[k] for k in ("blocks", "consents", "deliveries", "suppressions")} == {
        "blocks": 2, "consents": 1, "deliveries": 1, "suppressions": 2
    }
    assert await store.suppressed([bob, "ann@x.com"]) == {bob, "ann@x.com"}
    hashed = erased_address(ERASURE_KEY, bob)
    assert [(s.address, s.source) for s in await store.list_suppressions()] == [
        ("ann@x.com", "import"), (hashed, ERASED_SOURCE)
    ]
    after = await store.personal_data(bob)
    assert (after.suppressions, after.blocks, after.consents, after.deliveries) == ((),) * 4
    assert [s.address for s in after.erased_suppressions] == [hashed]
    assert [r.id for r in await store.query_blocks(BlockQuery())] == [kept_block]
    # The hashed row is the address's own: re-adding is not new, removing lifts it.
    assert await store.add_suppressions([suppression(bob)]) == 0
    assert await store.remove_suppressions([bob]) == 1
    assert await store.suppressed([bob]) == frozenset()


async def test_a_second_erasure_key_is_refused(store: Store) -> None:
    await store.use_erasure_key(ERASURE_KEY)
    with pytest.raises(StoreUnavailable, match="erasure key differs"):
        await store.use_erasure_key(b"another-key-another-key-another-key")


async def test_purge_leaves_hashed_opt_outs_and_its_own_entry(store: Store) -> None:
    await store.use_erasure_key(ERASURE_KEY)
    await store.add_suppressions(
        [suppression("a@x.com"), suppression("b@x.com"), suppression("b@x.com", source="op")]
    )
    await store.record_block(block("a@x.com"))
    await store.set_known_location("+14155550101", KnownLocation(region="US-CA"))
    for n in range(3):
        await store.append_audit(audit_event(n))
    await store.prune_audit(T0 + timedelta(seconds=1))

    purged = await store.purge(audit_event(9))

    assert purged.prev_hash == GENESIS_HASH
    assert await store.audit_events() == [purged]
    assert await store.verify_audit() is None
    assert await store.suppressed(["a@x.com", "b@x.com"]) == {"a@x.com", "b@x.com"}
    assert {(s.address, s.source) for s in await store.list_suppressions()} == {
        (erased_address(ERASURE_KEY, a), ERASED_SOURCE) for a in ("a@x.com", "b@x.com")
    }
    assert await store.query_blocks(BlockQuery()) == []
    assert await store.known_locations(["+14155550101"]) == {}


async def test_retention_clears_and_deletes_old_blocks_and_prunes_a_chain_prefix(
    store: Store,
) -> None:
    ids = [await store.record_block(replace(block(f"b{n}@x.com", at=hour(n)),
                                            subject="s", message_id="<m>")) for n in range(4)]
    assert await store.clear_block_metadata(hour(2)) == 2
    assert await store.clear_block_metadata(hour(2)) == 0
    assert [(r.subject, r.message_id) for r in await store.query_blocks(BlockQuery())] == [
        ("s", "<m>"), ("s", "<m>"), ("", ""), ("", "")
    ]
    assert await store.delete_blocks(hour(1)) == 1
    assert [r.id for r in await store.query_blocks(BlockQuery())] == ids[:0:-1]

    for n in range(5):
        await store.append_audit(audit_event(n))
    assert await store.prune_audit(T0 + timedelta(seconds=2)) == 2
    assert await store.prune_audit(T0 + timedelta(seconds=2)) == 0
    assert [e.details["n"] for e in await store.audit_events()] == [2, 3, 4]
    await store.append_audit(audit_event(5))
    assert await store.verify_audit() is None


# --- several stores on one database (replicas) --------------------------------------------


async def test_two_stores_appending_concurrently_keep_one_chain(
    two_stores: tuple[Store, Store],
) -> None:
    first, second = two_stores
    await asyncio.gather(
        *(store.append_audit(audit_event(n)) for n in range(40) for store in (first, second))
    )
    events = await first.audit_events()
    assert [e.id for e in events] == list(range(1, 81))
    for previous, current in itertools.pairwise(events):
        assert current.prev_hash == previous.hash
    assert await second.verify_audit() is None


async def test_two_stores_claiming_concurrently_have_one_winner(
    two_stores: tuple[Store, Store],
) -> None:
    claims = await asyncio.gather(
        *(
            store.claim_delivery("m1", "a@x.com", T0, 300)
            for _ in range(25)
            for store in two_stores
        )
    )
    assert claims.count(DeliveryClaim.CLAIMED) == 1
    assert claims.count(DeliveryClaim.IN_FLIGHT) == 49


async def test_two_stores_reserving_concurrently_never_exceed_the_limit(
    two_stores: tuple[Store, Store],
) -> None:
    """Two replicas sharing the database still hold the cap between them."""
    results = await asyncio.gather(
        *(
            store.reserve_contact("+14155550101", Channel.SMS, T0, f"m{n}", [(3, DAY_S)])
            for n in range(10)
            for store in two_stores
        )
    )
    assert results.count(True) == 3
    for store in two_stores:
        assert await count_of(store, "+14155550101") == 3


async def test_an_opt_out_through_one_store_is_seen_by_the_other_at_once(
    two_stores: tuple[Store, Store],
) -> None:
    """No cache: the other replica's very next lookup reads it."""
    first, second = two_stores
    assert await second.suppressed(["a@x.com"]) == frozenset()
    await first.add_suppressions([suppression("a@x.com", source="one-click")])
    assert await second.suppressed(["a@x.com"]) == {"a@x.com"}
    await first.remove_suppressions_from_source(["a@x.com"], "one-click")
    assert await second.suppressed(["a@x.com"]) == frozenset()


# --- lifecycle ----------------------------------------------------------------------------


async def test_ping_answers_on_an_open_store(store: Store) -> None:
    await store.ping()


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.suppressed(["a@x.com"])
    with pytest.raises(StoreUnavailable):
        await store.reserve_contact("+14155550101", Channel.SMS, T0, "m1", [])


# --- open_store ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgresql_urls_open_the_postgresql_store(scheme: str) -> None:
    assert isinstance(open_store(f"{scheme}://gateway@localhost/gateway"), PostgresStore)


@pytest.mark.parametrize("prefix", ["sqlite://", "sqlite:///"])
async def test_sqlite_url_names_an_absolute_path_and_creates_its_directory(
    tmp_path: Path, prefix: str
) -> None:
    """`sqlite:///var/gw.db` and the config's `sqlite:////var/gw.db` are the same file."""
    store = open_store(f"{prefix}{tmp_path}/a/b/gateway.db")
    assert (tmp_path / "a" / "b").is_dir()
    await store.open()
    await store.close()
    assert (tmp_path / "a" / "b" / "gateway.db").is_file()


def test_unknown_store_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://localhost/gateway")


# --- SQLite: reopening and audit tampering ------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path, busy_timeout_s=0.2)
    await opened.open()
    yield opened
    await opened.close()


async def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    url = store_url("sqlite", tmp_path)
    first = open_store(url)
    await first.open()
    await first.add_suppressions([suppression("a@x.com")])
    await first.close()

    second = open_store(url)
    await second.open()
    assert await second.suppressed(["a@x.com"]) == frozenset({"a@x.com"})
    await second.close()


def edit_database(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


async def test_a_cursor_whose_block_was_deleted_still_moves_the_walk_on(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    ids = [await sqlite_store.record_block(block(f"b{n}@x.com", at=hour(n))) for n in range(3)]
    edit_database(db_path, f"DELETE FROM blocks WHERE id = {ids[2]}")
    rest = await sqlite_store.query_blocks(BlockQuery(before_id=ids[2]))
    assert [r.id for r in rest] == [ids[1], ids[0]]


_SWAP_2_AND_3 = (
    "UPDATE audit SET id = -2 WHERE id = 2",
    "UPDATE audit SET id = 2 WHERE id = 3",
    "UPDATE audit SET id = 3 WHERE id = -2",
)


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            ("UPDATE audit SET actor = 'mallory' WHERE id = 3",),
            AuditProblem(3, "content does not match its hash"),
        ),
        (
            ("UPDATE audit SET details_json = '{\"n\":99}' WHERE id = 2",),
            AuditProblem(2, "content does not match its hash"),
        ),
        (
            ("UPDATE audit SET details_json = 'not json' WHERE id = 4",),
            AuditProblem(4, "content does not match its hash"),
        ),
        (("DELETE FROM audit WHERE id = 3",), AuditProblem(4, "does not follow entry 2")),
        (_SWAP_2_AND_3, AuditProblem(2, "does not follow entry 1")),
        (
            ("DELETE FROM audit WHERE id = 1",),
            AuditProblem(2, "first entry does not start the chain"),
        ),
    ],
    ids=["field", "details", "unreadable", "delete-middle", "swap", "delete-first"],
)
async def test_verify_audit_finds_the_first_tampered_entry(
    sqlite_store: SqliteStore,
    db_path: Path,
    statements: tuple[str, ...],
    expected: AuditProblem,
) -> None:
    for n in range(5):
        await sqlite_store.append_audit(audit_event(n))
    assert await sqlite_store.verify_audit() is None

    edit_database(db_path, *statements)

    assert await sqlite_store.verify_audit() == expected


# --- SQLite: failures ---------------------------------------------------------------------


def assert_unavailable(raised: pytest.ExceptionInfo[StoreUnavailable], message: str) -> None:
    assert message in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.Error | OSError)
    assert not isinstance(raised.value, sqlite3.Error)


async def test_locked_database_is_unavailable_until_the_lock_goes(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreUnavailable) as raised:
        await sqlite_store.record_block(block("a@x.com"))
    assert_unavailable(raised, "locked")

    other.execute("ROLLBACK")
    other.close()
    await sqlite_store.record_block(block("b@x.com"))
    assert [r.recipient for r in await sqlite_store.query_blocks(BlockQuery())] == ["b@x.com"]


async def test_waiting_for_a_lock_does_not_block_the_event_loop(db_path: Path) -> None:
    patient = SqliteStore(db_path, busy_timeout_s=5)
    await patient.open()
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        pending = asyncio.create_task(patient.record_block(block("a@x.com")))
        await asyncio.sleep(0.2)
        assert not pending.done()
        other.execute("ROLLBACK")
        assert await pending > 0
    finally:
        other.close()
        await patient.close()


async def test_removed_directory_makes_the_store_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    doomed = SqliteStore(directory / "gateway.db")
    await doomed.open()
    try:
        shutil.rmtree(directory)
        for call in (
            doomed.ping,
            lambda: doomed.record_block(block("a@x.com")),
            lambda: doomed.suppressed(["a@x.com"]),
        ):
            with pytest.raises(StoreUnavailable):
                await call()
    finally:
        await doomed.close()


async def test_file_replaced_by_a_directory_is_unavailable_until_restored(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    await sqlite_store.add_suppressions([suppression("a@x.com")])
    backup = db_path.with_name("moved.db")
    db_path.rename(backup)
    db_path.mkdir()

    with pytest.raises(StoreUnavailable) as raised:
        await sqlite_store.suppressed(["a@x.com"])
    assert_unavailable(raised, "removed or replaced")
    with pytest.raises(StoreUnavailable) as raised:
        await sqlite_store.add_suppressions([suppression("b@x.com")])
    assert_unavailable(raised, "removed or replaced")
    with pytest.raises(StoreUnavailable) as raised:
        await sqlite_store.add_suppressions([suppression("b@x.com")])
    assert_unavailable(raised, "unable to open database file")

    db_path.rmdir()
    backup.rename(db_path)
    await sqlite_store.ping()
    assert await sqlite_store.suppressed(["a@x.com", "b@x.com"]) == frozenset({"a@x.com"})


async def test_deleted_file_is_not_silently_recreated_empty(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """An empty new database would forget every suppression and let mail through."""
    await sqlite_store.add_suppressions([suppression("a@x.com")])
    db_path.unlink()

    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await sqlite_store.suppressed(["a@x.com"])
    assert not db_path.exists()


async def test_corrupt_file_is_unavailable(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database" * 1000)
    corrupt = SqliteStore(db_path)
    with pytest.raises(StoreUnavailable) as raised:
        await corrupt.open()
    assert_unavailable(raised, "not a database")
    await corrupt.close()


async def test_calls_before_open_are_unavailable(db_path: Path) -> None:
    unopened = SqliteStore(db_path)
    with pytest.raises(StoreUnavailable, match="not open"):
        await unopened.ping()
    await unopened.close()
    assert not db_path.exists()


# --- migrations ---------------------------------------------------------------------------


EVERY_MIGRATION = [
    (1, "initial"),
    (2, "telephony"),
    (3, "suppression_sources"),
    (4, "privacy"),
    (5, "block_evidence"),
    (6, "settings"),
    (7, "suppression_mailboxes"),
    (8, "inbound_messages"),
    (9, "credentials"),
    (10, "people"),
    (11, "used_once"),
    (12, "scim"),
    (13, "decisions"),
    (14, "decision_summary"),
    (16, "audit_actions"),
    (17, "sealed_personal_data"),
    (18, "sealed_copies"),
    (19, "sealed_locations"),
    (20, "unsigned_numbers"),
    (21, "unindexed_decision_recipients"),
]
"""Every migration a database opened by this release has applied, by version and name."""


def applied_migrations(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        applied = [(version, name) for version, name in rows]
    conn.close()
    return applied


async def test_opening_twice_applies_each_migration_once(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    await sqlite_store.open()
    again = SqliteStore(db_path)
    await again.open()
    await again.close()
    assert applied_migrations(db_path) == EVERY_MIGRATION


async def test_people_recorded_before_scim_read_back_with_no_scim_attributes(
    db_path: Path,
) -> None:
    before_scim = [m for m in discover_migrations(migration_directory("sqlite")) if m.version < 12]
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        run_migrations(SqliteMigrationTarget(conn), before_scim)
        conn.execute(
            "INSERT INTO people (person_id, user_name, created_at, updated_at)"
            " VALUES ('p1', 'katie@acme.example', ?1, ?1)", (T0.isoformat(),)
        )
    finally:
        conn.close()
    upgraded = SqliteStore(db_path)
    await upgraded.open()
    try:
        assert await upgraded.person("p1") == PersonRow("p1", "katie@acme.example", T0, T0)
    finally:
        await upgraded.close()


async def test_a_version_one_database_is_upgraded_once_and_keeps_its_data(db_path: Path) -> None:
    """Deployed databases were created by 0001 alone; opening one applies only what is new."""
    initial, *_ = discover_migrations(migration_directory("sqlite"))
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        run_migrations(SqliteMigrationTarget(conn), [initial])
        conn.execute(
            "INSERT INTO suppressions (address, source, reason, created_at)"
            " VALUES ('a@x.com', 'import', 'old', '2024-05-01T12:00:00.123456+00:00')"
        )
    finally:
        conn.close()
    assert applied_migrations(db_path) == [(1, "initial")]

    for expected_contacts in (1, 2):
        upgraded = SqliteStore(db_path)
        await upgraded.open()
        try:
            assert await upgraded.list_suppressions() == [
                Suppression("a@x.com", "import", "old", T0)
            ]
            assert await upgraded.reserve_contact(
                "+14155550101", Channel.SMS, T0, f"m{expected_contacts}", []
            )
            assert await count_of(upgraded, "+14155550101") == expected_contacts
        finally:
            await upgraded.close()
    assert applied_migrations(db_path) == EVERY_MIGRATION


async def test_a_version_two_database_keeps_its_suppressions_one_row_per_source(
    db_path: Path,
) -> None:
    """Deployed databases have 0001 and 0002, with suppressions keyed on address alone."""
    deployed = discover_migrations(migration_directory("sqlite"))[:2]
    assert [m.version for m in deployed] == [1, 2]
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        run_migrations(SqliteMigrationTarget(conn), deployed)
        conn.executemany(
            "INSERT INTO suppressions (address, source, reason, actor, created_at)"
            " VALUES (?, ?, ?, ?, '2024-05-01T12:00:00.123456+00:00')",
            [
                ("+14155550101", "sms-keyword", "replied 'STOP'", "recipient"),
                ("a@x.com", "one-click", "clicked", ""),
                # 0001 let a NULL slip into its TEXT primary key; it matched no lookup.
                (None, "import", "broken", ""),
            ],
        )
    finally:
        conn.close()
    assert applied_migrations(db_path) == [(1, "initial"), (2, "telephony")]

    upgraded = SqliteStore(db_path)
    await upgraded.open()
    try:
        stop = Suppression("+14155550101", "sms-keyword", "replied 'STOP'", T0, "recipient")
        one_click = Suppression("a@x.com", "one-click", "clicked", T0)
        assert await upgraded.list_suppressions() == [stop, one_click]

        dnc = suppression("+14155550101", source="national-dnc:x")
        assert await upgraded.add_suppressions([dnc]) == 0
        assert await upgraded.remove_suppressions_from_source(["+14155550101"], "sms-keyword") == 1
        assert await upgraded.suppressed(["+14155550101", "a@x.com"]) == {"+14155550101", "a@x.com"}
        assert await upgraded.list_suppressions() == [dnc, one_click]
    finally:
        await upgraded.close()
    assert applied_migrations(db_path) == EVERY_MIGRATION


async def test_suppression_lookups_by_address_search_an_index(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """The (address, source) primary key leads with address, so `address IN (...)` and the
    per-address deletes search it instead of scanning the table."""
    with sqlite3.connect(db_path) as conn:
        for statement in (
            "SELECT DISTINCT address FROM suppressions WHERE address IN (?, ?)",
            "DELETE FROM suppressions WHERE address = ?",
            "DELETE FROM suppressions WHERE address = ? AND source LIKE ? ESCAPE '\\'",
        ):
            parameters = ("a", "b")[: statement.count("?")]
            plan = conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            details = [detail for *_, detail in plan]
            assert details, statement
            assert all(d.startswith("SEARCH suppressions USING ") for d in details), details
    conn.close()


def test_packaged_sqlite_migrations_start_at_version_one() -> None:
    migrations = discover_migrations(migration_directory("sqlite"))
    assert [(m.version, m.name) for m in migrations][:1] == [(1, "initial")]


def write_files(directory: Path, names: list[str]) -> None:
    for name in names:
        (directory / name).write_text(f"-- {name}\n")


def test_migrations_are_discovered_in_version_order(tmp_path: Path) -> None:
    write_files(tmp_path, ["0010_later.sql", "0002_second.sql", "0001_first.sql", "README.md"])
    found = discover_migrations(tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "first"), (2, "second"), (10, "later")]
    assert found[0].sql == "-- 0001_first.sql\n"
    assert pending_migrations(found, {1, 10}) == [found[1]]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_first.sql", "first.sql"], "not named"),
        (["0001_first.sql", "0001_again.sql"], "more than one"),
    ],
)
def test_bad_migration_directories_are_refused(
    tmp_path: Path, names: list[str], message: str
) -> None:
    write_files(tmp_path, names)
    with pytest.raises(ValueError, match=message):
        discover_migrations(tmp_path)


def test_each_migration_applies_whole_or_not_at_all(db_path: Path) -> None:
    good = Migration(
        1,
        "good",
        "CREATE TABLE a (x INTEGER);\n"
        "CREATE TRIGGER a_double AFTER INSERT ON a BEGIN\n"
        "    UPDATE a SET x = x * 2 WHERE rowid = new.rowid;\n"
        "END;\n",
    )
    bad = Migration(2, "bad", "CREATE TABLE b (x INTEGER);\nTHIS IS NOT SQL;\n")
    conn = sqlite3.connect(db_path, isolation_level=None)
    target = SqliteMigrationTarget(conn)
    try:
        with pytest.raises(sqlite3.OperationalError):
            run_migrations(target, [good, bad])
        assert target.applied_versions() == {1}
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "a" in tables
        assert "b" not in tables
        assert run_migrations(target, [good]) == []
        assert target.apply(good) is False
    finally:
        conn.close()


# --- PostgreSQL: failures, start-up, migrations, indexes --------------------------------


async def test_a_stopped_postgresql_is_unavailable_until_it_returns() -> None:
    """A server of its own, so stopping it disturbs no other test."""
    server = start_postgres_server()
    store = PostgresStore(server.url())
    try:
        await store.open()
        await store.add_suppressions([suppression("a@x.com")])
        server.stop()
        where = f"gateway@127.0.0.1:{server.port}/postgres"
        for call in (
            store.ping,
            lambda: store.suppressed(["a@x.com"]),
            lambda: store.reserve_contact("+14155550101", Channel.SMS, T0, "m1", [(1, DAY_S)]),
            lambda: store.append_audit(audit_event(1)),
            lambda: store.add_suppressions([suppression("b@x.com")]),
        ):
            with pytest.raises(StoreUnavailable, match=f"PostgreSQL at {where}"):
                await call()

        server.start()
        await store.ping()
        assert await store.suppressed(["a@x.com", "b@x.com"]) == {"a@x.com"}
        assert await store.reserve_contact("+14155550101", Channel.SMS, T0, "m1", [(1, DAY_S)])
    finally:
        await store.close()
        server.destroy()


async def test_an_unreachable_server_at_start_up_is_named_without_its_password() -> None:
    store = PostgresStore(f"postgresql://gw:s3cret-pw@127.0.0.1:{free_port()}/gateway")
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    await store.close()
    message = str(raised.value)
    assert "PostgreSQL at gw@127.0.0.1:" in message
    assert "server unreachable" in message
    assert "s3cret" not in message


async def test_a_missing_database_at_start_up_is_named(postgres_server: PostgresServer) -> None:
    store = PostgresStore(postgres_server.url("no_such_database"))
    with pytest.raises(StoreUnavailable, match='database "no_such_database" does not exist'):
        await store.open()
    await store.close()


async def test_replicas_starting_together_apply_each_migration_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        applied = [[m.version for m in store.applied_migrations] for store in stores]
        every = [m.version for m in discover_migrations(migration_directory("postgres"))]
        assert sorted(applied) == [[], [], every]
        connection = await asyncpg.connect(postgres_url)
        try:
            rows = await connection.fetch("SELECT version, name FROM schema_migrations")
        finally:
            await connection.close()
        assert sorted(tuple(row) for row in rows) == [
            (m.version, m.name) for m in discover_migrations(migration_directory("postgres"))
        ]
    finally:
        for store in stores:
            await store.close()


def test_postgresql_migrations_mirror_the_sqlite_ones() -> None:
    """One version number means one schema step on either backend."""
    def names(backend: str) -> list[tuple[int, str]]:
        return [(m.version, m.name) for m in discover_migrations(migration_directory(backend))]

    assert names("postgres") == names("sqlite")


async def test_a_failing_import_leaves_nothing_behind(postgres_url: str) -> None:
    """A large batch goes through COPY; a row PostgreSQL refuses (NUL in text) fails it all."""
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        batch = [suppression(f"user{i}@x.com") for i in range(20_000)]
        batch[15_000] = suppression("bad\x00@x.com")
        with pytest.raises(StoreUnavailable):
            await store.add_suppressions(batch)
        assert await store.list_suppressions() == []
        del batch[15_000]
        assert await store.add_suppressions(batch) == 19_999
        assert await store.add_suppressions(batch) == 0
    finally:
        await store.close()


async def test_postgresql_suppression_lookups_search_the_primary_key(postgres_url: str) -> None:
    """With statistics saying the table is large, a lookup probes the (address, source)
    key rather than scanning: lookups stay fast with ten million rows."""
    store = PostgresStore(postgres_url)
    await store.open()
    await store.add_suppressions([suppression(f"user{i}@x.com") for i in range(50_000)])
    await store.close()
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("ANALYZE suppressions")
        plan = await connection.fetchval(
            f"EXPLAIN (FORMAT JSON) {SUPPRESSED_QUERY}", ["user7@x.com", "nobody@x.com"]
        )
    finally:
        await connection.close()
    assert "suppressions_pkey" in plan
    assert '"Seq Scan"' not in plan.replace('"Relation Name": "suppressions"', "")


# --- `compliance-gateway migrate` and start-up failures ---------------------------------


def config_with_store(directory: Path, url: str) -> Path:
    path = write_config(directory)
    path.write_text(path.read_text().replace('url = "sqlite:///var/gateway.db"', f'url = "{url}"'))
    return path


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_applies_what_is_pending_and_says_so(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = store_url(backend, tmp_path)
    config = str(config_with_store(tmp_path, url))
    every = discover_migrations(migration_directory(backend))

    assert main(["migrate", "--config", config]) == 0
    assert capsys.readouterr().out.splitlines() == [
        *(f"applied {m.version:04d}_{m.name}" for m in every),
        f"schema is current ({len(every)} migration(s) applied now)",
    ]
    assert main(["migrate", "--config", config]) == 0
    again = capsys.readouterr().out.splitlines()
    assert again == ["schema is current (0 migration(s) applied now)"]


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unreachable_postgresql_stops_the_command_with_one_line(
    command: str, tmp_path: Path
) -> None:
    port = free_port()
    config = config_with_store(tmp_path, f"postgresql://gw:s3cret@127.0.0.1:{port}/gateway")
    finished = subprocess.run(
        [sys.executable, "-m", "gateway", command, "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert finished.returncode == 3
    assert finished.stderr.splitlines() == [
        f"store unavailable: PostgreSQL at gw@127.0.0.1:{port}/gateway: server unreachable"
        f" ([Errno 111] Connect call failed ('127.0.0.1', {port}))"
    ]
    assert finished.stdout == ""
