"""The lookup tables sealed at rest (suppressions, consents, contacts, notices, known
locations, deliveries), on both backends with a real data key: every view reads the
plaintext back, the database itself holds none of it, and the lookups find what they found
before encryption, rows written before it included."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.model import AuditEvent, Channel, Consent, ConsentKind, KnownLocation, Suppression
from gateway.store import open_store
from gateway.store.base import (
    ERASED_PREFIX,
    ConsentQuery,
    DeliveryClaim,
    Store,
    SuppressionQuery,
)
from gateway.store.sealing import DataCipher, DataKeyring, SealedDataError

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ERASURE_KEY = b"e" * 32

ADDRESS = "alice.sealed@example.com"
MAILBOX = "alicesealed@example.com"
NUMBER = "+12125550199"
EVIDENCE = "web form 7731, signed by the callee"
SECRETS = (ADDRESS, MAILBOX, NUMBER, "2125550199", EVIDENCE, "alice.sealed", "alicesealed")


@dataclass
class Sealed:
    store: Store
    cipher: DataCipher
    backend: str
    url: str
    path: Path | None


def new_cipher() -> DataCipher:
    return DataCipher(DataKeyring({"k1": os.urandom(32)}, "k1", os.urandom(32)))


def entry(address: str, *, source: str = "import", mailbox: str = "") -> Suppression:
    return Suppression(address, source, "opted out", T0, "ops", mailbox)


def consent(subject: str, evidence: str = EVIDENCE) -> Consent:
    return Consent(subject, Channel.SMS, ConsentKind.EXPRESS_WRITTEN, T0, None, "web", evidence)


async def write_personal_data(store: Store) -> None:
    await store.add_suppressions([entry(ADDRESS, mailbox=MAILBOX), entry(NUMBER, source="sms")])
    await store.add_consents([consent(NUMBER)])
    assert await store.reserve_contact(NUMBER, Channel.SMS, T0, "gw-1", [(5, 86_400)])
    await store.mark_notice_sent(NUMBER, T0)
    await store.set_known_location(NUMBER, KnownLocation("America/New_York", region="NY"))
    assert await store.claim_delivery("idem-1", "Alice.Sealed@Example.com", T0, 60) == (
        DeliveryClaim.CLAIMED
    )
    await store.complete_delivery("idem-1", "Alice.Sealed@Example.com", "up-1")


async def raw_rows(sealed: Sealed, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows read past the store, as someone holding a copy of the database would."""
    if sealed.path is not None:
        with sqlite3.connect(sealed.path) as conn:
            return conn.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchall()
    conn = await asyncpg.connect(sealed.url)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def execute_raw(sealed: Sealed, sql: str, *args: object) -> None:
    if sealed.path is not None:
        with sqlite3.connect(sealed.path) as conn:
            conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)
        return
    conn = await asyncpg.connect(sealed.url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


TABLES = ("suppressions", "consents", "contacts", "notices", "known_locations", "deliveries")


def fold(address: str) -> str:
    """The mailbox rules of these tests: dots and tags of alice's address go."""
    local, _, domain = address.partition("@")
    return f"{local.split('+')[0].replace('.', '')}@{domain}"


async def test_every_view_reads_the_plaintext_back(sealed: Sealed) -> None:
    store = sealed.store
    await write_personal_data(store)
    # As the gateway does at start-up: every entry has its mailbox already, sealed beside
    # its blind index, so nothing is folded.
    assert await store.update_mailboxes(fold, "rules-1") == 0

    assert await store.suppressed([ADDRESS, MAILBOX, NUMBER, "other@example.com"]) == {
        ADDRESS, MAILBOX, NUMBER,
    }
    listed = await store.list_suppressions()
    assert [(s.address, s.source, s.mailbox) for s in listed] == sorted(
        [(ADDRESS, "import", MAILBOX), (NUMBER, "sms", "")]
    )
    assert [s.address for s in await store.suppression_entries([MAILBOX])] == [ADDRESS]
    page = await store.suppression_page(SuppressionQuery(text="SEALED"))
    assert [(s.address, s.mailbox) for s in page] == [(ADDRESS, MAILBOX)]
    assert await store.count_suppressed() == 2

    found = await store.consents_for([NUMBER, "+12125550100"])
    assert found == {NUMBER: (consent(NUMBER),)}
    assert await store.consent_page(ConsentQuery(text="0199")) == [consent(NUMBER)]
    assert await store.known_locations([NUMBER]) == {
        NUMBER: KnownLocation("America/New_York", region="NY")
    }
    assert await store.contact_counts([NUMBER], T0 - timedelta(days=1)) == {NUMBER: 1}
    assert await store.notice_sent_at([NUMBER]) == {NUMBER: T0}
    assert await store.claim_delivery("idem-1", "Alice.Sealed@Example.com", T0, 60) == (
        DeliveryClaim.ALREADY_DELIVERED
    )

    data = await store.personal_data(ADDRESS, MAILBOX)
    assert [(s.address, s.mailbox) for s in data.suppressions] == [(ADDRESS, MAILBOX)]
    # The recipient as the agent wrote it, from its sealed copy.
    assert [(d.delivery_key, d.recipient, d.state) for d in data.deliveries] == [
        ("idem-1", "Alice.Sealed@Example.com", "done")
    ]
    number_data = await store.personal_data(NUMBER)
    assert number_data.consents == (consent(NUMBER),)
    assert number_data.known_location == KnownLocation("America/New_York", region="NY")
    assert [c.gateway_id for c in number_data.contacts] == ["gw-1"]
    assert number_data.notice_sent_at == T0


def contains_secret(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data or s.upper().encode() in data]


async def test_a_listed_entry_shows_its_mailbox_from_its_sealed_copy(sealed: Sealed) -> None:
    """Another replica's store, given no mailbox rules and asked for no mailbox: only the
    sealed copy can say the mailbox."""
    await sealed.store.add_suppressions([entry(ADDRESS, mailbox=MAILBOX)])
    other = open_store(sealed.url)
    await other.open()
    try:
        await other.use_data_cipher(sealed.cipher)
        listed = await other.list_suppressions()
        page = await other.suppression_page(SuppressionQuery())
    finally:
        await other.close()
    assert [(s.address, s.mailbox) for s in listed] == [(ADDRESS, MAILBOX)]
    assert [(s.address, s.mailbox) for s in page] == [(ADDRESS, MAILBOX)]
    ((mailbox, copy),) = await raw_rows(sealed, "SELECT mailbox, mailbox_sealed FROM suppressions")
    assert mailbox == sealed.cipher.blind(MAILBOX)
    assert sealed.cipher.open(str(copy), "suppressions.mailbox", "test") == MAILBOX
    with pytest.raises(SealedDataError):  # bound to its column
        sealed.cipher.open(str(copy), "suppressions.address", "test")


async def test_the_raw_store_holds_no_personal_data(sealed: Sealed) -> None:
    """What a copy shows: SQLite's file and its WAL, PostgreSQL's rows read without the
    gateway."""
    await write_personal_data(sealed.store)
    if sealed.path is None:
        for table in TABLES:
            rows = await raw_rows(sealed, f"SELECT * FROM {table}")
            assert rows, table
            assert contains_secret(repr(rows).encode()) == [], table
        return
    wal = sealed.path.with_name(sealed.path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    assert contains_secret(wal.read_bytes()) == []
    with sqlite3.connect(sealed.path) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    data = sealed.path.read_bytes()
    assert contains_secret(data) == []
    # The same check finds a value written in clear (so it is not vacuous).
    await execute_raw(
        sealed,
        "INSERT INTO notices (recipient, sent_at) VALUES ($1, $2)",
        "+12125550142", T0.isoformat(timespec="microseconds"),
    )
    with sqlite3.connect(sealed.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"+12125550142" in sealed.path.read_bytes()


async def test_suppression_lookups_find_every_spelling_they_found_before(sealed: Sealed) -> None:
    store = sealed.store
    await store.add_suppressions([entry(ADDRESS, mailbox=MAILBOX)])
    other_spelling = "alice.sealed+news@example.com"
    await store.add_suppressions([entry(other_spelling, source="console", mailbox=MAILBOX)])

    assert await store.suppressed([other_spelling]) == {other_spelling}
    assert await store.suppressed([MAILBOX]) == {MAILBOX}
    entries = await store.suppression_entries([MAILBOX])
    assert [(e.address, e.mailbox) for e in entries] == sorted(
        [(ADDRESS, MAILBOX), (other_spelling, MAILBOX)]
    )
    # The same source for the same address refreshes its row, as before.
    assert await store.add_suppressions([entry(ADDRESS, mailbox=MAILBOX)]) == 0
    assert len(await store.list_suppressions()) == 2

    assert await store.remove_suppressions_from_source([other_spelling], "console") == 1
    assert await store.remove_suppressions([MAILBOX]) == 1
    assert await store.suppressed([ADDRESS, MAILBOX, other_spelling]) == frozenset()


async def test_pages_walk_the_sealed_list_once_and_a_search_opens_rows(sealed: Sealed) -> None:
    store = sealed.store
    addresses = [f"walker{n}@example.com" for n in range(7)]
    await store.add_suppressions([entry(a) for a in addresses])
    await store.add_consents([consent(f"+1212555{n:04d}") for n in range(5)])

    seen: list[str] = []
    after = None
    while True:
        page = await store.suppression_page(SuppressionQuery(after=after, limit=3))
        seen += [s.address for s in page]
        if len(page) < 3:
            break
        after = (page[-1].address, page[-1].source)
    assert sorted(seen) == addresses

    searched: list[str] = []
    after = None
    while True:
        page = await store.suppression_page(SuppressionQuery("WALKER", after, limit=2))
        searched += [s.address for s in page]
        if len(page) < 2:
            break
        after = (page[-1].address, page[-1].source)
    assert sorted(searched) == addresses

    consents: list[str] = []
    key = None
    while True:
        rows = await store.consent_page(ConsentQuery(text="555", after=key, limit=2))
        consents += [c.subject for c in rows]
        if len(rows) < 2:
            break
        key = (rows[-1].subject, rows[-1].channel, rows[-1].kind, rows[-1].obtained_at)
    assert sorted(consents) == [f"+1212555{n:04d}" for n in range(5)]


async def test_a_row_written_before_encryption_is_still_found(sealed: Sealed) -> None:
    legacy = "legacy.owner@example.com"
    created = T0 if sealed.path is None else T0.isoformat(timespec="microseconds")
    await execute_raw(
        sealed,
        "INSERT INTO suppressions (address, source, reason, actor, created_at, mailbox)"
        " VALUES ($1, 'import', 'old', 'ops', $2, '')",
        legacy, created,
    )
    store = sealed.store
    assert await store.suppressed([legacy]) == {legacy}
    assert [s.address for s in await store.list_suppressions()] == [legacy]
    assert [s.address for s in await store.suppression_entries([legacy])] == [legacy]
    # A second source's entry is sealed; both count as one suppressed address.
    assert await store.add_suppressions([entry(legacy, source="console")]) == 0
    assert await store.suppressed([legacy]) == {legacy}
    assert await store.remove_suppressions([legacy]) == 1
    assert await store.list_suppressions() == []


async def test_erasure_removes_sealed_rows_and_leaves_the_erased_hash(sealed: Sealed) -> None:
    store = sealed.store
    await write_personal_data(store)
    counts = await store.erase_personal_data(ADDRESS, T0, "ops", MAILBOX)
    assert counts["suppressions"] == 1
    assert counts["deliveries"] == 1
    number_counts = await store.erase_personal_data(NUMBER, T0, "ops")
    assert {t: number_counts[t] for t in TABLES} == {
        "suppressions": 1, "consents": 1, "contacts": 1, "notices": 1, "known_locations": 1,
        "deliveries": 0,
    }

    rows = await raw_rows(sealed, "SELECT address, mailbox, address_sealed FROM suppressions")
    assert len(rows) == 2
    assert all(str(address).startswith(ERASED_PREFIX) for address, _, _ in rows)
    assert all(sealed_copy == "" for _, _, sealed_copy in rows)
    for table in TABLES[1:]:
        assert await raw_rows(sealed, f"SELECT * FROM {table}") == [], table
    # The opt-outs hold through the hashes, for the address and its mailbox.
    assert await store.suppressed([ADDRESS, MAILBOX, NUMBER]) == {ADDRESS, MAILBOX, NUMBER}
    data = await store.personal_data(ADDRESS, MAILBOX)
    assert data.suppressions == () and len(data.erased_suppressions) == 1


async def test_a_truncated_ciphertext_names_the_row_and_lookups_still_answer(
    sealed: Sealed,
) -> None:
    store = sealed.store
    victim = "victim.person@example.com"
    await store.add_suppressions([entry(victim), entry("bystander@example.com")])
    stored = sealed.cipher.blind(victim)
    (sealed_copy,) = (await raw_rows(
        sealed, "SELECT address_sealed FROM suppressions WHERE address = $1", stored
    ))[0]
    await execute_raw(
        sealed, "UPDATE suppressions SET address_sealed = $1 WHERE address = $2",
        str(sealed_copy)[:12], stored,
    )

    with pytest.raises(SealedDataError) as raised:
        await store.list_suppressions()
    assert raised.value.record.startswith(f"suppressions row {stored}")
    assert "victim" not in str(raised.value)
    assert await store.suppressed([victim, "bystander@example.com"]) == {
        victim, "bystander@example.com",
    }


async def test_consent_evidence_that_was_altered_does_not_open(sealed: Sealed) -> None:
    store = sealed.store
    await store.add_consents([consent(NUMBER)])
    (evidence,) = (await raw_rows(sealed, "SELECT evidence FROM consents"))[0]
    await execute_raw(sealed, "UPDATE consents SET evidence = $1", str(evidence)[:-4] + "AAAA")
    with pytest.raises(SealedDataError) as raised:
        await store.consents_for([NUMBER])
    assert raised.value.record.startswith("consents row ~")
    assert NUMBER not in str(raised.value)


OWNER = "+12125550111"


async def a_blind_index_read_off_the_file(sealed: Sealed, number: str) -> str:
    """What a holder of the file learns without a key: the index a notice row is under."""
    await sealed.store.mark_notice_sent(number, T0)
    ((stored,),) = await raw_rows(sealed, "SELECT recipient FROM notices")
    return str(stored)


async def test_a_consent_moved_to_another_blind_index_stays_its_owners(sealed: Sealed) -> None:
    """The sealed subject says whose a consent is, not the index it was found under: a row
    moved onto a number that never consented must not let a text reach that number."""
    await sealed.store.add_consents([consent(OWNER)])
    victim = await a_blind_index_read_off_the_file(sealed, NUMBER)
    await execute_raw(sealed, "UPDATE consents SET subject = $1", victim)
    found = await sealed.store.consents_for([NUMBER])
    assert NUMBER not in found
    assert [c.subject for c in found.get(OWNER, ())] == [OWNER]


async def test_a_consent_forged_under_a_blind_index_without_ciphertext_is_nobodys(
    sealed: Sealed,
) -> None:
    victim = await a_blind_index_read_off_the_file(sealed, NUMBER)
    await execute_raw(
        sealed,
        "INSERT INTO consents (subject, channel, kind, obtained_at, expires_at, source,"
        " evidence, subject_sealed) VALUES ($1, 'sms', 'express-written',"
        " '2024-05-01T12:00:00.123456+00:00', NULL, 'web', 'forged', '')",
        victim,
    )
    assert NUMBER not in await sealed.store.consents_for([NUMBER])


async def test_a_damaged_sealed_subject_fails_closed(sealed: Sealed) -> None:
    await sealed.store.add_consents([consent(NUMBER)])
    ((copy,),) = await raw_rows(sealed, "SELECT subject_sealed FROM consents")
    await execute_raw(sealed, "UPDATE consents SET subject_sealed = $1", str(copy)[:12])
    with pytest.raises(SealedDataError):
        await sealed.store.consents_for([NUMBER])


async def test_folding_reads_the_sealed_address(sealed: Sealed) -> None:
    """An import without mailboxes is folded later: the addresses are opened to be folded,
    and the mailbox written is a blind index the lookups find."""
    store = sealed.store

    def audit(new: int) -> AuditEvent:
        return AuditEvent(time=T0, actor="ops", action="suppression.import",
                          subject="list.csv", details={"new": new})

    added = await store.import_suppressions(
        [ADDRESS, NUMBER], source="import", reason="list", actor="ops", time=T0, audit=audit
    )
    assert added == 2
    assert await store.suppressed([MAILBOX]) == frozenset()
    assert await store.update_mailboxes(fold, "rules-1") == 1
    assert await store.suppressed([MAILBOX]) == {MAILBOX}
    (mailbox,) = (await raw_rows(
        sealed, "SELECT mailbox FROM suppressions WHERE address = $1", sealed.cipher.blind(ADDRESS)
    ))[0]
    assert mailbox == sealed.cipher.blind(MAILBOX)
    assert [(s.address, s.mailbox) for s in await store.suppression_entries([ADDRESS])] == [
        (ADDRESS, MAILBOX)
    ]
    (copy,) = (await raw_rows(
        sealed, "SELECT mailbox_sealed FROM suppressions WHERE address = $1",
        sealed.cipher.blind(ADDRESS),
    ))[0]
    assert sealed.cipher.open(str(copy), "suppressions.mailbox", "test") == MAILBOX
