"""Which data keys processes seal under (gateway/services/data_key_use.py), and the pass that
retires old keys only when no process can have sealed under them while it ran
(gateway/services/data_rotation.py). A real SQLite store; the wait between the pass's two
reads is where the test lets other processes beat, start or stop."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, build_config
from gateway.model import Suppression
from gateway.services.data_key_use import (
    PASS_RUNNING,
    SEALING,
    STOPPED,
    SealersAtStart,
    SealingBeat,
)
from gateway.services.data_keys import RETIRED, WRAPPED_INDEX_KEY, data_keys
from gateway.services.data_rotation import RESEALED_THROUGH, reseal_in_background, reseal_store
from gateway.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
K1, K2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))



def during_wait(action: Callable[[], Awaitable[None]] | None = None):  # type: ignore[no-untyped-def]
    """A wait that runs `action` (other processes' doings) instead of sleeping, and counts."""
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)
        if action is not None:
            await action()

    wait.waits = waits  # type: ignore[attr-defined]
    return wait


async def test_no_process_rows_means_no_wait_and_no_key_in_use(store: SqliteStore) -> None:
    wait = during_wait()
    sealers = await SealersAtStart.read(store)
    assert await sealers.keys_in_use(store, ["k1"], wait) == set()
    assert wait.waits == []  # type: ignore[attr-defined]


async def test_a_process_that_beats_keeps_its_key(store: SqliteStore) -> None:
    live = SealingBeat(store, "k1")
    await live.beat()
    sealers = await SealersAtStart.read(store)
    assert await sealers.keys_in_use(store, ["k1"], during_wait(live.beat)) == {"k1"}


async def test_a_dead_process_holds_its_key_one_pass_then_its_row_goes(
    store: SqliteStore,
) -> None:
    """It may have sealed during the pass it was alive at; after that pass it is known dead."""
    dead = SealingBeat(store, "k1")
    await dead.beat()
    first = await SealersAtStart.read(store)
    assert await first.keys_in_use(store, ["k1"], during_wait()) == {"k1"}
    assert await store.settings_named(dead.name) == {dead.name: STOPPED}
    second = await SealersAtStart.read(store)
    assert await second.keys_in_use(store, ["k1"], during_wait()) == set()
    assert await store.settings_named(SEALING) == {}


async def test_a_process_stopped_before_the_pass_holds_nothing(store: SqliteStore) -> None:
    stopped = SealingBeat(store, "k1")
    await stopped.beat()
    await stopped.stop()
    other = SealingBeat(store, "k2")
    await other.beat()
    wait = during_wait(other.beat)
    sealers = await SealersAtStart.read(store)
    assert await sealers.keys_in_use(store, ["k1"], wait) == set()
    assert wait.waits == []  # type: ignore[attr-defined]  # k2 is no candidate: no wait
    assert list(await store.settings_named(SEALING)) == [other.name]


async def test_a_process_that_started_and_stopped_during_the_pass_keeps_its_key(
    store: SqliteStore,
) -> None:
    sealers = await SealersAtStart.read(store)
    brief = SealingBeat(store, "k1")  # e.g. a CLI command run with the old configuration
    await brief.beat()
    await brief.stop()
    assert await sealers.keys_in_use(store, ["k1"], during_wait()) == {"k1"}


async def test_a_process_leaves_no_row_behind_unless_a_pass_runs(store: SqliteStore) -> None:
    """Many short CLI commands must not pile rows up; one stopping during a pass must still
    be seen by it."""
    quiet = SealingBeat(store, "k1")
    await quiet.beat()
    await quiet.stop()
    assert await store.settings_named(SEALING) == {}
    sealers = await SealersAtStart.read(store)
    during = SealingBeat(store, "k1")
    await during.beat()
    await during.stop()
    assert await store.settings_named(SEALING) == {during.name: STOPPED}
    assert await sealers.keys_in_use(store, ["k1"], during_wait()) == {"k1"}
    assert await store.settings_named(PASS_RUNNING) == {}


async def test_a_key_retired_under_a_live_process_is_taken_back(store: SqliteStore) -> None:
    live = SealingBeat(store, "k1")
    await live.beat()
    await store.claim_setting(RETIRED + "k1", "k2")
    await live.beat()
    assert await store.settings_named(RETIRED) == {}


def config(tmp_path: Path, keys: dict[str, str], active: str):  # type: ignore[no-untyped-def]
    return build_config(
        {"gateway": {"data_dir": str(tmp_path / "data")},
         "encryption": {"keys": keys, "active": active}},
        source=None, base_dir=tmp_path,
    )


async def rotate(store: SqliteStore, tmp_path: Path, wait):  # type: ignore[no-untyped-def]
    keys = await data_keys(config(tmp_path, {"k1": K1, "k2": K2}, "k2"), store, NOW)
    await store.use_data_cipher(keys.cipher)
    return await reseal_store(store, "k2", wait=wait)


async def test_a_pass_keeps_a_key_a_running_gateway_seals_under(
    store: SqliteStore, tmp_path: Path
) -> None:
    await data_keys(config(tmp_path, {"k1": K1}, "k1"), store, NOW)
    old_gateway = SealingBeat(store, "k1")
    await old_gateway.beat()
    report = await rotate(store, tmp_path, during_wait(old_gateway.beat))
    assert (report.retired, report.in_use) == ([], ["k1"])
    assert await store.settings_named(RESEALED_THROUGH) == {}  # not done: it runs again
    assert WRAPPED_INDEX_KEY + "k1" in await store.settings_named(WRAPPED_INDEX_KEY)
    with pytest.raises(ConfigError, match="missing") as refused:
        await data_keys(config(tmp_path, {"k2": K2}, "k2"), store, NOW)
    assert refused.value.key == "encryption.keys.k1"

    await old_gateway.stop()  # restarted with k2 active
    again = await rotate(store, tmp_path, during_wait())
    assert (again.retired, again.in_use) == (["k1"], [])
    assert list(await store.settings_named(WRAPPED_INDEX_KEY)) == [WRAPPED_INDEX_KEY + "k2"]
    assert (await data_keys(config(tmp_path, {"k2": K2}, "k2"), store, NOW)).cipher.enabled


async def test_a_retired_key_cannot_be_made_active_again(
    store: SqliteStore, tmp_path: Path
) -> None:
    await data_keys(config(tmp_path, {"k1": K1}, "k1"), store, NOW)
    assert (await rotate(store, tmp_path, during_wait())).retired == ["k1"]
    with pytest.raises(ConfigError, match="retired") as refused:
        await data_keys(config(tmp_path, {"k1": K1, "k2": K2}, "k1"), store, NOW)
    assert refused.value.key == "encryption.keys.k1"


async def test_settings_of_another_key_whose_id_extends_this_one_are_not_this_ones(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """k10's retirement and k10's finished pass say nothing about k1: settings are read by
    prefix, and 'k1' prefixes 'k10'."""
    await store.claim_setting(RETIRED + "k10", "k2")
    await store.claim_setting(RESEALED_THROUGH + "k10", "done")
    await SealingBeat(store, "k1").beat()
    assert "data-key.retired_in_use" not in caplog.text
    await reseal_in_background(store, "k1")
    assert RESEALED_THROUGH + "k1" in await store.settings_named(RESEALED_THROUGH)


async def test_an_opt_out_written_in_clear_after_a_pass_finished_still_blocks(
    store: SqliteStore, tmp_path: Path
) -> None:
    """A replica of an earlier release neither seals nor beats: during a rolling upgrade it
    takes STOP replies in clear after a pass has finished. Lookups on this replica, and on
    one started after the pass (which does not walk again), must still find them."""
    earlier_release = SqliteStore(tmp_path / "gateway.db")
    await earlier_release.open()
    keys = await data_keys(config(tmp_path, {"k1": K1}, "k1"), store, NOW)
    await store.use_data_cipher(keys.cipher)
    await reseal_store(store, "k1", wait=during_wait())
    assert RESEALED_THROUGH + "k1" in await store.settings_named(RESEALED_THROUGH)
    stop = Suppression("+12125550147", "sms-stop", "STOP", NOW, "twilio")
    await earlier_release.add_suppressions([stop])

    later = SqliteStore(tmp_path / "gateway.db")
    await later.open()
    try:
        await later.use_data_cipher(
            (await data_keys(config(tmp_path, {"k1": K1}, "k1"), later, NOW)).cipher
        )
        await reseal_in_background(later, "k1")  # finished before: returns at once
        assert await store.suppressed([stop.address]) == {stop.address}
        assert await later.suppressed([stop.address]) == {stop.address}
    finally:
        await later.close()
        await earlier_release.close()
