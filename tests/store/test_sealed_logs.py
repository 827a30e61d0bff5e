"""The decision log, the block log and the audit log sealed at rest, on both backends:
nothing readable in the raw rows, every view decrypted, partial search exact over sealed
text, damage named, and the re-sealing pass (`keys rotate-data`, and the sealing of rows
written before encryption) losing nothing while writes go on."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.model import AuditEvent, BlockRecord, Channel, Reason
from gateway.services.data_rotation import reseal_store
from gateway.store import open_store
from gateway.store.base import BlockQuery, DecisionQuery, Store
from gateway.store.sealing import PLAIN, DataCipher, DataKeyring, SealedDataError, sealed_key_id
from tests.store.test_decisions import decision
from tests.store.test_store import T0, backend_url

SECRETS = ("Bob.Lead@Example.COM", "+12125550123", "Quarterly pricing for Bob")
INDEX_KEY = os.urandom(32)
K1, K2 = os.urandom(32), os.urandom(32)


def keyed(active: str = "k1", **keys: bytes) -> DataCipher:
    return DataCipher(DataKeyring(keys or {"k1": K1}, active, INDEX_KEY))


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = open_store(url)
    await opened.open()
    await opened.use_data_cipher(keyed())
    yield opened
    await opened.close()


async def raw_rows(url: str, table: str) -> list[tuple[object, ...]]:
    """The table as a copy of the database shows it, read without the gateway."""
    return await raw_columns(url, "*", table)


async def raw_columns(
    url: str, columns: str, table: str = "decisions"
) -> list[tuple[object, ...]]:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite://")) as conn:
            return [tuple(row) for row in conn.execute(f"SELECT {columns} FROM {table}")]
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(f"SELECT {columns} FROM {table}")]
    finally:
        await conn.close()


def holds_plaintext(rows: list[tuple[object, ...]]) -> list[str]:
    text = repr(rows).lower()
    return [secret for secret in SECRETS if secret.lower() in text]


QUOTING_REASON = Reason("SUPPRESSED", f"{SECRETS[0]} opted out: {SECRETS[2]}", "r.s")
"""A reason's message quotes what it is about, as the policy's do."""


async def record_everything(store: Store) -> None:
    await store.record_decisions([
        decision(SECRETS[0], at=0, subject=SECRETS[2]),
        replace(decision(SECRETS[1], at=1, channel=Channel.SMS, codes=("SUPPRESSED",)),
                reasons=(QUOTING_REASON,)),
    ])
    await store.record_block(BlockRecord(
        time=T0, channel=Channel.EMAIL, account="acme", sender="agent@acme.example",
        recipient=SECRETS[0], reasons=(QUOTING_REASON,),
        rules_version="v1", subject=SECRETS[2], evidence={"to": SECRETS[0]},
    ))
    await store.append_audit(AuditEvent(
        time=T0, actor="operator", action="suppression.added", subject=SECRETS[1],
        details={"address": SECRETS[0]},
    ))


async def test_raw_rows_hold_no_recipient_number_or_subject_and_every_view_reads(
    store: Store, url: str
) -> None:
    await record_everything(store)
    for table in ("decisions", "blocks", "audit"):
        assert holds_plaintext(await raw_rows(url, table)) == [], table
    found = await store.query_decisions(DecisionQuery())
    assert {d.recipient for d in found} == {SECRETS[0], SECRETS[1]}
    assert found[-1].subject == SECRETS[2] and found[0].reasons == (QUOTING_REASON,)
    (block,) = await store.query_blocks(BlockQuery(recipient=SECRETS[0].lower()))
    assert block.subject == SECRETS[2] and block.evidence == {"to": SECRETS[0]}
    assert block.reasons == (QUOTING_REASON,)
    (entry,) = await store.audit_events()
    assert entry.subject == SECRETS[1] and entry.details == {"address": SECRETS[0]}
    assert (await store.check_audit()).problem is None


@pytest.mark.parametrize(
    ("recipient", "text", "expected"),
    [
        ("lead@example", None, {0}),
        ("LEAD@EXAMPLE.com", None, {0}),
        ("5550123", None, {1}),
        (None, "PRICING", {0}),
        (None, "pricing for bob", {0}),
        ("example", "nothing like this", set()),
        ("@", None, {0}),
    ],
)
async def test_a_partial_search_over_sealed_text_finds_exactly_the_matches(
    store: Store, recipient: str | None, text: str | None, expected: set[int]
) -> None:
    await record_everything(store)
    query = DecisionQuery(recipient=recipient, text=text)
    found = await store.query_decisions(query)
    assert {int(d.gateway_id[1:]) for d in found} == expected
    summary = await store.decision_summary(
        replace(query, since=T0 - timedelta(days=1), until=T0 + timedelta(days=1)), 3600
    )
    assert summary.total == len(expected)


DIALLED = ("+12125550123", "+12125550199", "+442079460123")
"""Numbers texted or called; beside them, emails whose addresses hold the same digits."""
MAILED = ("desk2125550@example.com", "ops@example.com")


async def index_definitions(url: str, table: str) -> dict[str, str]:
    """Each index of `table` and its definition as the catalogue gives it: its SQL text
    (expressions and all), or on SQLite the columns of a constraint's index, which has none."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite://")) as conn:
            found = {
                name: sql or " ".join(row[2] for row in conn.execute(f"PRAGMA index_info({name})"))
                for name, sql in conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                    (table,),
                )
            }
            return found
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = $1",
            table,
        )
    finally:
        await conn.close()
    return {row["indexname"]: row["indexdef"] for row in rows}


async def test_no_index_of_the_decision_log_is_keyed_by_a_blind_index_or_a_sealed_value(
    store: Store, url: str
) -> None:
    """Every allowed message writes a decision; an index over a value that is random per
    recipient (a blind index, a ciphertext) would take each insert to a random page, the
    cost that kept encryption above its budget, and nothing searches one: erasure and
    export scan for a person's rows, as they do with encryption off."""
    await record_everything(store)
    random_per_row = ("recipient", "recipient_index", "subject", "evidence_json", "reasons_json")
    indexes = await index_definitions(url, "decisions")
    assert "decisions_time" in indexes, indexes
    keyed_randomly = {
        name: [column for column in random_per_row if re.search(rf"\b{column}\b", definition)]
        for name, definition in indexes.items()
    }
    assert {name: columns for name, columns in keyed_randomly.items() if columns} == {}


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("2125550", {0, 1, 3}),
        ("+1212", {0, 1}),
        ("+12125550199", {1}),
        ("0123", {0, 2}),
        ("desk21", {3}),
        ("+44", {2}),
        ("@example", {3, 4}),
        ("55501990", set()),
    ],
)
async def test_numbers_carry_no_signature_and_a_search_for_part_of_one_still_finds_them(
    store: Store, url: str, recipient: str, expected: set[int]
) -> None:
    """A number's signature gave it away to whoever knows other rows' numbers (its digit
    trigrams' bits add up): numbers are searched by reading every row without one."""
    await store.record_decisions(
        [decision(number, at=i, channel=Channel.SMS) for i, number in enumerate(DIALLED)]
        + [decision(address, at=len(DIALLED) + i) for i, address in enumerate(MAILED)]
    )
    terms = {row[0]: row[1] for row in await raw_columns(url, "gateway_id, recipient_terms")}
    assert [terms[f"g{i}"] for i in range(len(DIALLED))] == [0] * len(DIALLED)
    assert all(terms[f"g{len(DIALLED) + i}"] for i in range(len(MAILED)))
    query = DecisionQuery(recipient=recipient)
    assert {int(d.gateway_id[1:]) for d in await store.query_decisions(query)} == expected
    summary = await store.decision_summary(
        replace(query, since=T0 - timedelta(days=1), until=T0 + timedelta(days=1)), 3600
    )
    assert summary.total == len(expected)


async def test_a_search_page_is_filled_past_candidates_that_do_not_match(store: Store) -> None:
    """Every row is a candidate for a two-character term; pages still hold real matches."""
    await store.record_decisions(
        [decision(f"x{i}@example.com", at=i, subject="zz" if i % 3 == 0 else "no")
         for i in range(30)]
    )
    first = await store.query_decisions(DecisionQuery(text="zz", limit=4))
    assert [d.gateway_id for d in first] == ["g27", "g24", "g21", "g18"]
    rest = await store.query_decisions(DecisionQuery(text="zz", limit=100,
                                                     before_id=first[-1].id))
    assert [d.gateway_id for d in rest] == ["g15", "g12", "g9", "g6", "g3", "g0"]


async def execute_raw_sql(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite://")) as conn:
            conn.execute(sql)
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_truncated_ciphertext_is_an_error_naming_the_record(store: Store, url: str) -> None:
    (decision_id,) = await store.record_decisions([decision(SECRETS[0], subject="s")])
    await execute_raw_sql(url, "UPDATE decisions SET subject = substr(subject, 1, 20)")
    with pytest.raises(SealedDataError) as caught:
        await store.get_decision(decision_id)
    assert caught.value.record == f"decision {decision_id}"
    assert SECRETS[0] not in str(caught.value)


async def test_an_allowed_decision_stores_no_reasons_and_a_blocked_one_seals_them(
    store: Store, url: str
) -> None:
    """Nothing to seal for an allowed message: its reasons are stored empty (an AES-GCM
    call saved per message), a blocked one's are sealed, and both read back."""
    allowed_id, blocked_id = await store.record_decisions([
        decision(SECRETS[0], at=0),
        replace(decision(SECRETS[1], at=1, channel=Channel.SMS, codes=("SUPPRESSED",)),
                reasons=(QUOTING_REASON,)),
    ])
    stored = dict(await raw_columns(url, "gateway_id, reasons_json"))
    assert stored["g0"] == ""
    assert sealed_key_id(str(stored["g1"])) == "k1"
    allowed, blocked = await store.get_decision(allowed_id), await store.get_decision(blocked_id)
    assert allowed is not None and blocked is not None
    assert allowed.reasons == ()
    assert blocked.reasons == (QUOTING_REASON,)


async def test_a_blocked_decision_whose_reasons_were_blanked_fails_closed(
    store: Store, url: str
) -> None:
    """Blanked past the gateway, a blocked decision would read as blocked for no reason."""
    (decision_id,) = await store.record_decisions(
        [decision(SECRETS[1], channel=Channel.SMS, codes=("SUPPRESSED",))]
    )
    await execute_raw_sql(url, "UPDATE decisions SET reasons_json = ''")
    with pytest.raises(SealedDataError) as caught:
        await store.get_decision(decision_id)
    assert caught.value.record == f"decision {decision_id}"
    assert "reasons_json" in str(caught.value)


async def test_rotation_reseals_everything_under_the_new_key_while_writes_go_on(
    store: Store, url: str
) -> None:
    await record_everything(store)
    await store.record_decisions([decision(f"p{i}@example.com", at=10 + i) for i in range(300)])
    await store.use_data_cipher(keyed("k2", k1=K1, k2=K2))
    writing = True

    async def keep_sending() -> int:
        sent = 0
        while writing:
            await store.record_decisions([decision(f"live{sent}@example.com", at=1000 + sent)])
            sent += 1
            await asyncio.sleep(0.001)
        return sent

    sender = asyncio.create_task(keep_sending())
    report = await reseal_store(store, "k2", batch=50)
    writing = False
    sent = await sender
    assert report.resealed["decisions"] >= 302 and report.resealed["audit"] == 1
    for table, column in (("decisions", 6), ("blocks", 5)):
        for row in await raw_rows(url, table):
            assert sealed_key_id(str(row[column])) == "k2", table
    found = await store.query_decisions(DecisionQuery(limit=1000))
    assert len(found) == 302 + sent
    assert {d.recipient for d in found} >= {SECRETS[0], "p0@example.com", "live0@example.com"}
    await store.use_data_cipher(keyed("k2", k2=K2))
    assert len(await store.query_decisions(DecisionQuery(limit=1000))) == 302 + sent


async def test_rows_written_before_encryption_are_sealed_and_still_found(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.use_data_cipher(PLAIN)
        await record_everything(store)
        await store.use_data_cipher(keyed())
        assert [d.gateway_id for d in await store.query_decisions(
            DecisionQuery(recipient="lead@"))] == ["g0"]
        await reseal_store(store, "k1")
        for table in ("decisions", "blocks", "audit"):
            assert holds_plaintext(await raw_rows(url, table)) == [], table
        assert [d.gateway_id for d in await store.query_decisions(
            DecisionQuery(recipient="lead@", text="pricing"))] == ["g0"]
        assert len(await store.query_blocks(BlockQuery(recipient=SECRETS[0]))) == 1
        assert (await store.check_audit()).problem is None
    finally:
        await store.close()
