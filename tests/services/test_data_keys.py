"""Data keys (gateway/services/data_keys.py): generated on first start, checked against the
store's fingerprints, refused by name when missing or different, never stored in the clear."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, build_config
from gateway.services.data_keys import (
    CREATED,
    DATA_KEY_FILE,
    FINGERPRINT,
    INDEX_KEY_COLUMN,
    INDEX_KEY_MADE_UNDER,
    RETIRED,
    WRAPPED_INDEX_KEY,
    _read_generated,
    _write_generated,
    data_keys,
)
from gateway.services.data_rotation import reseal_store
from gateway.services.shared_keys import ERASURE_KEY, shared_keys
from gateway.store.errors import StoreUnavailable
from gateway.store.sealing import PLAIN, DataCipher, DataKeyring, sealed_key_id
from gateway.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def config_for(tmp_path: Path, encryption: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    raw: dict[str, object] = {
        "gateway": {"data_dir": str(tmp_path / "data")},
        "encryption": {"enabled": True, **(encryption or {})},
    }
    return build_config(raw, source=None, base_dir=tmp_path)



async def test_a_key_is_generated_privately_into_data_dir_and_used_again(
    tmp_path: Path, store: SqliteStore
) -> None:
    config = config_for(tmp_path)
    first = await data_keys(config, store, NOW)
    path = tmp_path / "data" / DATA_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.cipher.enabled and first.created_at == {"d1": NOW}
    sealed = first.cipher.seal("lead@example.com", "t.c")
    again = await data_keys(config, store, NOW.replace(year=2027))
    assert again.cipher.open(sealed, "t.c", "r") == "lead@example.com"
    assert again.cipher.blind("lead@example.com") == first.cipher.blind("lead@example.com")
    assert again.created_at == {"d1": NOW}


async def test_encryption_is_on_without_an_encryption_table(
    tmp_path: Path, store: SqliteStore
) -> None:
    config = build_config({"gateway": {"data_dir": str(tmp_path / "data")}}, source=None,
                          base_dir=tmp_path)
    keys = await data_keys(config, store, NOW)
    assert keys.cipher.enabled and keys.cipher.active_key_id == "d1"
    assert keys.cipher.seal("lead@example.com", "t.c") != "lead@example.com"


async def test_a_generated_key_moved_into_the_configuration_opens_what_it_sealed(
    tmp_path: Path, store: SqliteStore
) -> None:
    """What a single replica does before a second joins: its `d1` entry, configured."""
    generated = await data_keys(config_for(tmp_path), store, NOW)
    sealed = generated.cipher.seal("lead@example.com", "t.c")
    document = json.loads((tmp_path / "data" / DATA_KEY_FILE).read_text())
    (tmp_path / "data" / DATA_KEY_FILE).unlink()
    configured = await data_keys(
        config_for(tmp_path, {"keys": {"d1": document["keys"]["d1"]["key"]}}), store, NOW
    )
    assert configured.cipher.open(sealed, "t.c", "r") == "lead@example.com"
    assert configured.cipher.blind("x") == generated.cipher.blind("x")
    assert not (tmp_path / "data" / DATA_KEY_FILE).exists()


async def test_a_lost_key_file_refuses_start_and_generates_no_other_key(
    tmp_path: Path, store: SqliteStore
) -> None:
    await data_keys(config_for(tmp_path), store, NOW)
    (tmp_path / "data" / DATA_KEY_FILE).unlink()
    with pytest.raises(ConfigError, match="missing") as caught:
        await data_keys(config_for(tmp_path), store, NOW)
    assert caught.value.key.startswith("encryption.keys.d1 (")
    assert list((tmp_path / "data").iterdir()) == []


def test_processes_generating_together_all_read_one_whole_key(tmp_path: Path) -> None:
    """Workers starting at once on a fresh data_dir: one key, never a half-written file."""
    path = tmp_path / "data" / DATA_KEY_FILE
    start = threading.Barrier(8)

    def generate_and_read(_: int) -> bytes:
        start.wait()
        _write_generated(path, NOW)
        return _read_generated(path)[0]["d1"]

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(generate_and_read, range(8)))
    assert len(keys) == 1
    assert [entry.name for entry in path.parent.iterdir()] == [DATA_KEY_FILE]


async def test_the_store_holds_no_data_key_and_no_index_key_in_the_clear(
    tmp_path: Path, store: SqliteStore
) -> None:
    config = config_for(tmp_path)
    await data_keys(config, store, NOW)
    document = json.loads((tmp_path / "data" / DATA_KEY_FILE).read_text())
    key = document["keys"]["d1"]["key"]
    settings = await store.settings_named("")
    assert all(key not in value for value in settings.values())
    assert all(value.startswith("\x1e") for name, value in settings.items()
               if name.startswith("wrapped:index-key:"))


async def test_another_key_under_the_same_id_refuses_start_naming_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    await data_keys(config_for(tmp_path, {"keys": {"k1": key_text()}}), store, NOW)
    with pytest.raises(ConfigError) as caught:
        await data_keys(config_for(tmp_path, {"keys": {"k1": key_text()}}), store, NOW)
    assert caught.value.key == "encryption.keys.k1"


async def test_a_missing_key_the_store_holds_data_under_refuses_start_naming_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    k1 = key_text()
    await data_keys(config_for(tmp_path, {"keys": {"k1": k1}}), store, NOW)
    with pytest.raises(ConfigError) as caught:
        await data_keys(config_for(tmp_path, {"keys": {"k2": key_text()}}), store, NOW)
    assert caught.value.key == "encryption.keys.k1"


async def test_a_new_active_key_keeps_every_blind_index_and_opens_old_data(
    tmp_path: Path, store: SqliteStore
) -> None:
    k1 = key_text()
    before = await data_keys(config_for(tmp_path, {"keys": {"k1": k1}}), store, NOW)
    sealed = before.cipher.seal("+15551234567", "t.c")
    after = await data_keys(
        config_for(tmp_path, {"keys": {"k1": k1, "k2": key_text()}, "active": "k2"}), store, NOW
    )
    assert after.cipher.active_key_id == "k2"
    assert after.cipher.blind("+15551234567") == before.cipher.blind("+15551234567")
    assert after.cipher.open(sealed, "t.c", "r") == "+15551234567"
    assert "wrapped:index-key:k2" in await store.settings_named("wrapped:index-key:")


class StartingTogether:
    """The store as two replicas starting at the same instant see it: neither reads the
    wrapped index keys until both have, so both find none."""

    def __init__(self, store: SqliteStore, replicas: int) -> None:
        self._store = store
        self._replicas = replicas
        self._read = 0
        self._all_read = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def settings_named(self, prefix: str) -> dict[str, str]:
        found = await self._store.settings_named(prefix)
        if prefix == WRAPPED_INDEX_KEY and not self._all_read.is_set():
            self._read += 1
            if self._read == self._replicas:
                self._all_read.set()
            await self._all_read.wait()
        return found


class StallingAfter:
    """A replica that stalls (a long GC pause, a starved pod) right after its first read of
    the settings under `prefix`, until told to go on."""

    def __init__(self, store: SqliteStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self.stalled = asyncio.Event()
        self.go_on = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def settings_named(self, prefix: str) -> dict[str, str]:
        found = await self._store.settings_named(prefix)
        if prefix == self._prefix and not self.stalled.is_set():
            self.stalled.set()
            await self.go_on.wait()
        return found


async def test_replicas_starting_together_with_different_active_keys_share_one_index_key(
    tmp_path: Path, store: SqliteStore
) -> None:
    """Otherwise each indexes the opt-outs it takes under a key of its own, and the other
    replica's lookups miss them."""
    keys = {"k1": key_text(), "k2": key_text()}
    together = StartingTogether(store, 2)
    first, second = await asyncio.gather(*(
        data_keys(config_for(tmp_path, {"keys": keys, "active": active}), together, NOW)
        for active in ("k2", "k1")
    ))
    assert first.cipher.active_key_id != second.cipher.active_key_id
    assert first.cipher.blind("+15551234567") == second.cipher.blind("+15551234567")
    again = await data_keys(config_for(tmp_path, {"keys": keys, "active": "k1"}), store, NOW)
    assert again.cipher.blind("+15551234567") == first.cipher.blind("+15551234567")


async def test_a_replica_without_the_key_the_index_key_is_made_under_refuses_start(
    tmp_path: Path, store: SqliteStore
) -> None:
    together = StartingTogether(store, 2)
    outcomes = await asyncio.gather(
        data_keys(config_for(tmp_path, {"keys": {"k1": key_text()}}), together, NOW),
        data_keys(config_for(tmp_path, {"keys": {"k2": key_text()}}), together, NOW),
        return_exceptions=True,
    )
    refused = [outcome for outcome in outcomes if isinstance(outcome, ConfigError)]
    assert len(refused) == 1, outcomes
    started = next(outcome for outcome in outcomes if not isinstance(outcome, BaseException))
    assert refused[0].key == f"encryption.keys.{started.cipher.active_key_id}"


async def test_a_replica_stalled_through_a_start_and_a_rotation_refuses_a_second_index_key(
    tmp_path: Path, store: SqliteStore
) -> None:
    """B and A start together on an empty store, both before either has written anything;
    A reads no index key and stalls; B makes the index key under k1, the operator rotates
    to k2 and the pass retires k1 (dropping k1's copy). A goes on: it must not make a
    second index key in the row k1's copy left free."""
    keys = {"k1": key_text(), "k2": key_text()}
    early = StallingAfter(store, RETIRED)
    starting = asyncio.create_task(
        data_keys(config_for(tmp_path, {"keys": keys, "active": "k1"}), early, NOW))
    await early.stalled.wait()
    stalled = StallingAfter(store, WRAPPED_INDEX_KEY)
    late = asyncio.create_task(
        data_keys(config_for(tmp_path, {"keys": keys, "active": "k2"}), stalled, NOW))
    await stalled.stalled.wait()
    early.go_on.set()
    first = await starting
    rotated = await data_keys(config_for(tmp_path, {"keys": keys, "active": "k2"}), store, NOW)
    assert (await reseal_store(store, "k2")).retired == ["k1"]
    assert rotated.cipher.blind("+15551234567") == first.cipher.blind("+15551234567")
    stalled.go_on.set()
    try:
        resumed = await late
    except ConfigError as refused:
        assert "different index keys" in str(refused)
    else:
        assert resumed.cipher.blind("+15551234567") == first.cipher.blind("+15551234567")


class StallingAfterClaiming:
    """A replica that stalls right after its first claim of a setting under `prefix`, or
    whose store fails that claim (`fails`): a start interrupted between two of its writes."""

    def __init__(self, store: SqliteStore, prefix: str, *, fails: bool = False) -> None:
        self._store = store
        self._prefix = prefix
        self._fails = fails
        self.stalled = asyncio.Event()
        self.go_on = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def claim_setting(self, name: str, value: str) -> str:
        if not name.startswith(self._prefix) or self.stalled.is_set():
            return await self._store.claim_setting(name, value)
        self.stalled.set()
        if self._fails:
            raise StoreUnavailable("the store went away between two claims")
        claimed = await self._store.claim_setting(name, value)
        await self.go_on.wait()
        return claimed


# Every write of a first start, in order: a second replica may start between any two.
FIRST_START_CLAIMS = [FINGERPRINT, CREATED, INDEX_KEY_MADE_UNDER, WRAPPED_INDEX_KEY]


@pytest.mark.parametrize("stalled_after", FIRST_START_CLAIMS)
async def test_a_replica_starting_while_the_first_is_between_its_claims_shares_its_key(
    tmp_path: Path, store: SqliteStore, stalled_after: str
) -> None:
    """`workers = 2` starts two processes on a fresh store at once: one that refuses to
    start takes the whole service down (seen as connections reset in CI)."""
    keys = {"k1": key_text()}
    first = StallingAfterClaiming(store, stalled_after)
    starting = asyncio.create_task(
        data_keys(config_for(tmp_path, {"keys": keys}), first, NOW))
    await first.stalled.wait()
    second = await data_keys(config_for(tmp_path, {"keys": keys}), store, NOW)
    first.go_on.set()
    assert (await starting).cipher.blind("+15551234567") == second.cipher.blind("+15551234567")


@pytest.mark.parametrize("failed_at", FIRST_START_CLAIMS)
async def test_a_first_start_cut_short_between_its_claims_does_not_block_the_next(
    tmp_path: Path, store: SqliteStore, failed_at: str
) -> None:
    keys = {"k1": key_text()}
    with pytest.raises(StoreUnavailable):
        await data_keys(config_for(tmp_path, {"keys": keys}),
                        StallingAfterClaiming(store, failed_at, fails=True), NOW)
    started = await data_keys(config_for(tmp_path, {"keys": keys}), store, NOW)
    again = await data_keys(config_for(tmp_path, {"keys": keys}), store, NOW)
    assert started.cipher.blind("+15551234567") == again.cipher.blind("+15551234567")


async def test_an_index_key_lost_after_its_first_use_refuses_start_rather_than_remake_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    """A new index key would find none of the opt-outs indexed under the lost one."""
    keys = {"k1": key_text()}
    await data_keys(config_for(tmp_path, {"keys": keys}), store, NOW)
    for name in await store.settings_named(WRAPPED_INDEX_KEY):
        await store.drop_setting(name)
    with pytest.raises(ConfigError) as refused:
        await data_keys(config_for(tmp_path, {"keys": keys}), store, NOW)
    assert refused.value.key == "encryption.keys.k1"
    assert "no sealed copy" in str(refused.value)
    assert not await store.settings_named(WRAPPED_INDEX_KEY)


async def test_copies_of_the_index_key_that_differ_refuse_start_naming_them(
    tmp_path: Path, store: SqliteStore
) -> None:
    """A store split before this release (each active key made its own index key)."""
    k1, k2 = key_text(), key_text()
    await data_keys(config_for(tmp_path, {"keys": {"k1": k1}}), store, NOW)
    other = DataCipher(DataKeyring({"k2": base64.b64decode(k2)}, "k2", b""))
    await store.claim_setting(WRAPPED_INDEX_KEY + "k2", other.seal(key_text(), INDEX_KEY_COLUMN))
    with pytest.raises(ConfigError) as refused:
        await data_keys(config_for(tmp_path, {"keys": {"k1": k1, "k2": k2}, "active": "k2"}),
                        store, NOW)
    assert "wrapped:index-key:k1, wrapped:index-key:k2" in str(refused.value)
    assert "different index keys" in str(refused.value)
    assert refused.value.key == "encryption.keys.k2"


async def test_encryption_cannot_be_turned_off_on_a_store_holding_ciphertext(
    tmp_path: Path, store: SqliteStore
) -> None:
    assert (await data_keys(config_for(tmp_path, {"enabled": False}), store, NOW)).cipher is PLAIN
    await data_keys(config_for(tmp_path), store, NOW)
    with pytest.raises(ConfigError) as caught:
        await data_keys(config_for(tmp_path, {"enabled": False}), store, NOW)
    assert caught.value.key == "encryption.enabled"


@pytest.mark.parametrize(
    "damaged",
    [
        "not json",
        json.dumps(
            {"active": "d1", "keys": {"d1": {"key": "c2hvcnQ=", "created_at": "2026-01-01"}}}
        ),
        json.dumps({"active": "d9", "keys": {}}),
    ],
)
async def test_a_damaged_generated_key_file_refuses_start_naming_it(
    tmp_path: Path, store: SqliteStore, damaged: str
) -> None:
    path = tmp_path / "data" / DATA_KEY_FILE
    path.parent.mkdir(parents=True)
    path.write_text(damaged)
    with pytest.raises(ConfigError) as caught:
        await data_keys(config_for(tmp_path), store, NOW)
    assert caught.value.key == "gateway.data_dir" and str(path) in str(caught.value)



async def test_the_shared_erasure_key_is_kept_sealed_and_follows_the_active_key(
    tmp_path: Path, store: SqliteStore
) -> None:
    """One an earlier version left in clear is sealed at the next start, and sealed again
    under a new active key, so no copy of the store holds it in clear or under a retired
    key; the key itself never changes (erased opt-outs must keep matching)."""
    plain = build_config({"gateway": {"data_dir": str(tmp_path / "data")},
                          "encryption": {"enabled": False}}, source=None, base_dir=tmp_path)
    before = (await shared_keys(plain, store, NOW)).erasure_key
    assert (await store.settings_named(ERASURE_KEY))[ERASURE_KEY] == before.decode()

    k1, k2 = key_text(), key_text()
    first = await data_keys(config_for(tmp_path, {"keys": {"k1": k1}}), store, NOW)
    assert (await shared_keys(plain, store, NOW, first.cipher)).erasure_key == before
    stored = (await store.settings_named(ERASURE_KEY))[ERASURE_KEY]
    assert sealed_key_id(stored) == "k1" and before.decode() not in stored

    rotated = await data_keys(
        config_for(tmp_path, {"keys": {"k1": k1, "k2": k2}, "active": "k2"}), store, NOW
    )
    assert (await shared_keys(plain, store, NOW, rotated.cipher)).erasure_key == before
    assert sealed_key_id((await store.settings_named(ERASURE_KEY))[ERASURE_KEY]) == "k2"
