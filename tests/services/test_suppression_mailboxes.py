"""An opt-out holds for the mailbox (issue 18): through the real services, store and policy,
every spelling that reaches an opted-out mailbox is refused; opt-outs stored before mailbox
keys (with the spelling's key, or erased as its hash) still hold; lifting one lifts the
mailbox and says what it removed; privacy export and erasure cover the mailbox."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.cli.registries import _check_account
from gateway.config.settings import PACKAGE_RULES_DIR, Config
from gateway.model import Channel, Suppression
from gateway.pipeline.dry_run import CheckRequest, run_check
from gateway.runtime.clock import Clock
from gateway.runtime.progress import Progress
from gateway.server import Services
from gateway.services.imports import import_suppression_file
from gateway.store.base import ERASED_SOURCE, erased_address
from gateway.store.migrations import discover_migrations, migration_directory, run_migrations
from gateway.store.sqlite.sql import SqliteMigrationTarget
from tests.test_addresses import mailbox_and_spelling

NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


@pytest.fixture
async def services(config_factory: Callable[..., Config]) -> AsyncIterator[Services]:
    services = Services(config_factory(), Clock(NOW))
    await services.open()
    yield services
    await services.close()


async def codes(services: Services, to: str) -> list[str]:
    """The reason codes the real pipeline gives an email to `to` (empty: allowed)."""
    request = CheckRequest(
        channel=Channel.EMAIL, to=to, sender="katie@example.com",
        subject="Fleet maintenance costs", at=NOW,
    )
    result = await run_check(services.pipeline, request, _check_account(services.config, None))
    return [reason["code"] for reason in result["reasons"]]


async def opt_out(services: Services, *addresses: str, source: str = "one-click") -> int:
    return await services.suppressions.add(
        list(addresses), source=source, reason="unsubscribed", actor="recipient"
    )


@pytest.mark.parametrize(
    ("opted_out", "spellings", "others"),
    [
        ("carol@x.example", ["carol+promo@x.example", "Carol+a+b@X.Example"],
         ["carol.x@x.example", "carol@y.example"]),
        ("carol+old@x.example", ["carol@x.example", "carol+new@x.example"], ["carl@x.example"]),
        ("bob.smith@gmail.com",
         ["bobsmith@gmail.com", "Bob.Smith@googlemail.com", "b.o.b.smith+deals@GMAIL.com"],
         ["bob.smith@outlook.com", "bob_smith@gmail.com"]),
        ("john.doe@protonmail.com", ["john_doe@pm.me", "JohnDoe+x@proton.me"],
         ["john.doe@example.com"]),
        ("jane@me.com", ["jane@icloud.com", "Jane+x@mac.com"], ["j.ane@icloud.com"]),
    ],
)
async def test_an_opt_out_refuses_every_spelling_of_the_mailbox(
    services: Services, opted_out: str, spellings: list[str], others: list[str]
) -> None:
    await opt_out(services, opted_out)
    for spelling in [opted_out, *spellings]:
        assert await codes(services, spelling) == ["SUPPRESSED"], spelling
    for other in others:
        assert await codes(services, other) == [], other


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=mailbox_and_spelling())
def test_a_suppressed_mailbox_stays_suppressed_under_every_generated_spelling(
    config_factory: Callable[..., Config], case: tuple[str, str]
) -> None:
    """Opting out an address, by any way an opt-out arrives (the service they all share),
    then deciding on a generated spelling of it (case, tags, and a provider's ignored
    characters and other domains) with the real store and policy: always SUPPRESSED."""
    address, spelling = case
    loop = asyncio.new_event_loop()
    try:
        services = Services(config_factory(), Clock(NOW))
        loop.run_until_complete(services.open())
        try:
            loop.run_until_complete(opt_out(services, address))
            assert loop.run_until_complete(codes(services, spelling)) == ["SUPPRESSED"]
        finally:
            loop.run_until_complete(services.close())
    finally:
        loop.close()


async def test_another_spelling_of_an_opted_out_mailbox_is_not_new(services: Services) -> None:
    assert await opt_out(services, "Bob.Smith@gmail.com") == 1
    assert await opt_out(services, "bobsmith+x@googlemail.com", source="api") == 0
    (first, second) = [e for e in await services.store.audit_events()]
    assert first.subject == "bob.smith@gmail.com,bobsmith@gmail.com"
    assert second.subject == "bobsmith+x@googlemail.com,bobsmith@gmail.com"


async def test_lifting_an_opt_out_lifts_the_mailbox_and_names_what_it_removed(
    services: Services,
) -> None:
    await opt_out(services, "bob.smith@gmail.com")
    await opt_out(services, "BobSmith+deals@googlemail.com", source="postmark:SpamComplaint")
    await opt_out(services, "ann@x.example")

    assert await services.suppressions.remove(["b.o.b.s.m.i.t.h@gmail.com"], actor="ops") == 1

    for spelling in ("bob.smith@gmail.com", "bobsmith+deals@googlemail.com", "bobsmith@gmail.com"):
        assert await codes(services, spelling) == [], spelling
    assert await codes(services, "ann@x.example") == ["SUPPRESSED"]
    removal = (await services.store.audit_events())[-1]
    assert removal.action == "suppression.remove" and removal.actor == "ops"
    assert removal.subject == "b.o.b.s.m.i.t.h@gmail.com,bobsmith@gmail.com"
    assert removal.details["removed"] == [
        {"address": "bob.smith@gmail.com", "source": "one-click", "mailbox": "bobsmith@gmail.com"},
        {"address": "bobsmith+deals@googlemail.com", "source": "postmark:SpamComplaint",
         "mailbox": "bobsmith@gmail.com"},
    ]
    assert await services.suppressions.remove(["bobsmith@gmail.com"], actor="ops") == 0


async def test_a_provider_lifts_only_its_own_entry_for_its_own_spelling(
    services: Services,
) -> None:
    """Postmark reactivating one address lifts its own suppression of that spelling; an
    opt-out taken through the gateway for another spelling of the mailbox still holds."""
    await opt_out(services, "bob.smith@gmail.com", source="postmark:HardBounce")
    await opt_out(services, "bobsmith+news@gmail.com")
    lifted = await services.suppressions.remove_with_source_prefix(
        ["Bob.Smith@gmail.com"], "postmark:", actor="postmark"
    )
    assert lifted == 1
    assert await codes(services, "bob.smith@gmail.com") == ["SUPPRESSED"]


def legacy_database(config: Config, rows: list[tuple[str, str]]) -> Path:
    """A database as the gateway left it before mailbox keys (migrations 1 to 6), holding
    `rows` (address, source) keyed as it keyed them: the spelling, lower case."""
    path = Path(config.store_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    deployed = [m for m in discover_migrations(migration_directory("sqlite")) if m.version <= 6]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        run_migrations(SqliteMigrationTarget(conn), deployed)
        conn.executemany(
            "INSERT INTO suppressions (address, source, reason, actor, created_at)"
            " VALUES (?, ?, 'before mailbox keys', '', '2025-01-01T00:00:00.000000+00:00')",
            rows,
        )
    finally:
        conn.close()
    return path


async def test_opt_outs_stored_before_mailbox_keys_still_hold_for_the_mailbox(
    config_factory: Callable[..., Config],
) -> None:
    """Rows keyed by the old key (the lower-cased spelling) get their mailbox key when the
    gateway opens the store, so every spelling is refused; an opt-out erased before (a hash
    of the old key, which cannot be folded) still refuses the spelling it was erased as."""
    config = config_factory()
    key = b"an-erasure-key-an-earlier-version-generated"
    config.data_dir.mkdir(parents=True, exist_ok=True)
    (config.data_dir / "erasure-key").write_bytes(key)
    legacy_database(config, [
        ("bob.smith@gmail.com", "one-click"),
        ("carol+promo@x.example", "import:list.csv"),
        ("+14155550101", "sms-keyword"),
        (erased_address(key, "dana.lee@gmail.com"), ERASED_SOURCE),
    ])
    services = Services(config, Clock(NOW))
    await services.open()
    try:
        for spelling in (
            "bob.smith@gmail.com", "bobsmith@gmail.com", "Bob.Smith+x@googlemail.com",
            "carol+promo@x.example", "carol@x.example", "carol+other@x.example",
            "Dana.Lee@gmail.com",
        ):
            assert await codes(services, spelling) == ["SUPPRESSED"], spelling
        assert await services.store.suppressed(["+14155550101"]) == {"+14155550101"}
        folds = [e for e in await services.store.audit_events() if e.action == "suppression.fold"]
        assert [e.details["entries"] for e in folds] == [2]
        entries = {e.address: e.mailbox for e in await services.store.list_suppressions()}
        assert entries["bob.smith@gmail.com"] == "bobsmith@gmail.com"
        assert entries["+14155550101"] == ""
    finally:
        await services.close()


async def test_a_legacy_row_blocks_before_it_is_folded(services: Services) -> None:
    """A row without a mailbox (an older replica wrote it during an upgrade) still blocks
    its own spelling and, where its spelling is the mailbox key, every spelling."""
    await services.store.add_suppressions([
        Suppression("carol@x.example", "old", "r", NOW),
        Suppression("bob.smith@gmail.com", "old", "r", NOW),
    ])
    assert await codes(services, "carol+promo@x.example") == ["SUPPRESSED"]
    assert await codes(services, "Bob.Smith@gmail.com") == ["SUPPRESSED"]
    assert await services.suppressions.fold_stored() == 2
    assert await codes(services, "bobsmith@googlemail.com") == ["SUPPRESSED"]


async def test_new_mailbox_rules_refold_what_is_stored(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    """Dropping Proton's rule (say its citation fell) makes the stored keys follow at the
    next start: spellings the new rules no longer join are no longer refused, and the
    spelling that opted out still is."""
    rules = tmp_path / "rules"
    shutil.copytree(PACKAGE_RULES_DIR, rules)
    config = replace(config_factory(), rules_dir=rules)
    first = Services(config, Clock(NOW))
    await first.open()
    await opt_out(first, "john.doe@protonmail.com")
    assert await codes(first, "johndoe@pm.me") == ["SUPPRESSED"]
    await first.close()

    text = (rules / "mailboxes.toml").read_text()
    start = text.index('[[provider]]\nname = "Proton Mail"')
    end = text.index("[[provider]]", start + 1)
    (rules / "mailboxes.toml").write_text(text[:start] + text[end:])
    second = Services(config, Clock(NOW))
    await second.open()
    try:
        assert await codes(second, "john.doe@protonmail.com") == ["SUPPRESSED"]
        assert await codes(second, "johndoe@pm.me") == []
        entries = await second.store.list_suppressions()
        assert [(e.address, e.mailbox) for e in entries] == [
            ("john.doe@protonmail.com", "john.doe@protonmail.com")
        ]
    finally:
        await second.close()


async def test_privacy_export_and_erasure_cover_every_spelling(services: Services) -> None:
    await opt_out(services, "bob.smith@gmail.com")
    await opt_out(services, "bobsmith+x@googlemail.com", source="api")
    privacy = services.privacy()

    exported = await privacy.export("BobSmith@gmail.com", actor="dpo")
    assert sorted(s["source"] for s in exported["suppressions"]) == ["api", "one-click"]

    counts = await privacy.erase("bob.smith@gmail.com", actor="dpo")
    assert counts["suppressions"] == 2
    (row,) = await services.store.list_suppressions()
    assert row.address.startswith("erased:") and row.mailbox.startswith("erased:")
    for spelling in ("bob.smith@gmail.com", "bobsmith+x@googlemail.com", "b.obsmith@gmail.com"):
        assert await codes(services, spelling) == ["SUPPRESSED"], spelling
    again = await privacy.export("bobsmith@googlemail.com", actor="dpo")
    assert again["suppressions"] == [] and again["erased_suppression"] is True


async def test_an_imported_list_is_stored_by_mailbox(services: Services, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("email\nCarol+List@X.example\nbob.smith@googlemail.com\n+14155550100\n")
    summary = await import_suppression_file(
        services.store, listing, "csv", reason="customer list", actor="operator", now=NOW,
        skip_bad=False, progress=Progress(io.StringIO()), mailboxes=services.ruleset.mailboxes,
    )
    assert (summary.rows, summary.new) == (3, 3)
    for spelling in ("carol@x.example", "carol+other@x.example", "bobsmith@gmail.com"):
        assert await codes(services, spelling) == ["SUPPRESSED"], spelling
