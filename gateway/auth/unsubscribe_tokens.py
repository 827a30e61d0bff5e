"""Signed unsubscribe tokens.

A token names recipient, sender and channel and is signed with HMAC-SHA256 under a key id,
so keys can rotate (old keys keep verifying) and no database row is needed for a link to
keep working for the 30/60 days CAN-SPAM and CASL require — it has no expiry at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.model import Channel

SIGNATURE_BYTES = 16
TOKEN_SHAPE = re.compile(r"^([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]{4,2000})\.([A-Za-z0-9_-]{22})$")
TOKEN_IN_TEXT = r"[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{4,2000}\.[A-Za-z0-9_-]{22}"


@dataclass(frozen=True)
class TokenClaims:
    recipient: str
    sender: str
    channel: Channel
    issued_at: datetime
    key_id: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeTokens:
    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active key {active!r} is not among the keys")
        self._keys = dict(keys)
        self._active = active

    def derived_key(self, purpose: str) -> bytes:
        """A separate key for another use (review-page sessions), shared by replicas like the
        token keys themselves, without reusing a signing key for two things."""
        return hmac.new(self._keys[self._active], purpose.encode(), hashlib.sha256).digest()

    def _sign(self, key_id: str, payload: str) -> str:
        mac = hmac.new(self._keys[key_id], f"{key_id}.{payload}".encode(), hashlib.sha256)
        return _b64encode(mac.digest()[:SIGNATURE_BYTES])

    def issue(self, recipient: str, sender: str, channel: Channel, issued_at: datetime) -> str:
        claims = {"r": recipient, "s": sender, "c": channel.value, "t": int(issued_at.timestamp())}
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        return f"{self._active}.{payload}.{self._sign(self._active, payload)}"

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token, else None (tampered, unknown key, garbage)."""
        match = TOKEN_SHAPE.match(token)
        if not match:
            return None
        key_id, payload, signature = match.groups()
        if key_id not in self._keys:
            return None
        if not hmac.compare_digest(self._sign(key_id, payload), signature):
            return None
        try:
            claims = json.loads(_b64decode(payload))
            return TokenClaims(
                recipient=str(claims["r"]),
                sender=str(claims["s"]),
                channel=Channel(claims["c"]),
                issued_at=datetime.fromtimestamp(int(claims["t"]), UTC),
                key_id=key_id,
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None


def generated_key_file(data_dir: Path) -> tuple[dict[str, bytes], str]:
    """A signing key kept in data_dir for single-node set-ups that configure none.

    Replicas must share keys through `[tokens]` in the configuration instead.
    """
    path = data_dir / "token-keys.json"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"active": "g1", "keys": {"g1": secrets.token_urlsafe(48)}}))
    stored = json.loads(path.read_text())
    return {k: v.encode() for k, v in stored["keys"].items()}, stored["active"]
