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
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.config.settings import Config, ConfigError
from gateway.store.base import SharedSettings

TOKEN_KEY = "key:unsubscribe-token:"
LEGACY_TOKEN_KEY = "key:unsubscribe-token-legacy:"
TOKEN_FINGERPRINT = "fingerprint:unsubscribe-token:"
ERASURE_KEY = "key:erasure"
AGENT_KEY_PEPPER = "key:agent-key-pepper"
GENERATED_TOKEN_KEY_ID = "g1"
LEGACY_TOKEN_FILE = "token-keys.json"
LEGACY_ERASURE_FILE = "erasure-key"


@dataclass(frozen=True)
class SharedKeys:
    token_keys: dict[str, tuple[bytes, ...]]
    active_token_key: str
    erasure_key: bytes
    agent_key_pepper: bytes


def fingerprint(key: bytes, purpose: str) -> str:
    return hmac.new(key, f"{purpose}-fingerprint".encode(), hashlib.sha256).hexdigest()


async def shared_keys(config: Config, store: SharedSettings) -> SharedKeys:
    token_keys, active = await _token_keys(config, store)
    return SharedKeys(
        token_keys=token_keys,
        active_token_key=active,
        erasure_key=await _erasure_key(config, store),
        agent_key_pepper=(
            await store.claim_setting(AGENT_KEY_PEPPER, secrets.token_urlsafe(48))
        ).encode(),
    )


async def token_keys(config: Config, store: SharedSettings) -> dict[str, tuple[bytes, ...]]:
    """The token keys as the store knows them now (another replica may have adopted its
    old key since this one started)."""
    return (await _token_keys(config, store))[0]


async def _token_keys(
    config: Config, store: SharedSettings
) -> tuple[dict[str, tuple[bytes, ...]], str]:
    if config.tokens.keys:
        for key_id, key in config.tokens.keys.items():
            expected = fingerprint(key, "unsubscribe-token")
            stored = await store.claim_setting(TOKEN_FINGERPRINT + key_id, expected)
            if not hmac.compare_digest(stored, expected):
                raise ConfigError(
                    f"tokens.keys.{key_id}",
                    "differs from the key other replicas of this store sign unsubscribe links "
                    "with (its fingerprint is in the store): give every replica the same key, "
                    "or use a new key id",
                )
        return {key_id: (key,) for key_id, key in config.tokens.keys.items()}, config.tokens.active
    old = _legacy_token_keys(config.data_dir)
    candidate = old.get(GENERATED_TOKEN_KEY_ID) or secrets.token_urlsafe(48).encode()
    shared = (await store.claim_setting(TOKEN_KEY + GENERATED_TOKEN_KEY_ID, candidate.decode()))
    for key_id, key in old.items():
        if key != shared.encode():
            name = f"{LEGACY_TOKEN_KEY}{key_id}:{fingerprint(key, 'unsubscribe-token')[:16]}"
            await store.claim_setting(name, key.decode())
    keys: dict[str, list[bytes]] = {GENERATED_TOKEN_KEY_ID: [shared.encode()]}
    for name, value in (await store.settings_named(LEGACY_TOKEN_KEY)).items():
        key_id = name.removeprefix(LEGACY_TOKEN_KEY).rpartition(":")[0]
        keys.setdefault(key_id, []).append(value.encode())
    return {key_id: tuple(values) for key_id, values in keys.items()}, GENERATED_TOKEN_KEY_ID


def _legacy_token_keys(data_dir: Path) -> dict[str, bytes]:
    path = data_dir / LEGACY_TOKEN_FILE
    if not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    return {str(key_id): str(key).encode() for key_id, key in stored["keys"].items()}


async def _erasure_key(config: Config, store: SharedSettings) -> bytes:
    """The configured key (the store checks its fingerprint, `Store.use_erasure_key`), else
    the shared one: an earlier version's `data_dir` key when this replica is the first to
    claim, so erased opt-outs written with it keep matching."""
    if config.privacy.erasure_key:
        return config.privacy.erasure_key.encode()
    path = config.data_dir / LEGACY_ERASURE_FILE
    candidate = path.read_text().strip() if path.is_file() else secrets.token_urlsafe(48)
    return (await store.claim_setting(ERASURE_KEY, candidate)).encode()
