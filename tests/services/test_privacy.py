"""Data-subject export and erasure, and the owner's purge: the opt-out survives erasure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.cli.registries import _check_account
from gateway.config.settings import Config, ConfigError, load_config
from gateway.model import (
    BlockRecord,
    Channel,
    Consent,
    ConsentKind,
    KnownLocation,
    Reason,
)
from gateway.pipeline.dry_run import CheckRequest, run_check
from gateway.runtime.clock import Clock
from gateway.server import Gateway, Services
from gateway.services.privacy import Privacy
from gateway.store.base import ERASED_SOURCE, BlockQuery
from tests.conftest import write_config
from tests.ingress.smtp.test_submission import client, first_touch, outbox_messages
from tests.store.test_decisions import decision

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EMAIL = "Bob@Client.Example.NET"
EMAIL_KEY = "bob@client.example.net"
NUMBER = "+1 (415) 555-0100"
NUMBER_KEY = "+14155550100"


@pytest.fixture(params=[False, True], ids=["clear", "sealed"])
async def services(
    request: pytest.FixtureRequest, config_factory: Callable[..., Config]
) -> AsyncIterator[Services]:
    """Every privacy journey with encryption at rest off and on."""
    encryption = f"[encryption]\nenabled = {str(request.param).lower()}\n"
    services = Services(config_factory(encryption), Clock(NOW))
    await services.open()
    yield services
    await services.close()


def privacy_of(services: Services) -> Privacy:
    return services.privacy()


async def check(services: Services, channel: Channel, to: str) -> list[str]:
    """The reason codes the real pipeline gives for a message to `to` (empty: allowed)."""
    request = CheckRequest(
        channel=channel,
        to=to,
        sender="katie@example.com" if channel is Channel.EMAIL else "+14155550199",
        subject="Fleet maintenance costs",
        at=NOW,
        timezone="America/Los_Angeles",
    )
    result = await run_check(services.pipeline, request, _check_account(services.config, None))
    return [reason["code"] for reason in result["reasons"]]


async def remember_everything(services: Services) -> None:
    """One of every kind of record about the email address and the number."""
    store = services.store
    await services.suppressions.add([EMAIL], source="cli", reason="asked", actor="operator")
    await services.suppressions.add([NUMBER], source="sms-stop", reason="STOP", actor="recipient")
    await services.suppressions.add([NUMBER], source="dnc:list.txt", reason="DNC", actor="op")
    await store.add_consents([
        Consent(NUMBER_KEY, Channel.SMS, ConsentKind.EXPRESS, NOW - timedelta(days=9), None,
                "web form", "ip 192.0.2.1"),
    ])
    await store.set_known_location(NUMBER_KEY, KnownLocation(timezone="America/New_York",
                                                             region="US-NY"))
    await store.reserve_contact(NUMBER_KEY, Channel.SMS, NOW - timedelta(hours=2), "gw-1", [])
    await store.mark_notice_sent(NUMBER_KEY, NOW - timedelta(hours=2))
    await store.claim_delivery("idem-1", "Bob@client.example.net", NOW, 60)
    for recipient, sender, channel in (
        ("Bob@client.example.net", "katie@example.com", Channel.EMAIL),
        ("ann@client.example.net", "BOB@client.example.net", Channel.EMAIL),
        (NUMBER_KEY, "+14155550199", Channel.SMS),
        ("ann@client.example.net", "katie@example.com", Channel.EMAIL),
    ):
        await store.record_block(BlockRecord(
            time=NOW - timedelta(hours=1), channel=channel, account="demo", sender=sender,
            recipient=recipient, reasons=(Reason("SUPPRESSED", "on the list", "r"),),
            rules_version="v1", message_id="<m@x>", subject="Private matter",
        ))
        await store.record_decisions([replace(
            decision(recipient, channel=channel, sender=sender, codes=("SUPPRESSED",)),
            time=NOW - timedelta(hours=1),
        )])


async def test_export_holds_everything_about_the_subject_and_is_audited(
    services: Services,
) -> None:
    await remember_everything(services)
    # Another spelling of the mailbox: the export shows each entry's own spelling.
    await services.suppressions.add(
        ["Bob+News@client.example.net"], source="api", reason="asked", actor="agent"
    )
    privacy = privacy_of(services)

    email = await privacy.export(EMAIL, actor="dpo@example.com")
    number = await privacy.export(NUMBER, actor="dpo@example.com")

    assert email["subject"] == EMAIL_KEY
    assert [(s["address"], s["mailbox"], s["source"]) for s in email["suppressions"]] == [
        ("bob+news@client.example.net", EMAIL_KEY, "api"),
        (EMAIL_KEY, EMAIL_KEY, "cli"),
    ]
    assert [(b["recipient"], b["sender"]) for b in email["blocks"]] == [
        ("ann@client.example.net", "BOB@client.example.net"),
        ("Bob@client.example.net", "katie@example.com"),
    ]
    # As the agent spelled it, sealed or not (a sealed copy sits beside the blind index).
    assert [d["recipient"] for d in email["deliveries"]] == ["Bob@client.example.net"]
    assert [e["action"] for e in email["audit"]] == ["suppression.add"] * 2
    assert email["erased_suppression"] is False

    assert number["subject"] == NUMBER_KEY
    assert sorted(s["source"] for s in number["suppressions"]) == ["dnc:list.txt", "sms-stop"]
    assert [c["evidence"] for c in number["consents"]] == ["ip 192.0.2.1"]
    assert number["known_location"]["region"] == "US-NY"
    assert number["contacts"]["count"] == 1
    assert number["sms_notice_sent_at"] == (NOW - timedelta(hours=2)).isoformat()
    assert [b["recipient"] for b in number["blocks"]] == [NUMBER_KEY]

    exports = [e for e in await services.store.audit_events() if e.action == "privacy.export"]
    assert [e.actor for e in exports] == ["dpo@example.com"] * 2
    assert all(EMAIL_KEY not in e.subject and NUMBER_KEY not in e.subject for e in exports)
    assert await services.store.verify_audit() is None


async def test_erased_email_stays_suppressed_through_the_pipeline(services: Services) -> None:
    await remember_everything(services)
    assert await check(services, Channel.EMAIL, EMAIL_KEY) == ["SUPPRESSED"]

    counts = await privacy_of(services).erase(EMAIL, actor="dpo@example.com")

    assert counts == {"blocks": 2, "decisions": 2, "consents": 0, "known_locations": 0,
                      "contacts": 0, "notices": 0, "deliveries": 1, "suppressions": 1}
    assert await check(services, Channel.EMAIL, "bob@client.example.net") == ["SUPPRESSED"]
    assert await check(services, Channel.EMAIL, "BOB@client.example.net") == ["SUPPRESSED"]
    assert await check(services, Channel.EMAIL, "ann@client.example.net") == []


async def test_erased_number_stays_suppressed_and_its_data_is_gone(services: Services) -> None:
    await remember_everything(services)
    assert "SUPPRESSED" in await check(services, Channel.SMS, NUMBER_KEY)

    counts = await privacy_of(services).erase(NUMBER, actor="dpo@example.com")

    assert counts == {"blocks": 1, "decisions": 1, "consents": 1, "known_locations": 1,
                      "contacts": 1, "notices": 1, "deliveries": 0, "suppressions": 2}
    assert "SUPPRESSED" in await check(services, Channel.SMS, "+14155550100")
    after = await privacy_of(services).export(NUMBER, actor="dpo@example.com")
    assert after["erased_suppression"] is True
    emptied = {k: v for k, v in after.items()
               if k not in ("subject", "exported_at", "erased_suppression", "audit")}
    assert emptied == {"suppressions": [], "consents": [], "known_location": None,
                       "blocks": [], "decisions": [], "contacts": {"count": 0, "rows": []},
                       "sms_notice_sent_at": None, "deliveries": []}
    # The append-only log keeps what it said before; nothing new names the number.
    assert {e["action"] for e in after["audit"]} == {"suppression.add"}


async def test_erasure_leaves_one_hashed_row_and_no_trace_of_the_address(
    services: Services,
) -> None:
    await remember_everything(services)
    await privacy_of(services).erase(NUMBER, actor="dpo@example.com")

    rows = [s for s in await services.store.list_suppressions() if s.source == ERASED_SOURCE]
    assert len(rows) == 1
    assert NUMBER_KEY not in rows[0].address and rows[0].actor == "dpo@example.com"
    assert NUMBER_KEY not in {s.address for s in await services.store.list_suppressions()}
    [erase] = [e for e in await services.store.audit_events() if e.action == "privacy.erase"]
    assert erase.subject == rows[0].address
    assert NUMBER_KEY not in json.dumps(erase.details)
    assert await services.store.query_blocks(BlockQuery(recipient=NUMBER_KEY)) == []
    assert await services.store.verify_audit() is None


async def test_erasing_someone_never_suppressed_does_not_suppress_them(
    services: Services,
) -> None:
    await services.store.set_known_location(NUMBER_KEY, KnownLocation(region="US-NY"))
    counts = await privacy_of(services).erase(NUMBER, actor="dpo")
    assert counts["known_locations"] == 1 and counts["suppressions"] == 0
    assert await services.store.suppressed([NUMBER_KEY]) == frozenset()
    assert (await privacy_of(services).export(NUMBER, actor="dpo"))["erased_suppression"] is False


async def test_the_erased_opt_out_counts_as_the_address_own(services: Services) -> None:
    """Re-adding is not a new suppression; an operator's removal lifts the erased row too."""
    await services.suppressions.add([EMAIL], source="cli", reason="asked", actor="operator")
    await privacy_of(services).erase(EMAIL, actor="dpo")
    assert await services.store.suppressed([EMAIL_KEY, "ann@x.example"]) == {EMAIL_KEY}
    assert await services.suppressions.add([EMAIL], source="cli", reason="again",
                                           actor="operator") == 0
    assert await services.suppressions.remove([EMAIL], actor="operator") == 1
    assert await services.store.list_suppressions() == []


async def test_the_generated_erasure_key_survives_a_restart(
    config_factory: Callable[..., Config],
) -> None:
    config = config_factory()
    first = Services(config, Clock(NOW))
    await first.open()
    await first.suppressions.add([EMAIL], source="cli", reason="asked", actor="operator")
    await privacy_of(first).erase(EMAIL, actor="dpo")
    await first.close()

    again = Services(config, Clock(NOW))
    await again.open()
    try:
        assert again.erasure_key == first.erasure_key
        assert await again.store.suppressed([EMAIL_KEY]) == {EMAIL_KEY}
    finally:
        await again.close()


async def test_a_configured_erasure_key_is_used(
    config_factory: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_ERASURE_KEY", "e" * 40)
    config = config_factory('[privacy]\nerasure_key = "${GW_ERASURE_KEY}"\n')
    services = Services(config, Clock(NOW))
    await services.open()
    try:
        assert services.erasure_key == b"e" * 40
        assert await services.store.settings_named("key:erasure") == {}
    finally:
        await services.close()


def test_a_short_erasure_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, '[privacy]\nerasure_key = "short"\n'))
    assert raised.value.key == "privacy.erasure_key"


async def test_erased_address_is_refused_over_smtp(gateway: Gateway) -> None:
    await gateway.services.suppressions.add([EMAIL], source="test", reason="asked", actor="t")
    privacy = privacy_of(gateway.services)
    await privacy.erase(EMAIL, actor="dpo")

    smtp = await client(gateway)
    errors, _ = await smtp.send_message(first_touch(to=["bob@client.example.net",
                                                        "ann@client.example.net"]))
    await smtp.quit()

    assert set(errors) == {"bob@client.example.net"}
    assert "5.7.1 SUPPRESSED" in errors["bob@client.example.net"][1]
    assert len(outbox_messages(gateway)) == 1


# --- CLI ----------------------------------------------------------------------------------


def test_cli_export_erase_and_invalid_subject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    assert main(["suppress", "add", EMAIL, "--config", config]) == 0
    capsys.readouterr()

    assert main(["privacy", "export", EMAIL, "--config", config]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [s["source"] for s in exported["suppressions"]] == ["cli"]

    assert main(["privacy", "erase", EMAIL, "--actor", "dpo", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out)["opt_out_kept"] is True

    assert main(["privacy", "export", EMAIL, "--config", config]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["suppressions"] == [] and after["erased_suppression"] is True

    assert main(["privacy", "erase", "not an address", "--config", config]) == 2
    assert main(["audit", "verify", "--config", config]) == 0


def test_purge_needs_yes_then_leaves_only_its_own_audit_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path)
    config = str(config_path)
    assert main(["suppress", "add", EMAIL, NUMBER, "--config", config]) == 0
    assert main(["consent", "add", NUMBER, "--channel", "sms", "--kind", "express",
                 "--obtained-at", "2026-01-01T00:00:00Z", "--source", "form",
                 "--config", config]) == 0
    assert main(["privacy", "erase", EMAIL, "--config", config]) == 0
    outbox = load_config(config_path).data_dir / "outbox"
    for name in ("email/a.eml", "twilio/b.json"):
        (outbox / name).parent.mkdir(parents=True, exist_ok=True)
        (outbox / name).write_text("copy")

    assert main(["purge", "--config", config]) == 2
    assert (outbox / "email" / "a.eml").exists()

    assert main(["purge", "--yes", "--config", config]) == 0
    capsys.readouterr()
    assert not list(outbox.rglob("*.*"))
    assert main(["suppress", "list", "--config", config]) == 0
    # Opt-outs survive a purge, but only as keyed hashes: no address is left.
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2
    assert all(line.startswith("erased:") and ",erased," in line for line in listed)
    assert main(["privacy", "export", NUMBER, "--config", config]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["consents"] == [] and exported["suppressions"] == []
    assert exported["erased_suppression"] is True
    assert main(["audit", "list", "--config", config]) == 0
    actions = [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()]
    # The purge entry, then the export just run.
    assert actions == ["workspace.purge", "privacy.export"]
    assert main(["audit", "verify", "--config", config]) == 0


async def test_a_different_erasure_key_is_refused(tmp_path: Path) -> None:
    from gateway.store.base import StoreUnavailable
    from gateway.store.sqlite import SqliteStore

    path = tmp_path / "gateway.db"
    first = SqliteStore(path)
    await first.open()
    await first.use_erasure_key(b"a" * 32)
    await first.use_erasure_key(b"a" * 32)
    await first.close()
    second = SqliteStore(path)
    await second.open()
    with pytest.raises(StoreUnavailable, match="erasure key differs"):
        await second.use_erasure_key(b"b" * 32)
    await second.close()
