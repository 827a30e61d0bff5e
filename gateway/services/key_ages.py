"""When each key the gateway holds was first seen, kept in the store so every replica
reports the same age (`gateway_key_age_seconds`).

A key's creation time is claimed once into the store's shared settings (`created:...`), by
whichever replica sees the key first; the rest read it. Token keys are claimed per key id
when they are loaded (`shared_keys`); a DKIM key per domain, selector and public-key
fingerprint, so a new key file under the same selector starts again at age 0; the SAML
nonce key (the only key behind a sign-in cookie: session cookies are random tokens the
store keeps a hash of, and the CSRF token is derived from the session's own token) per
fingerprint, since it is generated lazily and may be replaced.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cache

from cryptography.hazmat.primitives import serialization

from gateway.auth.saml import NONCE_KEY_SETTING
from gateway.model import DkimKey
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import KeyAge
from gateway.store.base import SharedSettings

log = logging.getLogger("gateway.services.key_ages")

CREATED = "created:"
TOKEN_CREATED = CREATED + "unsubscribe-token:"
DKIM_CREATED = CREATED + "dkim:"
SESSION_CREATED = CREATED + "saml-nonce:"
SESSION_KEY_ID = "saml-nonce"


class UnreadableCreationTime(ValueError):
    """A `created:` setting that is not an ISO 8601 time with a zone (edited by hand?)."""


def parse_created(name: str, value: str) -> datetime:
    try:
        created = datetime.fromisoformat(value)
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise UnreadableCreationTime(
            f"store setting {name!r} holds {value[:40]!r}, not an ISO 8601 time with a zone"
        )
    return created


async def first_seen(
    store: SharedSettings, name: str, now: datetime, recorded: Mapping[str, str] | None = None
) -> datetime:
    """The time recorded under `name`, or `now`, recorded (another replica's claim wins)."""
    value = (recorded or {}).get(name) or await store.claim_setting(name, now.isoformat())
    return parse_created(name, value)


def dkim_key_id(key: DkimKey) -> str:
    """The DNS name the key is published under: what an operator rotates."""
    return f"{key.selector}._domainkey.{key.domain}"


@cache
def _public_key_fingerprint(private_key_pem: bytes) -> str:
    """Of the public key (what DNS publishes), so the store learns nothing secret."""
    public = serialization.load_pem_private_key(private_key_pem, None).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def dkim_created_setting(key: DkimKey) -> str:
    fingerprint = _public_key_fingerprint(key.private_key_pem)
    return f"{DKIM_CREATED}{key.domain}:{key.selector}:{fingerprint}"


def session_created_setting(nonce_key: str) -> str:
    return SESSION_CREATED + hashlib.sha256(nonce_key.encode()).hexdigest()[:16]


class HeldKeys:
    """The token, DKIM and session keys this replica holds, with their creation times: a
    `KeySource` for `StoreGauges`. A key first seen here is recorded now.

    A recorded time never changes once claimed, so each is read from the store once and
    kept: a refresh reads only the session key (made lazily, and replaceable) unless a key
    is new or its time was unreadable."""

    def __init__(
        self,
        store: SharedSettings,
        clock: Clock,
        token_keys: Callable[[], tuple[Sequence[str], str]],
        dkim_keys: Callable[[], Sequence[DkimKey]],
    ) -> None:
        self.store = store
        self.clock = clock
        self.token_keys = token_keys
        self.dkim_keys = dkim_keys
        self.unreadable: set[str] = set()
        self.created: dict[str, datetime] = {}

    async def __call__(self) -> list[KeyAge]:
        now = self.clock.now()
        wanted: list[tuple[str, str, str, bool]] = []
        token_ids, active = self.token_keys()
        wanted += [("token", key_id, TOKEN_CREATED + key_id, key_id != active)
                   for key_id in token_ids]
        wanted += [("dkim", dkim_key_id(key), dkim_created_setting(key), False)
                   for key in self.dkim_keys()]
        nonce_key = (await self.store.settings_named(NONCE_KEY_SETTING)).get(NONCE_KEY_SETTING)
        if nonce_key:
            wanted.append(("session", SESSION_KEY_ID, session_created_setting(nonce_key), False))
        known, self.created = self.created, {}
        missing = any(name not in known for _, _, name, _ in wanted)
        recorded = await self.store.settings_named(CREATED) if missing else {}
        ages: list[KeyAge] = []
        for kind, key_id, name, retired in wanted:
            created = known.get(name)
            if created is None:
                try:
                    created = await first_seen(self.store, name, now, recorded)
                except UnreadableCreationTime as exc:
                    self._unreadable(name, exc)
                    continue
                self.unreadable.discard(name)
            self.created[name] = created
            ages.append(KeyAge(kind, key_id, created, retired))
        return ages

    def _unreadable(self, name: str, exc: UnreadableCreationTime) -> None:
        """Logged once per setting (not every refresh); the key has no age series until the
        setting is fixed, and the log names it."""
        if name not in self.unreadable:
            self.unreadable.add(name)
            log_event(log, "key-created-unreadable", logging.ERROR, setting=name, error=str(exc))
