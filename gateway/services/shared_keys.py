"""Keys every replica must hold the same, shared through the store they share.

Unsubscribe links (and the review sessions keyed from them) must verify on whichever
replica a recipient reaches, and erased opt-outs must match on every replica, so a key each
replica generated for itself would make opt-outs fail silently. A key the operator
configures stays in the configuration; the store keeps only its fingerprint, and a replica
whose key differs refuses to start, naming the key. A key nobody configured is generated
once into the store, by whichever replica gets there first, and read by the rest.

Keys generated into `data_dir` by earlier versions are adopted: the first replica to start
claims its own as the shared key, and every other replica's is kept beside it under the same
key id, so that every link ever issued keeps working.

Each token key id's creation time is claimed beside its fingerprint (`created:` settings,
`key_ages`), so every replica reports the same `gateway_key_age_seconds{kind="token"}`; an
adopted key's is its file's modification time, since it may be far older than this start.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.config.settings import TOKEN_KEY_ID, Config, ConfigError
from gateway.services.key_ages import TOKEN_CREATED, UnreadableCreationTime, first_seen
from gateway.store.base import SharedSettings
from gateway.store.sealing import PLAIN, DataCipher, sealed_key_id

TOKEN_KEY = "key:unsubscribe-token:"
LEGACY_TOKEN_KEY = "key:unsubscribe-token-legacy:"
TOKEN_FINGERPRINT = "fingerprint:unsubscribe-token:"
ERASURE_KEY = "key:erasure"
AGENT_KEY_PEPPER = "key:agent-key-pepper"
GENERATED_TOKEN_KEY_ID = "g1"
LEGACY_TOKEN_FILE = "token-keys.json"
LEGACY_ERASURE_FILE = "erasure-key"
# Earlier versions generated 64 characters; a shorter adopted key is a damaged file.
MIN_ADOPTED_KEY_CHARS = 32


@dataclass(frozen=True)
class SharedKeys:
    token_keys: dict[str, tuple[bytes, ...]]
    active_token_key: str
    erasure_key: bytes
    agent_key_pepper: bytes


def fingerprint(key: bytes, purpose: str) -> str:
    return hmac.new(key, f"{purpose}-fingerprint".encode(), hashlib.sha256).hexdigest()


async def shared_keys(
    config: Config, store: SharedSettings, now: datetime | None = None,
    cipher: DataCipher = PLAIN,
) -> SharedKeys:
    token_keys, active = await _token_keys(config, store)
    await _record_token_keys_created(token_keys, store, config.data_dir, now or datetime.now(UTC))
    return SharedKeys(
        token_keys=token_keys,
        active_token_key=active,
        erasure_key=await _erasure_key(config, store, cipher),
        agent_key_pepper=(
            await store.claim_setting(AGENT_KEY_PEPPER, secrets.token_urlsafe(48))
        ).encode(),
    )


async def _token_keys(
    config: Config, store: SharedSettings
) -> tuple[dict[str, tuple[bytes, ...]], str]:
    """Configured keys (fingerprinted) or the generated ones; never a mix across replicas,
    which would leave each half unable to verify the other's links."""
    if config.tokens.keys:
        await _check_configured_token_keys(config.tokens.keys, store)
        keys = {key_id: [key] for key_id, key in config.tokens.keys.items()}
        return await with_adopted_keys(keys, store), config.tokens.active
    if await store.settings_named(TOKEN_FINGERPRINT):
        raise ConfigError(
            "tokens.keys",
            "other replicas of this store sign unsubscribe links with configured [tokens] "
            "keys: configure the same keys here",
        )
    old = _legacy_token_keys(config.data_dir)
    candidate = old.get(GENERATED_TOKEN_KEY_ID) or secrets.token_urlsafe(48).encode()
    shared = (await store.claim_setting(TOKEN_KEY + GENERATED_TOKEN_KEY_ID, candidate.decode()))
    for key_id, key in old.items():
        if key != shared.encode():
            name = f"{LEGACY_TOKEN_KEY}{key_id}:{fingerprint(key, 'unsubscribe-token')[:16]}"
            await store.claim_setting(name, key.decode())
    keys = {GENERATED_TOKEN_KEY_ID: [shared.encode()]}
    return await with_adopted_keys(keys, store), GENERATED_TOKEN_KEY_ID


async def with_adopted_keys(
    keys: Mapping[str, Sequence[bytes]], store: SharedSettings
) -> dict[str, tuple[bytes, ...]]:
    """`keys` and, beside them under their ids, the old keys replicas adopted into the
    store (another may have done so since this one started). Only reads."""
    merged = {key_id: list(values) for key_id, values in keys.items()}
    for name, value in (await store.settings_named(LEGACY_TOKEN_KEY)).items():
        key_id = name.removeprefix(LEGACY_TOKEN_KEY).rpartition(":")[0]
        if value.encode() not in merged.setdefault(key_id, []):
            merged[key_id].append(value.encode())
    return {key_id: tuple(values) for key_id, values in merged.items()}


async def _check_configured_token_keys(keys: dict[str, bytes], store: SharedSettings) -> None:
    """Each configured key's fingerprint must match the one its id was first used with, and
    the key this store generated earlier (links signed with it are out there) must be among
    the configured ones, under its id. (Old keys replicas adopted stay in the store and
    keep verifying.)"""
    for key_id, key in keys.items():
        expected = fingerprint(key, "unsubscribe-token")
        stored = await store.claim_setting(TOKEN_FINGERPRINT + key_id, expected)
        if not hmac.compare_digest(stored, expected):
            raise ConfigError(
                f"tokens.keys.{key_id}",
                "differs from the key other replicas of this store sign unsubscribe links "
                "with (its fingerprint is in the store): give every replica the same key, "
                "or use a new key id",
            )
    for name, value in (await store.settings_named(TOKEN_KEY)).items():
        key_id = name.removeprefix(TOKEN_KEY)
        if keys.get(key_id) != value.encode():
            raise ConfigError(
                f"tokens.keys.{key_id}",
                f"this store's links are signed with a key it generated (settings row {name!r}); "
                f"keep it as tokens.keys.{key_id} so they keep working",
            )


async def _record_token_keys_created(
    keys: Mapping[str, object], store: SharedSettings, data_dir: Path, now: datetime
) -> None:
    """First seen now, or, for an id in the key file of an earlier version, when that file was
    written. (The file only dates keys here: whether it is usable was decided on loading.)"""
    legacy_written = now
    legacy_ids: set[str] = set()
    with contextlib.suppress(OSError, ConfigError):
        legacy_ids = set(_legacy_token_keys(data_dir))
        mtime = (data_dir / LEGACY_TOKEN_FILE).stat().st_mtime
        legacy_written = min(now, datetime.fromtimestamp(mtime, UTC))
    for key_id in keys:
        try:
            await first_seen(
                store, TOKEN_CREATED + key_id, legacy_written if key_id in legacy_ids else now
            )
        except UnreadableCreationTime as exc:
            raise ConfigError(f"tokens.keys.{key_id}", str(exc)) from exc


def _legacy_token_keys(data_dir: Path) -> dict[str, bytes]:
    """The keys an earlier version generated into data_dir, checked: a damaged file must
    stop start-up (naming it), never become a key anyone could guess."""
    path = data_dir / LEGACY_TOKEN_FILE
    if not path.is_file():
        return {}
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))["keys"]
        if not isinstance(keys, dict):
            raise TypeError("keys is not a table")
        adopted = {str(key_id): key.encode() for key_id, key in keys.items()}
        if not adopted or any(
            not TOKEN_KEY_ID.match(key_id) or len(key) < MIN_ADOPTED_KEY_CHARS
            for key_id, key in adopted.items()
        ):
            raise ValueError(f"every key must be a string of {MIN_ADOPTED_KEY_CHARS}+ characters")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            "gateway.data_dir", f"{path} (a key file of an earlier version) is damaged: {exc}; "
            "restore it, or delete it if no link signed with it may be used any more",
        ) from exc
    return adopted


async def _erasure_key(config: Config, store: SharedSettings, cipher: DataCipher) -> bytes:
    """The configured key (the store checks its fingerprint, `Store.use_erasure_key`), else
    the shared one: an earlier version's `data_dir` key when this replica is the first to
    claim, so erased opt-outs written with it keep matching.

    With encryption on, the shared key is kept sealed under the active data key (one left
    in clear, or under an older key, is sealed again here): with it, a copy of the store
    could test any address list against the erased rows' hashes."""
    if config.privacy.erasure_key:
        return config.privacy.erasure_key.encode()
    path = config.data_dir / LEGACY_ERASURE_FILE
    candidate = secrets.token_urlsafe(48)
    if path.is_file():
        try:
            candidate = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("gateway.data_dir", f"{path} cannot be read: {exc}") from exc
        if len(candidate) < MIN_ADOPTED_KEY_CHARS:
            raise ConfigError(
                "gateway.data_dir",
                f"{path} (the erasure key of an earlier version) holds fewer than "
                f"{MIN_ADOPTED_KEY_CHARS} characters: restore it, or set privacy.erasure_key",
            )
    claimed = await store.claim_setting(ERASURE_KEY, cipher.seal(candidate, ERASURE_KEY))
    key = cipher.open(claimed, ERASURE_KEY, f"settings {ERASURE_KEY}")
    if cipher.enabled and sealed_key_id(claimed) != cipher.active_key_id:
        await store.put_setting(ERASURE_KEY, cipher.seal(key, ERASURE_KEY))
    return key.encode()
