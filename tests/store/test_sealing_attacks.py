"""Attacks on encryption at rest (issue 21), on both backends with a real data key: what a
copy of the store still shows, what a damaged value does, and what the keys do not cover.

A test marked xfail(strict=True) proves a problem still open (its reason says which and
where); the others check attacks that fail, and must keep failing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import random
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.addresses import key_and_mailbox, suppression_keys
from gateway.config.settings import (
    PACKAGE_RULES_DIR,
    Config,
    ConfigError,
    build_config,
    load_config,
)
from gateway.model import (
    AuditEvent,
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    DecisionOutcome,
    DecisionRecord,
    KnownLocation,
    Purpose,
    Reason,
    Suppression,
)
from gateway.rules.mailbox_loader import load_mailbox_rules
from gateway.runtime.clock import Clock
from gateway.server import Services
from gateway.services import data_key_use
from gateway.services.data_keys import FINGERPRINT, RETIRED
from gateway.services.data_rotation import (
    refuse_clear_values_once_a_pass_finishes,
    reseal_in_background,
    reseal_store,
)
from gateway.services.shared_keys import ERASURE_KEY
from gateway.store import open_store
from gateway.store.audit_chain import entry_hash
from gateway.store.base import BlockQuery, ConsentQuery, StoreUnavailable, erased_address
from gateway.store.postgres import resealing as postgres_resealing
from gateway.store.resealing import SEALED_TABLES
from gateway.store.sealing import (
    SEALED_PREFIX,
    DataCipher,
    DataKeyring,
    sealed_key_id,
    trigrams,
)
from tests.conftest import write_config
from tests.store.test_sealed_lookup_tables import (
    ADDRESS,
    NUMBER,
    T0,
    Sealed,
    execute_raw,
    new_cipher,
    raw_rows,
)
from tests.store.test_sealed_lookup_tables import (
    ERASURE_KEY as ERASED_ROWS_KEY,
)
from tests.store.test_sealing_migration import waiting_sessions

# --- what a copy of the store shows ---------------------------------------------------------


async def test_a_suppression_reason_quoting_the_person_is_not_in_clear(sealed: Sealed) -> None:
    reasons = {
        NUMBER: f"replied 'STOP texting me, I am Alice at {NUMBER}'",  # the webhook's format
        ADDRESS: f"asked by phone: remove {ADDRESS}",  # what staff type in the console
    }
    await sealed.store.add_suppressions(
        [Suppression(a, "api", reason, T0, "ops", "") for a, reason in reasons.items()]
    )
    stored = await raw_rows(sealed, "SELECT reason FROM suppressions")
    assert [r for (r,) in stored if NUMBER in str(r) or ADDRESS in str(r)] == []


async def test_a_consent_source_naming_the_person_is_not_in_clear(sealed: Sealed) -> None:
    source = f"web form signed by {ADDRESS}"
    await sealed.store.add_consents(
        [Consent(NUMBER, Channel.SMS, ConsentKind.EXPRESS_WRITTEN, T0, None, source, "")]
    )
    ((stored,),) = await raw_rows(sealed, "SELECT source FROM consents")
    assert ADDRESS not in str(stored)


async def test_a_known_location_shows_nothing_of_where_the_callee_lives(sealed: Sealed) -> None:
    """Its zone, coordinates, region and postal code sit beside the number's blind index,
    which links them to the person's suppression and consent rows."""
    where = KnownLocation("America/New_York", 40.7484, -73.9857, "US-NY", "10118")
    await sealed.store.set_known_location(NUMBER, where)
    (row,) = await raw_rows(sealed, "SELECT * FROM known_locations")
    stored = repr(tuple(row))
    assert [part for part in ("New_York", "40.7484", "73.9857", "US-NY", "10118")
            if part in stored] == []
    assert await sealed.store.known_locations([NUMBER]) == {NUMBER: where}


async def test_a_damaged_known_location_fails_closed(sealed: Sealed) -> None:
    """A call's hours depend on where the callee is: a location that does not open must
    stop the call (a temporary failure), never read as "nowhere known"."""
    await sealed.store.set_known_location(NUMBER, KnownLocation("America/Chicago"))
    await execute_raw(sealed, "UPDATE known_locations SET location = substr(location, 1, 30)")
    with pytest.raises(StoreUnavailable):
        await sealed.store.known_locations([NUMBER])


AUDITED = {"count": 1, "new": 1, "reason": "replied 'STOP'", "source": "sms-keyword"}
"""What the Suppressions service audits for a STOP text (gateway/services/suppressions.py)."""


async def test_the_audit_chain_does_not_confirm_a_guessed_subject(sealed: Sealed) -> None:
    await sealed.store.append_audit(
        AuditEvent(time=T0, actor="recipient", action="suppression.add", subject=NUMBER,
                   details=AUDITED)
    )
    ((time, actor, action, subject, prev, digest),) = await raw_rows(
        sealed, "SELECT time, actor, action, subject, prev_hash, hash FROM audit"
    )
    assert str(subject).startswith(SEALED_PREFIX)  # sealed, as the README says
    at = time if isinstance(time, datetime) else datetime.fromisoformat(str(time))
    exchange = NUMBER[:-4]
    recovered = [
        guess
        for guess in (f"{exchange}{n:04d}" for n in range(10_000))
        if entry_hash(str(prev), AuditEvent(time=at, actor=str(actor), action=str(action),
                                            subject=guess, details=AUDITED)) == digest
    ]
    assert recovered == []


async def test_a_copy_of_the_store_cannot_test_addresses_against_erased_rows(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, "[encryption]\nenabled = true\n"))
    services = Services(config, Clock())
    await services.open()
    try:
        assert services.data_keys.cipher.enabled
        erased = erased_address(services.erasure_key, ADDRESS)
    finally:
        await services.close()
    path = tmp_path / "var" / "gateway.db"
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute(
            "SELECT value FROM settings WHERE name = ?", (ERASURE_KEY,)
        ).fetchone()
    assert erased_address(str(stored).encode(), ADDRESS) != erased


# --- damaged values fail closed ---------------------------------------------------------------


def blocked(recipient: str) -> BlockRecord:
    return BlockRecord(
        time=T0, channel=Channel.EMAIL, account="demo", sender="agent@example.com",
        recipient=recipient, reasons=(Reason("SUPPRESSED", f"{recipient} opted out", "r1"),),
        rules_version="v1", subject="Quarterly pricing", evidence={"recipient": recipient},
    )


async def test_a_sealed_json_that_lost_its_prefix_fails_closed(sealed: Sealed) -> None:
    await sealed.store.record_block(blocked(ADDRESS))
    await execute_raw(sealed, "UPDATE blocks SET reasons_json = substr(reasons_json, 2)")
    with pytest.raises(StoreUnavailable):
        await sealed.store.query_blocks(BlockQuery())


async def seal_throughout(sealed: Sealed) -> None:
    """The pass a gateway runs at start-up, to its end."""
    await reseal_in_background(
        sealed.store, sealed.cipher.active_key_id, sealed.cipher.refuse_clear_values
    )


@pytest.mark.parametrize(
    ("column", "view", "forged"),
    [("recipient", "blocks", "f@x"), ("recipient", "blocks", "erased:f@x"),
     ("reasons_json", "blocks", '[{"code": "X", "message": "m", "rule": "r"}]'),
     ("evidence_json", "block", "{}"), ("subject", "blocks", "erased: approved by legal")],
)
async def test_a_sealed_value_replaced_by_plaintext_is_refused(
    sealed: Sealed, column: str, view: str, forged: str
) -> None:
    """Once every value has been sealed, text in clear in a sealed column was written past
    the gateway: shown, it would pass for a genuine recipient, reason or evidence. No
    sealed column holds an erased row's hash, so that prefix is no way in."""
    block_id = await sealed.store.record_block(blocked(ADDRESS))
    await seal_throughout(sealed)
    await execute_raw(sealed, f"UPDATE blocks SET {column} = $1", forged)
    with pytest.raises(StoreUnavailable) as refused:
        if view == "blocks":
            await sealed.store.query_blocks(BlockQuery())
        else:
            await sealed.store.get_block(block_id)
    assert "written past the gateway" in str(refused.value)


FORGED_LOOKUPS = {
    "suppression address": (
        "UPDATE suppressions SET address = $1, address_sealed = ''", "list_suppressions"),
    "consent subject": ("UPDATE consents SET subject = $1, subject_sealed = ''", "consent_page"),
}


@pytest.mark.parametrize("forgery", FORGED_LOOKUPS)
async def test_a_lookup_value_forged_in_clear_without_its_sealed_copy_is_refused(
    sealed: Sealed, forgery: str
) -> None:
    """A row without a sealed copy shows its lookup column itself (an erased row's hash):
    once every row was sealed, text there is a forgery too. The refusal names the row
    without the text, which may be someone's address."""
    await sealed.store.add_suppressions([Suppression(ADDRESS, "api", "", T0, "ops", "")])
    await sealed.store.add_consents(
        [Consent(NUMBER, Channel.SMS, ConsentKind.EXPRESS_WRITTEN, T0, None, "form", "")]
    )
    await seal_throughout(sealed)
    statement, view = FORGED_LOOKUPS[forgery]
    await execute_raw(sealed, statement, "forged@attacker.example")
    with pytest.raises(StoreUnavailable) as refused:
        if view == "list_suppressions":
            await sealed.store.list_suppressions()
        else:
            await sealed.store.consent_page(ConsentQuery())
    assert "written past the gateway" in str(refused.value)
    # The error reaches logs, answers and the command line: it names the row, not the value.
    assert "(in clear)" in str(refused.value)
    assert "attacker" not in str(refused.value)


async def test_a_gateway_started_after_a_finished_pass_refuses_clear_values_at_once(
    tmp_path: Path,
) -> None:
    """A restarted process runs no pass (one has finished): it reads the fact at start-up."""
    config = load_config(write_config(tmp_path, "[encryption]\nenabled = true\n"))
    for started in range(2):
        services = Services(config, Clock())
        await services.open()
        try:
            cipher = services.data_keys.cipher
            if started == 0:
                assert cipher.open("in clear", "blocks.subject", "block 1") == "in clear"
                assert (await reseal_store(services.store, cipher.active_key_id)).done
            else:
                with pytest.raises(StoreUnavailable):
                    cipher.open("in clear", "blocks.subject", "block 1")
        finally:
            await services.close()


class FailingFirstSettingsReads:
    """A store whose first `reads` settings reads fail with `error`; it counts the reads."""

    def __init__(self, store: object, reads: int, error: Exception) -> None:
        self.store, self.failures_left, self.error, self.asked = store, reads, error, 0

    async def settings_named(self, prefix: str) -> object:
        self.asked += 1
        if self.failures_left:
            self.failures_left -= 1
            raise self.error
        return await self.store.settings_named(prefix)  # type: ignore[attr-defined]


async def refused_once_a_pass_finishes(services: Services, watch: asyncio.Task[None]) -> None:
    """A value in clear reads while no pass has finished; once one finishes beside the
    running `watch`, the worker refuses it."""
    cipher = services.data_keys.cipher
    assert not watch.done() and not cipher.refuses_clear_values
    assert cipher.open("in clear", "blocks.subject", "block 1") == "in clear"
    assert (await reseal_store(services.store, cipher.active_key_id)).done
    await asyncio.wait_for(asyncio.shield(watch), timeout=10)
    with pytest.raises(StoreUnavailable):
        cipher.open("in clear", "blocks.subject", "block 1")


@pytest.mark.parametrize(
    ("failed_reads", "error"),
    [
        (0, StoreUnavailable("unused")),
        (2, StoreUnavailable("store is not answering")),
        (2, RuntimeError("a driver's protocol error")),
    ],
)
async def test_a_running_worker_refuses_clear_values_once_a_pass_finishes_beside_it(
    tmp_path: Path, failed_reads: int, error: Exception
) -> None:
    """Workers (and replicas) learn of the pass from the store while they serve, not only
    at their next start; a read that fails, however, is asked again."""
    config = load_config(write_config(tmp_path, "[encryption]\nenabled = true\n"))
    services = Services(config, Clock())
    await services.open()
    watch = asyncio.create_task(refuse_clear_values_once_a_pass_finishes(
        FailingFirstSettingsReads(services.store, failed_reads, error),  # type: ignore[arg-type]
        services.data_keys.cipher, interval_s=0.01,
    ))
    try:
        await asyncio.sleep(0.1)
        await refused_once_a_pass_finishes(services, watch)
    finally:
        watch.cancel()
        await services.close()


async def test_a_watch_whose_worker_already_refuses_ends_without_asking_the_store(
    tmp_path: Path,
) -> None:
    """The first worker's own pass switches the refusal on as it finishes: its watch then
    has nothing left to learn."""
    config = load_config(write_config(tmp_path, "[encryption]\nenabled = true\n"))
    services = Services(config, Clock())
    await services.open()
    try:
        counting = FailingFirstSettingsReads(services.store, 0, StoreUnavailable("unused"))
        services.data_keys.cipher.refuse_clear_values()
        await asyncio.wait_for(refuse_clear_values_once_a_pass_finishes(
            counting, services.data_keys.cipher, interval_s=0.01,  # type: ignore[arg-type]
        ), timeout=10)
        assert counting.asked == 0
    finally:
        await services.close()


async def test_after_the_pass_empty_values_and_erased_rows_still_read(sealed: Sealed) -> None:
    await sealed.store.add_suppressions([Suppression(ADDRESS, "api", "", T0, "ops", "")])
    await sealed.store.erase_personal_data(ADDRESS, T0, "ops")
    await sealed.store.record_block(replace(blocked("bob@example.com"), subject=""))
    await seal_throughout(sealed)
    (block,) = await sealed.store.query_blocks(BlockQuery())
    assert (block.recipient, block.subject) == ("bob@example.com", "")
    assert [s.source for s in await sealed.store.list_suppressions()] == ["erased"]


async def test_the_pass_still_seals_a_row_an_earlier_release_wrote_in_clear(
    sealed: Sealed,
) -> None:
    """Its writer is a replica of the previous release left running through the upgrade
    (docs/operations.md says to stop them): the pass, run again, makes the row readable."""
    await seal_throughout(sealed)
    earlier_release = open_store(sealed.url)
    await earlier_release.open()
    try:
        await earlier_release.record_block(blocked("late@example.com"))
    finally:
        await earlier_release.close()
    with pytest.raises(StoreUnavailable):
        await sealed.store.query_blocks(BlockQuery())
    assert (await reseal_store(sealed.store, sealed.cipher.active_key_id)).resealed["blocks"] == 1
    assert [b.recipient for b in await sealed.store.query_blocks(BlockQuery())] == [
        "late@example.com"
    ]


async def test_a_sealed_value_moved_to_another_row_of_its_column_opens_there(
    sealed: Sealed,
) -> None:
    """Documented, not a bug: associated data is the column, not the row, so a ciphertext
    swapped between two rows of one column opens (README: bound to its column). Kept as a
    test so that binding it to the row (the stronger design) shows up here."""
    first = await sealed.store.record_block(blocked(ADDRESS))
    second = await sealed.store.record_block(blocked("bob@example.com"))
    ((value,),) = await raw_rows(sealed, "SELECT recipient FROM blocks WHERE id = $1", first)
    await execute_raw(sealed, "UPDATE blocks SET recipient = $1 WHERE id = $2", value, second)
    moved = await sealed.store.get_block(second)
    assert moved is not None and moved.recipient == ADDRESS


async def test_a_damaged_ciphertext_fails_closed_and_names_no_content(sealed: Sealed) -> None:
    """What holds: damage inside the ciphertext (prefix intact) is a SealedDataError, a
    StoreUnavailable, naming the block and not its recipient or reasons."""
    await sealed.store.record_block(blocked(ADDRESS))
    await execute_raw(sealed, "UPDATE blocks SET reasons_json = substr(reasons_json, 1, 40)")
    with pytest.raises(StoreUnavailable) as caught:
        await sealed.store.query_blocks(BlockQuery())
    assert "block " in str(caught.value) and ADDRESS not in str(caught.value)


# --- rotation ---------------------------------------------------------------------------------


def keyed_config(tmp_path: Path, keys: dict[str, str], active: str) -> Config:
    return build_config(
        {"gateway": {"data_dir": str(tmp_path / "data")},
         "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
         "encryption": {"enabled": True, "keys": keys, "active": active}},
        source=None, base_dir=tmp_path,
    )


async def no_wait(seconds: float) -> None:
    """The pass's 25 s between its two reads: a CLI command does not beat in it (nor ever
    after its start), so waiting for real changes nothing but the test's length."""


async def test_a_running_cli_command_keeps_its_key_through_two_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its beat goes on while it runs, as a gateway's does (beats made quick here)."""
    monkeypatch.setattr(data_key_use, "BEAT_S", 0.02)
    monkeypatch.setattr(data_key_use, "STALE_AFTER_S", 0.2)
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    command = Services(keyed_config(tmp_path, {"k1": k1}, "k1"), Clock())  # e.g. an import
    await command.open()
    rotation = Services(keyed_config(tmp_path, {"k1": k1, "k2": k2}, "k2"), Clock())
    await rotation.open()
    try:
        first = await reseal_store(rotation.store, "k2")
        assert first.in_use == ["k1"]  # the operator restarts the gateways, runs it again
        second = await reseal_store(rotation.store, "k2")
        # The import, still running under k1, writes its rows now.
        await command.store.add_suppressions([Suppression(ADDRESS, "import", "", T0, "ops", "")])
        assert second.retired == []
    finally:
        await rotation.close()
        await command.close()


# --- what an export hands out ---------------------------------------------------------------


async def test_an_export_holds_no_audit_entry_about_someone_else(sealed: Sealed) -> None:
    await sealed.store.append_audit(
        AuditEvent(time=T0, actor="recipient", action="suppression.add",
                   subject="sal@example.com", details=AUDITED)
    )
    data = await sealed.store.personal_data("al@example.com")
    assert [event.subject for event in data.audit] == []


# --- the bytes of a SQLite copy -----------------------------------------------------------------


async def test_a_file_copy_after_the_sealing_pass_holds_nothing_in_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    before = open_store(url)  # the release before encryption: its rows in clear
    await before.open()
    await before.add_suppressions([Suppression(ADDRESS, "api", "", T0, "ops", "")])
    await before.add_consents(
        [Consent(NUMBER, Channel.SMS, ConsentKind.EXPRESS_WRITTEN, T0, None, "web", "")]
    )
    await before.close()
    upgraded = open_store(url)
    await upgraded.open()
    try:
        cipher = new_cipher()
        await upgraded.use_data_cipher(cipher)
        await reseal_store(upgraded, cipher.active_key_id)
        copy = b"".join(
            path.read_bytes() for path in sorted(tmp_path.glob("gateway.db*"))
        )
    finally:
        await upgraded.close()
    assert ADDRESS.encode() not in copy and NUMBER.encode() not in copy


TILDE = "~bob.tilde@example.com"
"""A valid address (RFC 5322 atext allows '~' first) that looks like a blind index."""


async def test_the_sealing_pass_converts_an_address_starting_with_a_tilde(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = open_store(url)
    await store.open()
    try:
        await store.add_suppressions([Suppression(TILDE, "api", "", T0, "ops", TILDE)])
        cipher = new_cipher()
        await store.use_data_cipher(cipher)
        await reseal_store(store, cipher.active_key_id)
        assert await store.suppressed([TILDE]) == {TILDE}  # still found, by its clear form
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        stored = conn.execute("SELECT address, mailbox FROM suppressions").fetchall()
    assert TILDE not in repr(stored)


# --- replicas of two releases on one store ----------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="OPEN, ruled out by the upgrade notes (docs/operations.md, Upgrading): "
    "a rolling upgrade (docs/operations.md: roll replicas one at a time) that turns "
    "encryption on (now the default) leaves the old replicas looking suppressions, contacts "
    "and notices up by the value in clear only, while upgraded replicas write blind indexes: "
    "an opt-out taken by an upgraded replica is not seen by an old one, which sends to the "
    "opted-out person (and counts no caps) until it is replaced. Nothing refuses or warns; "
    "the upgrade notes should require stopping every replica, or a release that writes both "
    "forms first",
)
async def test_an_opt_out_taken_by_an_upgraded_replica_holds_on_an_old_one(
    sealed: Sealed,
) -> None:
    old = open_store(sealed.url)  # the release before (or encryption.enabled = false)
    await old.open()
    try:
        await old.use_erasure_key(ERASED_ROWS_KEY)
        await sealed.store.add_suppressions([Suppression(NUMBER, "sms-keyword", "", T0, "x", "")])
        assert await sealed.store.suppressed([NUMBER]) == {NUMBER}
        assert await old.suppressed([NUMBER]) == {NUMBER}
    finally:
        await old.close()


async def test_postgresql_a_row_left_by_a_racing_writer_is_sealed_at_the_next_start(
    postgres_url: str,
) -> None:
    store = open_store(postgres_url)
    await store.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        await store.mark_notice_sent(NUMBER, T0)  # written before encryption
        cipher = new_cipher()
        await store.use_data_cipher(cipher)
        racing = writer.transaction()
        await racing.start()
        await writer.execute(
            "INSERT INTO notices (recipient, sent_at) VALUES ($1, $2)",
            cipher.blind(NUMBER), T0 + timedelta(hours=1),
        )
        sealing = asyncio.ensure_future(reseal_store(store, cipher.active_key_id))
        await waiting_sessions(postgres_url, 1, sealing)
        await racing.commit()
        await sealing
        await reseal_in_background(store, cipher.active_key_id)  # the next start
        rows = await writer.fetch("SELECT recipient FROM notices")
    finally:
        await writer.close()
        await store.close()
    assert NUMBER not in [row["recipient"] for row in rows]


SUPPRESSIONS = next(table for table in SEALED_TABLES if table.name == "suppressions")


def rotation_ciphers() -> tuple[DataCipher, DataCipher, DataCipher]:
    """A rotation's three configurations, sharing one index key: k1 alone; k2 added and
    made active; k1 dropped."""
    k1, k2, index = os.urandom(32), os.urandom(32), os.urandom(32)
    return (DataCipher(DataKeyring({"k1": k1}, "k1", index)),
            DataCipher(DataKeyring({"k1": k1, "k2": k2}, "k2", index)),
            DataCipher(DataKeyring({"k2": k2}, "k2", index)))


@contextlib.contextmanager
def stepping_in(action: Callable[[int], Awaitable[object]]) -> Iterator[None]:
    """While open, `action(n)` runs before the pass applies its n-th change (from 1): a
    concurrent writer between a batch's read and its conditional update."""
    apply, calls = postgres_resealing._apply, itertools.count(1)

    async def stepped_in(conn: asyncpg.Connection, statements: list) -> int:
        await action(next(calls))
        return await apply(conn, statements)

    postgres_resealing._apply = stepped_in
    try:
        yield
    finally:
        postgres_resealing._apply = apply


@pytest.mark.parametrize("rewrites", [1, 1 + postgres_resealing.REREADS])
async def test_postgresql_a_row_rewritten_under_the_pass_is_read_again_until_it_settles(
    postgres_url: str, rewrites: int
) -> None:
    """Read committed: a writer (a mailbox fold as another replica starts, a replica of an
    earlier release) rewrites a row in clear between the batch's read and its conditional
    update, which then changes nothing. The pass reads the row again and seals it as it now
    is. A row rewritten at every one of its `REREADS` reads is left: counted skipped, so the
    pass does not mark itself done and the next start seals it (a pass marked done while a
    row is in clear leaves it so for good)."""
    store = open_store(postgres_url)
    await store.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        entry = Suppression("carol@example.com", "unsubscribe", "link", T0, "web")
        await store.add_suppressions([entry])  # written before encryption
        cipher = new_cipher()
        await store.use_data_cipher(cipher)

        async def rewrite(n: int) -> None:
            if n <= rewrites:
                await writer.execute(
                    "UPDATE suppressions SET reason = reason || '.', mailbox = address")

        with stepping_in(rewrite):
            report = await reseal_store(store, cipher.active_key_id)
        left = rewrites > postgres_resealing.REREADS
        assert (report.skipped, report.done) == ((1, False) if left else (0, True))
        assert await store.suppressed([entry.address]) == {entry.address}
        if left:
            await reseal_in_background(store, cipher.active_key_id)  # the next start
        rows = await writer.fetch("SELECT address, mailbox, reason FROM suppressions")
    finally:
        await writer.close()
        await store.close()
    assert len(rows) == 1
    assert [value for value in rows[0].values() if "carol" in value or "link" in value] == []


async def test_postgresql_two_passes_at_once_both_finish(
    postgres_url: str,
) -> None:
    """A key rotated and the gateway restarted: its own pass at start-up and `keys
    rotate-data` walk the same rows at once. Each loses to the other the rows the other
    sealed first; those are done, not left: a pass that counted them skipped exited 1 and
    never marked the rotation finished (a CI run of the e2e rotation test did so)."""
    old, rotated, after = rotation_ciphers()
    store, other = open_store(postgres_url), open_store(postgres_url)
    await store.open()
    await other.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        await store.use_data_cipher(old)
        await store.record_decisions([sms_decision("acme", f"+1212555{i:04d}") for i in range(40)])
        await store.add_suppressions(
            [Suppression(f"lead{i}@example.com", "api", "asked", T0, "ops", "") for i in range(40)]
        )
        await store.use_data_cipher(rotated)
        await other.use_data_cipher(rotated)
        beside = []

        async def the_other_pass_first(n: int) -> None:
            if n == 1:  # the other pass's own changes come next, as 2, 3, ...
                beside.append(await reseal_store(other, "k2"))

        with stepping_in(the_other_pass_first):
            report = await reseal_store(store, "k2")
        sealed = [row[0] for table, column in (("decisions", "recipient"),
                                               ("suppressions", "address_sealed"))
                  for row in await writer.fetch(f"SELECT {column} FROM {table}")]
        assert beside[0].done and beside[0].resealed["decisions"] == 40
        # Every row this pass read, the other sealed first: all lost, none left.
        assert sum(report.resealed.values()) == 0
        assert report.skipped == 0 and report.done
        assert {sealed_key_id(value) for value in sealed} == {"k2"}
        await store.use_data_cipher(after)
        assert await store.suppressed(["lead7@example.com"]) == {"lead7@example.com"}
    finally:
        await writer.close()
        await other.close()
        await store.close()


async def test_postgresql_a_pass_reads_a_lost_row_again_without_holding_the_batch(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass A loses its first row to a replica still on k1 recording the opt-out again,
    and locks the second; pass B (`keys rotate-data`) seals the first and waits on A for
    the second. Had A read its lost row again while holding the second, each would wait on
    the other: a deadlock that ends one pass with StoreUnavailable (an attack review's
    finding). Read again after the batch has committed, both finish, none skipped."""
    old, rotated, _ = rotation_ciphers()
    a, b, replica = open_store(postgres_url), open_store(postgres_url), open_store(postgres_url)
    for store in (a, b, replica):
        await store.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        await replica.use_data_cipher(old)
        entries = [Suppression(f"p{i}@example.com", "api", "asked", T0, "ops", "")
                   for i in range(2)]
        await replica.add_suppressions(entries)
        await a.use_data_cipher(rotated)
        await b.use_data_cipher(rotated)
        (first_key,) = await writer.fetchrow(
            "SELECT address FROM suppressions ORDER BY address, source LIMIT 1")
        (first,) = [e for e in entries if old.blind(e.address) == first_key]
        apply, applied_by_a, passes = postgres_resealing._apply, [], {}

        async def interleaved(conn: asyncpg.Connection, statements: list) -> int:
            applied_by_a.append(conn)
            if len(applied_by_a) == 1:
                await replica.add_suppressions([replace(first, reason="asked again")])
            done = await apply(conn, statements)
            if len(applied_by_a) == 2:  # A holds the second row
                monkeypatch.setattr(postgres_resealing, "_apply", apply)
                passes["b"] = asyncio.ensure_future(b.reseal_batch(SUPPRESSIONS, None, 100))
                await waiting_sessions(postgres_url, 1, passes["b"])
            return done

        # No second run: a deadlock here is the fault itself, not one to recover from.
        monkeypatch.setattr(postgres_resealing, "DEADLOCK_RUNS", 1)
        monkeypatch.setattr(postgres_resealing, "_apply", interleaved)
        by_a = await a.reseal_batch(SUPPRESSIONS, None, 100)
        by_b = await passes["b"]
        rows = await writer.fetch("SELECT address_sealed, reason FROM suppressions")
    finally:
        await writer.close()
        for store in (a, b, replica):
            await store.close()
    assert by_a.skipped == by_b.skipped == 0
    assert by_a.resealed + by_b.resealed >= 2
    assert sorted(sealed_key_id(value) for row in rows for value in row) == ["k2"] * 4


async def test_postgresql_a_pass_picked_as_a_deadlock_victim_runs_its_batch_again(
    postgres_url: str,
) -> None:
    """A writer holds the second row and waits for the first, which the pass holds; the
    pass then waits for the second. PostgreSQL checks a waiting session once, a second
    into its wait, so the writer is made to wait before the pass goes on: the pass's check
    then finds the cycle and rolls the pass back (the writer's session checks only after
    60 s). The pass runs its batch again once the writer commits, and seals both rows."""
    old, rotated, _ = rotation_ciphers()
    store = open_store(postgres_url)
    await store.open()
    writer, observer = await asyncpg.connect(postgres_url), await asyncpg.connect(postgres_url)
    try:
        await store.use_data_cipher(old)
        await store.add_suppressions(
            [Suppression(f"q{i}@example.com", "api", "asked", T0, "ops", "") for i in range(2)]
        )
        await store.use_data_cipher(rotated)
        first, second = [row["address"] for row in await writer.fetch(
            "SELECT address FROM suppressions ORDER BY address, source")]
        crossed = []
        await writer.execute("SET deadlock_timeout = '60s'")
        crossing = writer.transaction()
        await crossing.start()
        await writer.execute("UPDATE suppressions SET reason = reason WHERE address = $1", second)

        async def cross_once_the_pass_holds_the_first(n: int) -> None:
            if n != 2:
                return
            crossed.append(asyncio.ensure_future(writer.execute(
                "UPDATE suppressions SET reason = reason WHERE address = $1", first)))
            while not await observer.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                writer.get_server_pid(),
            ):
                assert not crossed[0].done(), crossed[0]
                await asyncio.sleep(0.01)

        with stepping_in(cross_once_the_pass_holds_the_first):
            sealing = asyncio.ensure_future(store.reseal_batch(SUPPRESSIONS, None, 100))
            while not crossed:
                assert not sealing.done(), sealing
                await asyncio.sleep(0.01)
            await crossed[0]  # the pass was the victim: its locks are gone
            await crossing.commit()
            batch = await sealing
        rows = await writer.fetch("SELECT address_sealed, reason FROM suppressions")
    finally:
        await observer.close()
        await writer.close()
        await store.close()
    assert batch.skipped == 0 and batch.resealed == 2
    assert sorted(sealed_key_id(value) for row in rows for value in row) == ["k2"] * 4


async def test_postgresql_a_row_lost_at_every_read_keeps_its_old_key_from_retiring(
    postgres_url: str,
) -> None:
    """A row a writer on k2 keeps changing (its mailbox, as a fold does) keeps its address
    and reason under k1 after the pass: retiring k1 then would tell the operator to drop the
    key those values need (an attack review's finding). No key is retired."""
    old, rotated, _ = rotation_ciphers()
    store = open_store(postgres_url)
    await store.open()
    writer = await asyncpg.connect(postgres_url)
    try:
        await store.use_data_cipher(old)
        await store.add_suppressions([Suppression("m@example.com", "api", "asked", T0, "ops", "")])
        for key_id in ("k1", "k2"):  # as start-up records each key it is given
            await store.claim_setting(FINGERPRINT + key_id, key_id)
        await store.use_data_cipher(rotated)
        async def fold(n: int) -> None:
            await writer.execute("UPDATE suppressions SET mailbox_sealed = $1",
                                 rotated.seal("m@example.com", "suppressions.mailbox"))

        with stepping_in(fold):
            report = await reseal_store(store, "k2")
        row = await writer.fetchrow("SELECT address_sealed, reason FROM suppressions")
        retired = await store.settings_named(RETIRED)
        again = await reseal_store(store, "k2")  # the operator runs it again
    finally:
        await writer.close()
        await store.close()
    assert report.skipped == 1 and sealed_key_id(row["reason"]) == "k1"
    assert report.retired == [] and retired == {} and not report.done
    assert again.done and again.retired == ["k1"]


# --- the index key ------------------------------------------------------------------------------


async def test_a_lost_index_key_refuses_start_rather_than_missing_every_opt_out(
    tmp_path: Path,
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    config = keyed_config(tmp_path, {"k1": key}, "k1")
    first = Services(config, Clock())
    await first.open()
    try:
        await first.store.add_suppressions([Suppression(NUMBER, "sms-keyword", "", T0, "x", "")])
    finally:
        await first.close()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        conn.execute("DELETE FROM settings WHERE name LIKE 'wrapped:index-key:%'")
    with pytest.raises(ConfigError, match="index key") as refused:
        await Services(config, Clock()).open()
    assert refused.value.key == "encryption.keys.k1"


# --- the search signatures --------------------------------------------------------------------


def sms_decision(account: str, number: str) -> DecisionRecord:
    return DecisionRecord(
        time=T0, channel=Channel.SMS, account=account, sender="+12125550100", recipient=number,
        purpose=Purpose.MARKETING, outcome=DecisionOutcome.ALLOWED, reasons=(),
        rules_version="v1",
    )


async def test_recipient_signatures_do_not_give_a_number_away(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await store.open()
    # A fixed key: the attack's outcome must not depend on a random draw.
    await store.use_data_cipher(DataCipher(DataKeyring({"k1": b"k" * 32}, "k1", b"i" * 32)))
    draw = random.Random(7)
    known = sorted({f"+1212555{draw.randrange(10_000):04d}" for _ in range(2000)} - {NUMBER})
    try:
        await store.record_decisions(
            [sms_decision("attacker", n) for n in known] + [sms_decision("victim-co", NUMBER)]
        )
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        rows = conn.execute("SELECT account, recipient_terms FROM decisions ORDER BY id").fetchall()
    own = [terms for account, terms in rows if account == "attacker"]
    ((target,),) = [(terms,) for account, terms in rows if account == "victim-co"]
    # Each trigram's bit: what every signature holding it shares, less the bits all share.
    every = (1 << 63) - 1
    for terms in own:
        every &= terms
    bit: dict[str, int] = {}
    for number, terms in zip(known, own, strict=True):
        for gram in trigrams(number):
            bit[gram] = bit.get(gram, (1 << 63) - 1) & terms
    bit = {gram: bits & ~every for gram, bits in bit.items()}

    def predicted(number: str) -> int | None:
        bits = every
        for gram in trigrams(number):
            if gram not in bit:
                return None
            bits |= bit[gram]
        return bits

    recovered = [n for n in (f"+1212555{i:04d}" for i in range(10_000)) if predicted(n) == target]
    assert len(recovered) > 1000, "the victim's signature singles out a few numbers"


# --- what holds: lookups find what the writers wrote ------------------------------------------

MAILBOXES = load_mailbox_rules(PACKAGE_RULES_DIR)


@pytest.mark.parametrize(
    ("written", "sent_to"),
    [
        ("Bob.Smith+news@Gmail.com", "bobsmith@googlemail.com"),
        ("Bob.Smith+news@Gmail.com", "BOB.SMITH@GMAIL.COM"),
        ("Zo\u00eb@B\u00fccher.example", "zo\u0065\u0308@bu\u0308cher.example"),  # NFC / NFD
        ("ZO\u00cb@example.com", "zo\u00eb@example.com"),
        ("+1 (212) 555-0199", "+12125550199"),
        (" +1.212.555.0199 ", "+1 212 555 0199"),
    ],
)
async def test_an_opt_out_is_found_by_every_spelling_under_its_blind_index(
    sealed: Sealed, written: str, sent_to: str
) -> None:
    """The writer's key and mailbox (key_and_mailbox) and the send path's lookup keys
    (suppression_keys, as gather_facts asks) meet in the blind index whatever the spelling:
    case, mailbox folding, Unicode normal form, E.164 punctuation and whitespace."""
    key, mailbox = key_and_mailbox(written, MAILBOXES)
    await sealed.store.add_suppressions([Suppression(key, "api", "", T0, "ops", mailbox)])
    assert await sealed.store.suppressed(suppression_keys(sent_to, MAILBOXES))
    stored = await raw_rows(sealed, "SELECT address, mailbox FROM suppressions")
    assert key not in repr(stored) and (not mailbox or mailbox not in repr(stored))
