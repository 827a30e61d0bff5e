"""Signed unsubscribe tokens.

A token names recipient, sender and channel and is signed with HMAC-SHA256 under a key id,
so keys can rotate (old keys keep verifying) and no database row is needed for a link to
keep working for the 30/60 days CAN-SPAM and CASL require — it has no expiry at all. It may
also carry the sender's name as the message's footer gave it (`[sender] name` when it was
issued), so the unsubscribe page names who the recipient heard from even after the
configuration changed; tokens issued without it verify as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.model import Channel

SIGNATURE_BYTES = 16
TOKEN_SHAPE = re.compile(r"^([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]{4,2000})\.([A-Za-z0-9_-]{22})$")
TOKEN_IN_TEXT = r"[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{4,2000}\.[A-Za-z0-9_-]{22}"


KeyOrKeys = bytes | Sequence[bytes]


@dataclass(frozen=True)
class TokenClaims:
    recipient: str
    sender: str
    channel: Channel
    issued_at: datetime
    key_id: str
    sender_name: str = ""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeTokens:
    """Signs with the active key; verifies with any key of a token's key id. An id may hold
    more than one key: replicas that each generated their own before keys were shared
    through the store keep every link they issued working (`services.shared_keys`)."""

    def __init__(self, keys: Mapping[str, KeyOrKeys] | None = None, active: str = "") -> None:
        self._keys: dict[str, tuple[bytes, ...]] = {}
        self._active = ""
        if keys is not None:
            self.use_keys(keys, active)

    def use_keys(self, keys: Mapping[str, KeyOrKeys], active: str) -> None:
        if not keys.get(active):
            raise ValueError(f"active key {active!r} is not among the keys")
        self._keys = {
            key_id: (values,) if isinstance(values, bytes) else tuple(values)
            for key_id, values in keys.items()
        }
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def keys(self) -> dict[str, tuple[bytes, ...]]:
        return dict(self._keys)

    def _signing_key(self) -> bytes:
        if not self._active:
            raise RuntimeError("no token keys yet: Services.open reads them from the store")
        return self._keys[self._active][0]

    @staticmethod
    def _sign(key_id: str, key: bytes, payload: str) -> str:
        mac = hmac.new(key, f"{key_id}.{payload}".encode(), hashlib.sha256)
        return _b64encode(mac.digest()[:SIGNATURE_BYTES])

    def issue(
        self,
        recipient: str,
        sender: str,
        channel: Channel,
        issued_at: datetime,
        sender_name: str = "",
    ) -> str:
        claims: dict[str, object] = {
            "r": recipient, "s": sender, "c": channel.value, "t": int(issued_at.timestamp()),
        }
        if sender_name:
            claims["n"] = sender_name
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        signature = self._sign(self._active, self._signing_key(), payload)
        return f"{self._active}.{payload}.{signature}"

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token, else None (tampered, unknown key, garbage)."""
        match = TOKEN_SHAPE.match(token)
        if not match:
            return None
        key_id, payload, signature = match.groups()
        if not any(
            hmac.compare_digest(self._sign(key_id, key, payload), signature)
            for key in self._keys.get(key_id, ())
        ):
            return None
        try:
            claims = json.loads(_b64decode(payload))
            return TokenClaims(
                recipient=str(claims["r"]),
                sender=str(claims["s"]),
                channel=Channel(claims["c"]),
                issued_at=datetime.fromtimestamp(int(claims["t"]), UTC),
                key_id=key_id,
                sender_name=str(claims.get("n", "")),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
