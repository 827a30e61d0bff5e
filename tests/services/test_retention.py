"""The retention job with a moved clock: old records go, newer ones stay, the audit verifies."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import gateway.services.retention as retention
from gateway.cli import main
from gateway.config.settings import Config, ConfigError, load_config
from gateway.model import AuditEvent, BlockRecord, Channel, Reason
from gateway.runtime.clock import Clock
from gateway.server import Gateway, Services
from gateway.services.retention import apply_retention, run_retention_periodically
from gateway.store.base import AuditProblem, BlockQuery, DecisionQuery
from tests.conftest import write_config
from tests.store.test_decisions import decision

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def services(config_factory: Callable[..., Config]) -> AsyncIterator[Services]:
    services = Services(config_factory(), Clock(NOW))
    await services.open()
    yield services
    await services.close()


def block(age: timedelta, recipient: str) -> BlockRecord:
    return BlockRecord(
        time=NOW - age, channel=Channel.EMAIL, account="demo", sender="katie@example.com",
        recipient=recipient, reasons=(Reason("SUPPRESSED", "listed", "r"),), rules_version="v1",
        message_id="<m@x>", subject="Private matter",
    )


def outbox_file(config: Config, name: str, age: timedelta) -> Path:
    path = config.data_dir / "outbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("copy")
    moment = (NOW - age).timestamp()
    os.utime(path, (moment, moment))
    return path


async def test_old_records_go_and_newer_ones_stay(services: Services) -> None:
    store, config = services.store, services.config
    for age, recipient in ((timedelta(days=400), "old@x.example"),
                           (timedelta(days=40), "middle@x.example"),
                           (timedelta(days=1), "new@x.example")):
        await store.record_block(block(age, recipient))
    await store.record_decisions([
        replace(decision(recipient), time=NOW - timedelta(days=days))
        for days, recipient in ((401, "old@x.example"), (399, "kept@x.example"))
    ])
    for days in (500, 400, 10):
        await store.append_audit(AuditEvent(NOW - timedelta(days=days), "t", "test.event"))
    old_mail = outbox_file(config, "email/old.eml", timedelta(hours=25))
    new_mail = outbox_file(config, "email/new.eml", timedelta(hours=23))
    old_text = outbox_file(config, "twilio/old.json", timedelta(days=3))

    counts = await apply_retention(store, config, NOW)

    assert counts == {
        "blocks": 1, "decisions": 1, "block_metadata": 1, "outbox_files": 2, "audit": 2
    }
    assert [d.recipient for d in await store.query_decisions(DecisionQuery())] == [
        "kept@x.example"
    ], "decisions are kept retention.decision_days (400 by default)"
    kept = {b.recipient: b for b in await store.query_blocks(BlockQuery())}
    assert set(kept) == {"middle@x.example", "new@x.example"}
    assert (kept["middle@x.example"].subject, kept["middle@x.example"].message_id) == ("", "")
    assert (kept["new@x.example"].subject, kept["new@x.example"].message_id) == (
        "Private matter", "<m@x>",
    )
    assert not old_mail.exists() and not old_text.exists() and new_mail.exists()
    assert [e.action for e in await store.audit_events()] == ["test.event", "retention.apply"]
    assert await store.verify_audit() is None


async def test_a_second_run_finds_nothing_and_records_nothing(services: Services) -> None:
    await services.store.record_block(block(timedelta(days=400), "old@x.example"))
    await apply_retention(services.store, services.config, NOW)
    before = await services.store.audit_events()
    assert await apply_retention(services.store, services.config, NOW) == {
        "blocks": 0, "decisions": 0, "block_metadata": 0, "outbox_files": 0, "audit": 0,
    }
    assert await services.store.audit_events() == before


async def test_pruned_chain_verifies_continues_and_still_detects_tampering(
    services: Services,
) -> None:
    store = services.store
    for days in (800, 700, 600):
        await store.append_audit(AuditEvent(NOW - timedelta(days=days), "t", "old"))
    assert await store.prune_audit(NOW) == 3
    assert await store.audit_events() == []
    assert await store.verify_audit() is None

    first = await store.append_audit(AuditEvent(NOW, "t", "after"))
    await store.append_audit(AuditEvent(NOW, "t", "after"))
    assert await store.verify_audit() is None
    assert first.prev_hash != "0" * 64  # links to the anchor, not to GENESIS

    await store.prune_audit(NOW - timedelta(days=1))  # nothing older: the anchor stays
    assert await store.verify_audit() is None
    await store.purge(AuditEvent(NOW, "owner", "workspace.purge"))  # resets the anchor
    assert [e.action for e in await store.audit_events()] == ["workspace.purge"]
    assert await store.verify_audit() is None

    await store.append_audit(AuditEvent(NOW, "t", "x"))
    await store.prune_audit(NOW + timedelta(seconds=1))
    await store.append_audit(AuditEvent(NOW, "t", "y"))
    assert await store.verify_audit() is None


async def test_prune_removes_a_prefix_only(services: Services) -> None:
    """An old entry after a newer one (a clock stepped back) waits: no hole in the chain."""
    store = services.store
    for days in (400, 1, 400):
        await store.append_audit(AuditEvent(NOW - timedelta(days=days), "t", f"{days}"))
    assert await store.prune_audit(NOW - timedelta(days=365)) == 1
    assert [e.action for e in await store.audit_events()] == ["1", "400"]
    assert await store.verify_audit() is None


async def test_deleting_the_first_entry_after_a_prune_is_detected(
    services: Services, tmp_path: Path
) -> None:
    import sqlite3

    store = services.store
    for days in (400, 10, 5):
        await store.append_audit(AuditEvent(NOW - timedelta(days=days), "t", "e"))
    await store.prune_audit(NOW - timedelta(days=365))
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as connection:
        connection.execute("DELETE FROM audit WHERE id = 2")
    assert await store.verify_audit() == AuditProblem(3, "first entry does not start the chain")


async def test_the_periodic_task_runs_once_per_interval_until_cancelled(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.store.record_block(block(timedelta(days=400), "old@x.example"))
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    monkeypatch.setattr(retention.asyncio, "sleep", fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        await run_retention_periodically(services.store, services.config, services.clock)
    assert sleeps == [3600, 3600]
    assert await services.store.query_blocks(BlockQuery()) == []


async def test_the_gateway_starts_and_stops_its_retention_task(
    config_factory: Callable[..., Config],
) -> None:
    gateway = Gateway(config_factory())
    await gateway.start()
    task = gateway._retention_task
    assert task is not None and not task.done()
    await gateway.stop()
    assert task.cancelled()


def test_cli_retention_run_prints_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    assert main(["retention", "run", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "blocks": 0, "decisions": 0, "block_metadata": 0, "outbox_files": 0, "audit": 0,
    }


def test_retention_defaults(tmp_path: Path) -> None:
    retention_config = load_config(write_config(tmp_path)).retention
    assert (retention_config.block_metadata_days, retention_config.blocks_days,
            retention_config.outbox_hours, retention_config.audit_days,
            retention_config.interval_s) == (30, 365, 24, 365, 3600)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("blocks_days = 0", "retention.blocks_days"),
        ("audit_days = -5", "retention.audit_days"),
        ('outbox_hours = "24"', "retention.outbox_hours"),
        ("interval_s = 1.5", "retention.interval_s"),
        ("block_metadata_days = true", "retention.block_metadata_days"),
        ("block_metadata_days = 400", "retention.block_metadata_days"),
        ("keep_forever = 1", "retention.keep_forever"),
    ],
)
def test_bad_retention_values_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, f"[retention]\n{extra}\n"))
    assert raised.value.key == key
