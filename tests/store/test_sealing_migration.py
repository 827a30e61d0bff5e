"""A database written before encryption, sealed by the background pass once the data key
is on (gateway/services/data_rotation.py), on both backends: its lookup columns become
blind indexes with their sealed copies, so the raw store holds no address, number or
mailbox in clear; every lookup, listing and erasure works as before; a row already under
the blind form merges with its predecessor; and a second pass changes nothing."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.model import Channel, KnownLocation, Suppression
from gateway.services.data_rotation import reseal_store
from gateway.store import open_store
from gateway.store.base import ERASED_PREFIX, DecisionQuery, DeliveryClaim
from gateway.store.migrations import (
    discover_migrations,
    migration_directory,
    run_migrations,
    run_migrations_async,
)
from gateway.store.postgres.connection import PostgresMigrationTarget
from gateway.store.resealing import SEALED_TABLES
from gateway.store.sealing import BLIND_PREFIX, PLAIN, SEALED_PREFIX
from gateway.store.sqlite.resealing import _reseal_batch
from gateway.store.sqlite.sql import SqliteMigrationTarget
from tests.store.test_sealed_lookup_tables import (
    ADDRESS,
    ERASURE_KEY,
    MAILBOX,
    NUMBER,
    SECRETS,
    T0,
    TABLES,
    Sealed,
    consent,
    entry,
    fold,
    new_cipher,
    raw_rows,
)
from tests.store.test_store import backend_url

SPELLING = "Alice.Sealed@Example.com"
"""How the agent wrote the delivery's recipient."""
OTHER_SPELLING = "alice.sealed+news@example.com"
GONE = "gone.person@example.com"
CLEAR = (*SECRETS, SPELLING, OTHER_SPELLING, GONE, "gone.person")

LOOKUP_COLUMNS = {
    "suppressions": ("address", "mailbox"),
    "consents": ("subject",),
    "contacts": ("recipient",),
    "notices": ("recipient",),
    "known_locations": ("number",),
    "deliveries": ("recipient",),
}


@pytest.fixture(params=["sqlite", "postgres"])
async def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sealed]:
    """A store written with encryption off (the PLAIN cipher) holding one person's data in
    every lookup table, and an erased opt-out; its data key is not given yet."""
    url = backend_url(request, tmp_path)
    store = open_store(url)
    await store.open()
    await store.use_data_cipher(PLAIN)
    await store.use_erasure_key(ERASURE_KEY)
    await store.add_suppressions([
        entry(ADDRESS, mailbox=MAILBOX),
        entry(OTHER_SPELLING, source="console", mailbox=MAILBOX),
        entry(NUMBER, source="sms"),
        entry(GONE, mailbox="goneperson@example.com"),
    ])
    await store.erase_personal_data(GONE, T0, "ops", "goneperson@example.com")
    await store.add_consents([consent(NUMBER)])
    assert await store.reserve_contact(NUMBER, Channel.SMS, T0, "gw-1", [(5, 86_400)])
    await store.mark_notice_sent(NUMBER, T0)
    await store.set_known_location(NUMBER, KnownLocation("America/New_York", region="NY"))
    assert await store.claim_delivery("idem-1", SPELLING, T0, 60) == DeliveryClaim.CLAIMED
    await store.complete_delivery("idem-1", SPELLING, "up-1")
    path = tmp_path / "data" / "gateway.db" if request.param == "sqlite" else None
    yield Sealed(store, new_cipher(), request.param, url, path)
    await store.close()


def secrets_in(data: bytes) -> list[str]:
    return [s for s in CLEAR if s.encode() in data or s.upper().encode() in data]


async def raw_dump(sealed: Sealed) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the lookup tables as stored, in a stable order."""
    return {
        table: sorted(await raw_rows(sealed, f"SELECT * FROM {table}"), key=repr)
        for table in TABLES
    }


def file_bytes(path: Path) -> bytes:
    """The SQLite file with its WAL folded in, as a copy of it would be."""
    with sqlite3.connect(path) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    return path.read_bytes()


async def execute_raw(sealed: Sealed, sql: str, *args: object) -> None:
    """A statement past the store ($1, $2, ... on both backends)."""
    if sealed.path is not None:
        with sqlite3.connect(sealed.path) as conn:
            conn.execute(re.sub(r"\$(\d+)", r"?\1", sql), args)
        return
    conn = await asyncpg.connect(sealed.url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def assert_no_lookup_value_in_clear(sealed: Sealed) -> None:
    """Every lookup column holds a blind index, an erased row's hash, or nothing."""
    for table, columns in LOOKUP_COLUMNS.items():
        stored = await raw_rows(sealed, f"SELECT {', '.join(columns)} FROM {table}")
        assert all(
            value == "" or str(value).startswith((BLIND_PREFIX, ERASED_PREFIX))
            for row in stored for value in row
        ), (table, stored)


async def seal(sealed: Sealed) -> dict[str, int]:
    await sealed.store.use_data_cipher(sealed.cipher)
    return (await reseal_store(sealed.store, sealed.cipher.active_key_id)).resealed


async def test_the_pass_leaves_no_lookup_value_in_clear(legacy: Sealed) -> None:
    before = await raw_dump(legacy)
    assert secrets_in(repr(before).encode())  # the check finds what is there
    if legacy.path is not None:
        assert secrets_in(file_bytes(legacy.path))

    resealed = await seal(legacy)

    # Every suppression: the erased row too, for its reason.
    assert {table: resealed[table] for table in TABLES} == {
        "suppressions": 4, "consents": 1, "contacts": 1, "notices": 1, "known_locations": 1,
        "deliveries": 1,
    }
    after = await raw_dump(legacy)
    assert all(after.values())
    assert secrets_in(repr(after).encode()) == []
    await assert_no_lookup_value_in_clear(legacy)
    if legacy.path is not None:
        assert secrets_in(file_bytes(legacy.path)) == []

    # A second pass finds nothing to do and writes nothing.
    again = await reseal_store(legacy.store, legacy.cipher.active_key_id)
    assert set(again.resealed.values()) == {0}
    assert await raw_dump(legacy) == after


async def test_sqlite_zeroes_what_the_pass_rewrites_where_secure_delete_is_off(
    tmp_path: Path,
) -> None:
    """Debian builds SQLite with secure_delete on by default; other builds leave the bytes
    of rewritten cells in the file's free space unless the pass turns it on itself."""
    path = tmp_path / "gateway.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.add_suppressions([entry(f"clear{n}.person@example.com") for n in range(50)])
    await store.close()
    cipher = new_cipher()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA secure_delete = OFF")
        for table in SEALED_TABLES:
            _reseal_batch(conn, table, None, 1000, cipher)
        assert conn.execute("PRAGMA secure_delete").fetchone() == (0,)
    finally:
        conn.close()
    assert b"clear" not in file_bytes(path)
    with sqlite3.connect(path) as conn:
        assert len(conn.execute("SELECT * FROM suppressions").fetchall()) == 50


async def test_after_the_pass_every_lookup_and_view_reads_as_before(legacy: Sealed) -> None:
    await seal(legacy)
    # A store of its own, as another replica: it was given no mailbox rules, so a mailbox
    # it shows comes from its sealed copy.
    store = open_store(legacy.url)
    await store.open()
    try:
        await store.use_data_cipher(legacy.cipher)
        await store.use_erasure_key(ERASURE_KEY)
        assert await store.suppressed([ADDRESS, MAILBOX, OTHER_SPELLING, NUMBER, GONE]) == {
            ADDRESS, MAILBOX, OTHER_SPELLING, NUMBER, GONE,
        }
        listed = await store.list_suppressions()
        assert sorted((s.address, s.source, s.mailbox) for s in listed if s.source != "erased") == [
            (NUMBER, "sms", ""), (OTHER_SPELLING, "console", MAILBOX),
            (ADDRESS, "import", MAILBOX),
        ]
        assert [s.address for s in await store.suppression_entries([MAILBOX])] == [
            OTHER_SPELLING, ADDRESS,
        ]
        assert await store.consents_for([NUMBER]) == {NUMBER: (consent(NUMBER),)}
        assert await store.known_locations([NUMBER]) == {
            NUMBER: KnownLocation("America/New_York", region="NY")
        }
        assert await store.contact_counts([NUMBER], T0 - timedelta(days=1)) == {NUMBER: 1}
        assert await store.notice_sent_at([NUMBER]) == {NUMBER: T0}
        assert await store.claim_delivery("idem-1", "alice.sealed@example.com", T0, 60) == (
            DeliveryClaim.ALREADY_DELIVERED
        )

        data = await store.personal_data(ADDRESS, MAILBOX)
        assert [(s.address, s.mailbox) for s in data.suppressions] == [
            (OTHER_SPELLING, MAILBOX), (ADDRESS, MAILBOX),
        ]
        assert [(d.delivery_key, d.recipient, d.state) for d in data.deliveries] == [
            ("idem-1", SPELLING, "done")
        ]
        number_data = await store.personal_data(NUMBER)
        assert number_data.consents == (consent(NUMBER),)
        assert [c.gateway_id for c in number_data.contacts] == ["gw-1"]
        assert number_data.notice_sent_at == T0

        counts = await store.erase_personal_data(ADDRESS, T0, "ops", MAILBOX)
        assert (counts["suppressions"], counts["deliveries"]) == (2, 1)
        counts = await store.erase_personal_data(NUMBER, T0, "ops")
        assert {t: counts[t] for t in TABLES[:5]} == {
            "suppressions": 1, "consents": 1, "contacts": 1, "notices": 1, "known_locations": 1,
        }
        for table in TABLES[1:]:
            assert await raw_rows(legacy, f"SELECT * FROM {table}") == [], table
        rows = await raw_rows(
            legacy, "SELECT address, address_sealed, mailbox_sealed FROM suppressions"
        )
        assert len(rows) == 3
        assert all(str(a).startswith(ERASED_PREFIX) and s == m == "" for a, s, m in rows)
        assert await store.suppressed([ADDRESS, MAILBOX, NUMBER, GONE]) == {
            ADDRESS, MAILBOX, NUMBER, GONE,
        }
    finally:
        await store.close()


async def test_a_row_already_under_its_blind_index_merges_with_its_predecessor(
    legacy: Sealed,
) -> None:
    """Written after encryption was on while the row in clear was still there: after the
    pass one row is left, the newer suppression and notice, the first consent recorded,
    the location set last, and a delivered claim over a pending one."""
    store = legacy.store
    later = T0 + timedelta(hours=1)
    # Under PLAIN still: a second legacy entry, newer than its successor written below, and
    # two spellings of one recipient claimed for one key (the pass folds them to one).
    await store.add_suppressions([Suppression(NUMBER, "console", "first", later, "ops")])
    assert await store.claim_delivery("idem-2", "Bob@Example.com", T0, 60) == (
        DeliveryClaim.CLAIMED
    )
    await store.complete_delivery("idem-2", "bob@example.com", "up-2")
    await store.complete_delivery("idem-3", "Carol@Example.com", "up-3")
    assert await store.claim_delivery("idem-3", "carol@example.com", later, 60) == (
        DeliveryClaim.CLAIMED
    )

    await store.use_data_cipher(legacy.cipher)
    await store.add_suppressions([
        Suppression(ADDRESS, "import", "renewed", later, "ops", MAILBOX),
        Suppression(NUMBER, "console", "second", T0, "ops"),
    ])
    await store.add_consents([consent(NUMBER, evidence="recorded again")])
    await store.mark_notice_sent(NUMBER, later)
    await store.set_known_location(NUMBER, KnownLocation("America/Chicago", region="IL"))
    assert len(await raw_rows(legacy, "SELECT * FROM suppressions")) == 7
    assert len(await raw_rows(legacy, "SELECT * FROM consents")) == 2

    resealed = await reseal_store(store, legacy.cipher.active_key_id)

    # Converted, or gone into the row under its blind index, and the erased row's reason
    # sealed.
    assert resealed.resealed["suppressions"] == 5
    entries = {(s.address, s.source): s for s in await store.list_suppressions()}
    assert (entries[ADDRESS, "import"].reason, entries[ADDRESS, "import"].time) == (
        "renewed", later
    )
    assert entries[NUMBER, "console"].reason == "first"
    assert len(entries) == 5
    assert await store.count_suppressed() == 4
    assert await store.consents_for([NUMBER]) == {NUMBER: (consent(NUMBER),)}
    assert await store.notice_sent_at([NUMBER]) == {NUMBER: later}
    assert await store.known_locations([NUMBER]) == {
        NUMBER: KnownLocation("America/Chicago", region="IL")
    }
    for table in ("consents", "notices", "known_locations"):
        assert len(await raw_rows(legacy, f"SELECT * FROM {table}")) == 1, table
    deliveries = await raw_rows(
        legacy, "SELECT delivery_key, state, upstream_id FROM deliveries ORDER BY delivery_key"
    )
    assert deliveries == [("idem-1", "done", "up-1"), ("idem-2", "done", "up-2"),
                          ("idem-3", "done", "up-3")]
    for spelling, key in (("BOB@example.com", "idem-2"), ("carol@EXAMPLE.com", "idem-3")):
        assert await store.claim_delivery(key, spelling, later, 60) == (
            DeliveryClaim.ALREADY_DELIVERED
        )
    assert secrets_in(repr(await raw_dump(legacy)).encode()) == []
    await assert_no_lookup_value_in_clear(legacy)


async def test_postgresql_a_writer_racing_the_pass_collides_and_the_pass_merges_at_once(
    postgres_url: str,
) -> None:
    """A notice written under the blind key while the pass converts the one in clear: the
    conversion collides with it, the pass reads the row in clear again and merges the two
    (the later notice stays), and finishes."""
    store = open_store(postgres_url)
    await store.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        await store.mark_notice_sent(NUMBER, T0)
        cipher = new_cipher()
        await store.use_data_cipher(cipher)
        later = T0 + timedelta(hours=1)
        racing = writer.transaction()
        await racing.start()
        await writer.execute(
            "INSERT INTO notices (recipient, sent_at) VALUES ($1, $2)", cipher.blind(NUMBER), later
        )
        sealing = asyncio.ensure_future(reseal_store(store, cipher.active_key_id))
        # The pass's conversion waits on the writer's uncommitted row under the same key.
        await waiting_sessions(postgres_url, 1, sealing)
        await racing.commit()
        report = await sealing
        assert report.resealed["notices"] == 1 and report.skipped == 0 and report.done
        rows = await writer.fetch("SELECT recipient, sent_at FROM notices")
        assert [tuple(r) for r in rows] == [(cipher.blind(NUMBER), later)]
        assert await store.notice_sent_at([NUMBER]) == {NUMBER: later}
    finally:
        await writer.close()
        await store.close()


async def waiting_sessions(
    url: str, at_least: int, *tasks: asyncio.Future[object]
) -> None:
    """Until `at_least` of the store's sessions wait on a lock (read outside any
    transaction, which would keep showing the first snapshot); a task that ends instead
    fails the test at once."""
    observer = await asyncpg.connect(url)
    try:
        while await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'compliance-gateway' AND wait_event_type = 'Lock'"
        ) < at_least:
            assert not any(task.done() for task in tasks), tasks
            await asyncio.sleep(0.01)
    finally:
        await observer.close()


async def test_postgresql_a_claim_racing_the_pass_finds_the_converted_delivery(
    postgres_url: str,
) -> None:
    """A delivered claim in clear being converted while a retry claims it: the claim waits
    for the conversion and then finds the claim under its blind key, delivered. Had it read
    the row in clear without locking it, its insert under that form would come after the
    conversion and claim the copy again: a second send."""
    store = open_store(postgres_url)
    await store.open()
    holder = await asyncpg.connect(postgres_url)
    try:
        assert await store.claim_delivery("idem-1", SPELLING, T0, 60) == DeliveryClaim.CLAIMED
        await store.complete_delivery("idem-1", SPELLING, "up-1")
        cipher = new_cipher()
        await store.use_data_cipher(cipher)
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM deliveries WHERE recipient = $1 FOR UPDATE", SPELLING)
        sealing = asyncio.ensure_future(reseal_store(store, cipher.active_key_id))
        await waiting_sessions(postgres_url, 1, sealing)
        claim = asyncio.ensure_future(store.claim_delivery("idem-1", SPELLING, T0, 60))
        await waiting_sessions(postgres_url, 2, sealing, claim)
        await held.commit()
        assert (await sealing).resealed["deliveries"] == 1
        assert await claim == DeliveryClaim.ALREADY_DELIVERED
        assert await holder.fetch("SELECT recipient, state FROM deliveries") == [
            (cipher.blind("alice.sealed@example.com"), "done")
        ]
    finally:
        await holder.close()
        await store.close()


# --- migration 0018 ------------------------------------------------------------------------


async def migrated_up_to(version: int, backend: str, url: str, path: Path | None) -> None:
    """A database migrated up to `version` only, as an earlier release left it."""
    before = [m for m in discover_migrations(migration_directory(backend))
              if m.version <= version]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            run_migrations(SqliteMigrationTarget(conn), before)
        finally:
            conn.close()
        return
    connection = await asyncpg.connect(url)
    try:
        await run_migrations_async(PostgresMigrationTarget(connection), before)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def sealed_at_0017(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Sealed]:
    """A database of the previous release run with encryption on: its suppressions hold a
    sealed address and a blind mailbox with no sealed copy, beside an entry written before
    encryption, a number and an erased row; the mailboxes were folded and a pass finished."""
    url = backend_url(request, tmp_path)
    path = tmp_path / "data" / "gateway.db" if request.param == "sqlite" else None
    await migrated_up_to(17, request.param, url, path)
    sealed = Sealed(open_store(url), new_cipher(), request.param, url, path)
    cipher = sealed.cipher
    created = T0 if path is None else T0.isoformat(timespec="microseconds")
    rows = [
        (cipher.blind(ADDRESS), cipher.blind(MAILBOX),
         cipher.seal(ADDRESS, "suppressions.address")),
        (cipher.blind(NUMBER), "", cipher.seal(NUMBER, "suppressions.address")),
        ("legacy.owner@example.com", "legacyowner@example.com", ""),
        ("+12125550100", "", ""),
        (ERASED_PREFIX + "ab" * 32, ERASED_PREFIX + "cd" * 32, ""),
    ]
    for address, mailbox, address_sealed in rows:
        await execute_raw(
            sealed,
            "INSERT INTO suppressions (address, source, reason, actor, created_at, mailbox,"
            " address_sealed) VALUES ($1, 'import', 'old', 'ops', $2, $3, $4)",
            address, created, mailbox, address_sealed,
        )
    for name in ("mailbox_rules_version", "resealed-through:data-key:k1"):
        await execute_raw(sealed, "INSERT INTO settings (name, value) VALUES ($1, 'x')", name)
    await sealed.store.open()
    yield sealed
    await sealed.store.close()


async def test_0018_flags_the_entries_to_fold_and_has_them_folded_again(
    sealed_at_0017: Sealed,
) -> None:
    sealed = sealed_at_0017
    cipher = sealed.cipher
    flags = dict(await raw_rows(sealed, "SELECT address, is_email FROM suppressions"))
    assert {address: bool(flag) for address, flag in flags.items()} == {
        cipher.blind(ADDRESS): True,
        cipher.blind(NUMBER): True,  # sealed: not known until opened
        "legacy.owner@example.com": True,
        "+12125550100": False,
        ERASED_PREFIX + "ab" * 32: False,
    }
    # Sealed mailboxes without copies: the rules version goes, so every entry is folded
    # again; and the pass (which now converts lookup columns) runs again.
    assert await raw_rows(sealed, "SELECT name FROM settings WHERE name IN"
                          " ('mailbox_rules_version', 'resealed-through:data-key:k1')") == []

    store = sealed.store
    await store.use_data_cipher(cipher)
    # The sealed email gets its mailbox's sealed copy; the sealed number, opened once, is
    # flagged as no email.
    assert await store.update_mailboxes(fold, "rules-1") == 1
    mailbox_sealed = dict(await raw_rows(
        sealed, "SELECT address, mailbox_sealed FROM suppressions WHERE address = $1",
        cipher.blind(ADDRESS),
    ))[cipher.blind(ADDRESS)]
    assert cipher.open(str(mailbox_sealed), "suppressions.mailbox", "test") == MAILBOX
    assert dict(await raw_rows(
        sealed, "SELECT address, is_email FROM suppressions WHERE address = $1",
        cipher.blind(NUMBER),
    )) == {cipher.blind(NUMBER): False}
    # The number's sealed address damaged: opening it would fail, and no folding does,
    # not even one of every entry under new rules.
    await execute_raw(
        sealed, "UPDATE suppressions SET address_sealed = $1 WHERE address = $2",
        cipher.seal(NUMBER, "suppressions.address")[:12], cipher.blind(NUMBER),
    )
    assert await store.update_mailboxes(fold, "rules-1") == 0
    assert await store.update_mailboxes(fold, "rules-2") == 0

    fresh = open_store(sealed.url)
    await fresh.open()
    try:
        await fresh.use_data_cipher(cipher)
        mailboxes = {
            s.address: s.mailbox
            for s in await fresh.suppression_entries([ADDRESS, "legacy.owner@example.com"])
        }
    finally:
        await fresh.close()
    assert mailboxes == {ADDRESS: MAILBOX, "legacy.owner@example.com": "legacyowner@example.com"}


# --- migration 0019 ------------------------------------------------------------------------

WHERE_THEY_LIVE = {
    "+12125550142": KnownLocation("America/New_York", 40.748417, -73.985667, "US-NY", "10118"),
    "+13125550143": KnownLocation("America/Chicago", latitude=41.878876),
    "+14155550144": KnownLocation(region="US-CA"),
}


@pytest.fixture(params=["sqlite", "postgres"])
def unopened(request: pytest.FixtureRequest, tmp_path: Path) -> Sealed:
    """A new database of either backend, and a data key; the store is not opened (so no
    migration has run)."""
    url = backend_url(request, tmp_path)
    path = tmp_path / "data" / "gateway.db" if request.param == "sqlite" else None
    return Sealed(open_store(url), new_cipher(), request.param, url, path)


@pytest.fixture
async def locations_at_0018(unopened: Sealed) -> AsyncIterator[Sealed]:
    """A database of the previous release holding WHERE_THEY_LIVE in the columns 0019
    empties: one number under its blind index, the others in clear; a pass had finished."""
    sealed = unopened
    await migrated_up_to(18, sealed.backend, sealed.url, sealed.path)
    first = next(iter(WHERE_THEY_LIVE))
    for number, where in WHERE_THEY_LIVE.items():
        await execute_raw(
            sealed,
            "INSERT INTO known_locations (number, timezone, latitude, longitude, region,"
            " postal_code) VALUES ($1, $2, $3, $4, $5, $6)",
            sealed.cipher.blind(number) if number == first else number,
            where.timezone, where.latitude, where.longitude, where.region, where.postal_code,
        )
    await execute_raw(sealed, "INSERT INTO settings (name, value) VALUES ($1, 'done')",
                      "resealed-through:data-key:k1")
    yield sealed
    await sealed.store.close()


async def test_0019_moves_known_locations_into_one_sealed_document(
    locations_at_0018: Sealed,
) -> None:
    """Each keeps its location through the migration and the pass, which runs again after
    it; then no column shows where anyone lives."""
    sealed = locations_at_0018
    path = sealed.path
    await sealed.store.open()
    try:
        assert await raw_rows(sealed, "SELECT name FROM settings WHERE name LIKE 'resealed%'") == []
        assert await raw_rows(
            sealed, "SELECT DISTINCT timezone, latitude, longitude, region, postal_code"
            " FROM known_locations") == [("", None, None, "", "")]
        resealed = await seal(sealed)
        assert resealed["known_locations"] == 3
        locations = await raw_rows(sealed, "SELECT number, location FROM known_locations")
        assert sorted(str(number) for number, _ in locations) == sorted(
            sealed.cipher.blind(number) for number in WHERE_THEY_LIVE)
        assert all(str(location).startswith(SEALED_PREFIX) for _, location in locations)
        assert await sealed.store.known_locations(WHERE_THEY_LIVE) == WHERE_THEY_LIVE
    finally:
        await sealed.store.close()
    if path is not None:
        assert [part for part in ("New_York", "Chicago", "US-CA", "10118", "40.748417")
                if part.encode() in file_bytes(path)] == []


# --- migration 0020 ------------------------------------------------------------------------


UNPARSED = "212 555-0142 x7"


async def test_0020_drops_the_signatures_numbers_were_given(unopened: Sealed) -> None:
    """Decisions recorded by the previous release: a text's and a call's recipient signature
    goes (it gave the number away), an email's stays (its search needs it)."""
    sealed = unopened
    await migrated_up_to(19, sealed.backend, sealed.url, sealed.path)
    at = T0 if sealed.path is None else T0.isoformat(timespec="microseconds")
    for channel, recipient in (("sms", "+12125550123"), ("call", "+12125550199"),
                               ("email", "lead@example.com"), ("sms", UNPARSED)):
        await execute_raw(
            sealed,
            "INSERT INTO decisions (time, channel, account, sender, recipient,"
            " recipient_lower, purpose, outcome, reasons_json, reason_codes, rules_version,"
            " recipient_terms) VALUES ($1, $2, 'acme', 's', $3, '', 'marketing', 'allowed',"
            " '[]', ',', 'v1', $4)",
            at, channel, sealed.cipher.seal(recipient, "decisions.recipient"),
            sealed.cipher.signature(recipient),
        )
    await sealed.store.open()
    try:
        await sealed.store.use_data_cipher(sealed.cipher)
        # A number kept as the agent wrote it (it did not parse) lost its signature too.
        found = await sealed.store.query_decisions(DecisionQuery(recipient="555-0142"))
        assert [d.recipient for d in found] == [UNPARSED]
    finally:
        await sealed.store.close()
    terms = sorted(await raw_rows(sealed, "SELECT channel, recipient_terms FROM decisions"))
    assert terms == [("call", 0), ("email", sealed.cipher.signature("lead@example.com")),
                     ("sms", 0), ("sms", 0)]
