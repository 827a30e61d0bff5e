"""The data keys personal data is sealed with, checked against the store before anything
is read or written.

Data keys never live in the store they protect: they come from `[encryption] keys`, or
from `data_dir/data-keys.json`, generated on first start (so encryption is on by default).
The store keeps, per key id, a fingerprint (a replica holding another key under an id
refuses to start, naming it) and the time the id was first used (its age at /metrics).
The blind-index key is random and kept in the store only sealed under a data key, one copy
per data key, so rotating data keys never rewrites an index.

A store that holds data sealed under a key id this process lacks refuses start-up naming
the id; so does `enabled = false` on a store that holds ciphertext: no process ever writes
plaintext beside ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.config.settings import TOKEN_KEY_ID, Config, ConfigError
from gateway.runtime.metrics import KeyAge
from gateway.services.shared_keys import fingerprint
from gateway.store.base import SharedSettings
from gateway.store.sealing import (
    KEY_BYTES,
    PLAIN,
    DataCipher,
    DataKeyring,
    SealedDataError,
    generate_key,
)

DATA_KEY_FILE = "data-keys.json"
FINGERPRINT = "fingerprint:data-key:"
CREATED = "created:data-key:"
RETIRED = "retired:data-key:"
WRAPPED_INDEX_KEY = "wrapped:index-key:"
INDEX_KEY_MADE_UNDER = "index-key:made-under"
"""The data key id the store's index key was first wrapped under, claimed once by the first
replica to start on a fresh store and followed by every other, whatever its own active key:
two replicas starting together with different active keys would otherwise each make an
index key, and each miss the opt-outs the other indexed. An id, never a key."""
INDEX_KEY_IN_USE = "index-key:in-use"
"""Claimed once the index key is wrapped, before anything can be sealed: only its presence
says a missing index key was lost rather than not made yet. A fingerprint cannot say so;
it is claimed first, and a replica starting beside the first one would refuse to start
(taking the whole service down with it) in the moment between the two claims. Its value is
when it was claimed."""
INDEX_KEY_COLUMN = "settings.index_key"
GENERATED_KEY_ID = "d1"

KeyName = Callable[[str], str]
"""How an error names a data key id: its config key, or the generated file's."""


@dataclass(frozen=True)
class DataKeys:
    cipher: DataCipher
    created_at: dict[str, datetime]

    def ages(self) -> list[KeyAge]:
        """For `gateway_key_age_seconds{kind="data"}`: a key that no longer seals only opens
        what it sealed until `keys rotate-data` is done, so its age calls for no rotation."""
        return [
            KeyAge("data", key_id, created, retired=key_id != self.cipher.active_key_id)
            for key_id, created in self.created_at.items()
        ]


async def data_keys(config: Config, store: SharedSettings, now: datetime) -> DataKeys:
    if not config.encryption.enabled:
        if await store.settings_named(FINGERPRINT):
            raise ConfigError(
                "encryption.enabled",
                "this store holds data sealed with data keys: encryption cannot be turned off",
            )
        return DataKeys(PLAIN, {})
    where = _key_name(config)
    sealed_under, retired = await stored_key_ids(store)
    needed = [key_id for key_id in sealed_under if key_id not in retired]
    keys, active, created = _configured_or_generated(config, now, where, needed)
    if active in retired:
        raise ConfigError(
            where(active),
            "is retired: `keys rotate-data` re-sealed everything under another key; make "
            "the newer key active (a retired id is never used again)",
        )
    for key_id, key in keys.items():
        expected = fingerprint(key, "data-key")
        stored = await store.claim_setting(FINGERPRINT + key_id, expected)
        if not hmac.compare_digest(stored, expected):
            raise ConfigError(
                where(key_id),
                "differs from the key this store's data was sealed with under that id (its "
                "fingerprint is in the store): give every replica the same key, or a new id",
            )
    for key_id in needed:
        if key_id not in keys:
            raise ConfigError(
                where(key_id),
                "is missing: this store holds data sealed under it (keep it configured until "
                "`keys rotate-data` has re-sealed everything under the active key)",
            )
    created_at = {
        key_id: datetime.fromisoformat(
            await store.claim_setting(CREATED + key_id, created.get(key_id, now).isoformat())
        )
        for key_id in keys
    }
    index_key = await _index_key(store, keys, active, where)
    await store.claim_setting(INDEX_KEY_IN_USE, now.astimezone(UTC).isoformat())
    return DataKeys(DataCipher(DataKeyring(keys, active, index_key)), created_at)


async def stored_key_ids(store: SharedSettings) -> tuple[list[str], set[str]]:
    """The ids of every data key the store has seen (by their fingerprints), sorted, and
    those of them marked retired."""
    sealed_under = sorted(name.removeprefix(FINGERPRINT)
                          for name in await store.settings_named(FINGERPRINT))
    retired = {name.removeprefix(RETIRED) for name in await store.settings_named(RETIRED)}
    return sealed_under, retired


async def has_setting(store: SharedSettings, name: str) -> bool:
    """Whether the row `name` itself exists: `settings_named` matches a prefix, and key
    k1's names prefix key k10's."""
    return name in await store.settings_named(name)


def _key_name(config: Config) -> KeyName:
    if config.encryption.keys:
        return lambda key_id: f"encryption.keys.{key_id}"
    path = config.data_dir / DATA_KEY_FILE
    return lambda key_id: f"encryption.keys.{key_id} ({path})"


def _configured_or_generated(
    config: Config, now: datetime, where: KeyName, needed: list[str]
) -> tuple[dict[str, bytes], str, dict[str, datetime]]:
    """A key is generated only for a store that holds nothing sealed: a lost key file, or a
    second replica without the first's key, must not leave a useless new key behind."""
    if config.encryption.keys:
        return dict(config.encryption.keys), config.encryption.active, {}
    path = config.data_dir / DATA_KEY_FILE
    if not path.exists():
        if needed:
            raise ConfigError(
                where(needed[0]),
                "is missing: this store holds data sealed under it. Restore the file from "
                "backup, or give every replica the same [encryption] keys",
            )
        _write_generated(path, now)
    return _read_generated(path)


def _write_generated(path: Path, now: datetime) -> None:
    """Written whole to a private file of its own, then linked into place: two processes
    starting together keep one key, and neither ever reads a half-written file."""
    document = {
        "active": GENERATED_KEY_ID,
        "keys": {
            GENERATED_KEY_ID: {
                "key": base64.b64encode(generate_key()).decode(),
                "created_at": now.astimezone(UTC).isoformat(),
            }
        },
    }
    draft = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    except OSError as exc:
        raise ConfigError("gateway.data_dir", f"cannot create {path}: {exc}") from exc
    finally:
        draft.unlink(missing_ok=True)


def _read_generated(path: Path) -> tuple[dict[str, bytes], str, dict[str, datetime]]:
    """A damaged file stops start-up naming it: a guessed key would seal data nobody can
    open later."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys: dict[str, bytes] = {}
        created: dict[str, datetime] = {}
        for key_id, entry in document["keys"].items():
            if not TOKEN_KEY_ID.match(key_id):
                raise ValueError(f"key id {key_id!r} is not 1-16 letters, digits, _ or -")
            keys[key_id] = base64.b64decode(entry["key"], validate=True)
            if len(keys[key_id]) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is not {KEY_BYTES} bytes")
            created[key_id] = datetime.fromisoformat(entry["created_at"])
        active = document["active"]
        if active not in keys:
            raise ValueError(f"active names no key: {active!r}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError,
            binascii.Error) as exc:
        raise ConfigError(
            "gateway.data_dir",
            f"{path} (the generated data keys) is damaged: {exc}; restore it from backup",
        ) from exc
    return keys, active, created


async def _index_key(
    store: SharedSettings, keys: dict[str, bytes], active: str, where: KeyName
) -> bytes:
    """The store's blind-index key, unwrapped with any key held, and wrapped under the
    active key too (so the old key can retire). Made only for a store that never held
    sealed data: a new index key beside rows indexed under a lost one would find none of
    them, every opt-out missed. Every copy this replica can open must hold the same key:
    copies that differ (a replica stalled through another's start and a rotation, or a
    store split by an earlier release) mean replicas missing each other's opt-outs, and
    start-up refuses."""
    wrapper = DataCipher(DataKeyring(keys, active, b""))
    in_use = await has_setting(store, INDEX_KEY_IN_USE)  # first: it is claimed after a copy
    wrapped = await store.settings_named(WRAPPED_INDEX_KEY)
    if not wrapped and in_use:
        raise ConfigError(
            where(active),
            "cannot open the store's index key: no sealed copy of it is left in the settings "
            "table (wrapped:index-key:*), though data was sealed here. Restore the settings "
            "table from backup; a new index key would miss every stored opt-out",
        )
    if not wrapped:
        first = await store.claim_setting(INDEX_KEY_MADE_UNDER, active)
        if first not in keys:
            raise ConfigError(where(first), "is missing: the store's index key is made under "
                              f"data key {first!r} (settings row {INDEX_KEY_MADE_UNDER}, claimed "
                              "by the first replica to start here), which this one does not hold")
        maker = DataCipher(DataKeyring(keys, first, b""))
        candidate = maker.seal(base64.b64encode(generate_key()).decode(), INDEX_KEY_COLUMN)
        claimed = {WRAPPED_INDEX_KEY + first: await store.claim_setting(
            WRAPPED_INDEX_KEY + first, candidate)}
        # Copies under other keys may have been written meanwhile: they are checked too.
        wrapped = {**await store.settings_named(WRAPPED_INDEX_KEY), **claimed}
    held = {name: value for name, value in sorted(wrapped.items())
            if name.removeprefix(WRAPPED_INDEX_KEY) in keys}
    if not held:
        ids = ", ".join(sorted(name.removeprefix(WRAPPED_INDEX_KEY) for name in wrapped))
        raise ConfigError(
            where(sorted(name.removeprefix(WRAPPED_INDEX_KEY) for name in wrapped)[0]),
            f"is missing: the store's index key is sealed under data key(s) {ids} only",
        )
    opened = {name: _opened_index_key(wrapper, where, name, value)
              for name, value in held.items()}
    own = WRAPPED_INDEX_KEY + active
    if own not in wrapped:
        stored = await store.claim_setting(own, wrapper.seal(
            base64.b64encode(next(iter(opened.values()))).decode(), INDEX_KEY_COLUMN))
        opened[own] = _opened_index_key(wrapper, where, own, stored)
    if len(set(opened.values())) > 1:
        raise ConfigError(where(active), "opens settings rows " + ", ".join(sorted(opened))
                          + " that hold different index keys: replicas using one miss every "
                          "opt-out indexed under the other. Restore the settings table from "
                          "a backup taken before they differed")
    return next(iter(opened.values()))


def _opened_index_key(wrapper: DataCipher, where: KeyName, name: str, value: str) -> bytes:
    try:
        return base64.b64decode(wrapper.open(value, INDEX_KEY_COLUMN, f"settings {name}"))
    except (SealedDataError, binascii.Error, ValueError) as exc:
        raise ConfigError(where(name.removeprefix(WRAPPED_INDEX_KEY)), f"does not open the "
                          f"store's index key: {exc}") from exc
