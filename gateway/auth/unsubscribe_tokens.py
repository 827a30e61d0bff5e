"""Unsubscribe tokens: sealed (issued today) and signed (issued by earlier versions).

A link must keep working for years on every replica with no database row behind it (the
store may be restored from a backup older than the link), so the token itself carries
recipient, sender, channel, issue time and the sender's name as the footer gave it. It
must not show them to whoever sees the link (a link scanner's log, a forwarded mail), so
`issue` seals them: `keyid.blob`, where blob is base64url of a version byte, the AES-SIV
tag and the ciphertext of the binary-packed claims, under a key HKDF-SHA256 derives from
the `[tokens]` key of that id, with version and key id as associated data (neither can be
swapped). About 100 characters for a 30-character address.

AES-SIV rather than AES-256-GCM: GCM needs a nonce never repeated under one key, and
replicas issue tokens independently for years under the same key with no shared counter;
a random 96-bit nonce gets risky past 2^32 tokens and one repeat would let anyone forge
links for any recipient. SIV takes no nonce (12 bytes shorter) and a repeated input only
repeats the token, as the HMAC of the old format did. AES-SIV with a 512-bit key is AES-256
for both its MAC and its encryption.

Earlier versions signed readable claims (`keyid.base64(JSON).HMAC-SHA256[:16]`); links
already in people's mailboxes must keep unsubscribing indefinitely (CAN-SPAM asks 30 days,
CASL 60, nobody knows when a mail is opened), so `verify` still accepts that shape. Neither
format expires. The shapes differ (two dot-separated parts, or three ending in a 22-character
signature), so `verify` knows which check applies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.model import Channel

SIGNATURE_BYTES = 16
SEALED_VERSION = 1
SIV_TAG_BYTES = 16
_SEAL_INFO = b"gateway unsubscribe token sealed v1 aes-siv-512"
_SIGNED_PARTS = r"([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]{4,2000})\.([A-Za-z0-9_-]{22})"
# version byte + tag + the smallest claims (channel, time, two empty strings) is 24 bytes.
_SEALED_PARTS = r"([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]{32,2000})"
SIGNED_TOKEN_SHAPE = re.compile(f"^{_SIGNED_PARTS}$")
SEALED_TOKEN_SHAPE = re.compile(f"^{_SEALED_PARTS}$")
TOKEN_IN_TEXT = f"{_SIGNED_PARTS}|{_SEALED_PARTS}"
"""Either format inside a longer text; wrap it in a group before adding to a pattern (that
group captures the token; the five inside it, its parts, follow)."""
TOKEN_SHAPE = re.compile(f"^(?:{TOKEN_IN_TEXT})$")
"""Either format (groups 1-3 a signed token's parts, 4-5 a sealed one's)."""

# Fixed codes, not enum order: a token must decode the same after Channel gains members.
_CHANNEL_CODES = {Channel.EMAIL: 0, Channel.SMS: 1, Channel.CALL: 2}
_CHANNELS = {code: channel for channel, code in _CHANNEL_CODES.items()}
_HEAD = struct.Struct(">BI")  # channel code, issue time (Unix seconds, until 2106)


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


def _sealing_key(key: bytes) -> AESSIV:
    """A key of its own for sealing, so the token key never serves two algorithms."""
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_SEAL_INFO).derive(key)
    return AESSIV(derived)


def _associated_data(key_id: str) -> list[bytes]:
    return [bytes([SEALED_VERSION]), key_id.encode("ascii")]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 28:
            raise ValueError("length runs past the claims")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _pack(recipient: str, sender: str, channel: Channel, issued: int, name: str) -> bytes:
    """Channel, time, then recipient and sender each after its length; the name is the
    rest (no length, as it comes last)."""
    if not 0 <= issued <= 0xFFFFFFFF:
        raise ValueError(f"issue time {issued} does not fit a token")
    parts = [_HEAD.pack(_CHANNEL_CODES[channel], issued)]
    for text in (recipient, sender):
        encoded = text.encode("utf-8")
        parts += [_varint(len(encoded)), encoded]
    parts.append(name.encode("utf-8"))
    return b"".join(parts)


def _unpack(data: bytes, key_id: str) -> TokenClaims:
    code, issued = _HEAD.unpack_from(data)
    at = _HEAD.size
    texts = []
    for _ in range(2):
        length, at = _read_varint(data, at)
        if at + length > len(data):
            raise ValueError("text runs past the claims")
        texts.append(data[at:at + length].decode("utf-8"))
        at += length
    return TokenClaims(
        recipient=texts[0],
        sender=texts[1],
        channel=_CHANNELS[code],
        issued_at=datetime.fromtimestamp(issued, UTC),
        key_id=key_id,
        sender_name=data[at:].decode("utf-8"),
    )


class UnsubscribeTokens:
    """Seals with the active key; opens (or checks the signature of) a token with any key of
    its key id. An id may hold more than one key: replicas that each generated their own
    before keys were shared through the store keep every link they issued working
    (`services.shared_keys`)."""

    def __init__(self, keys: Mapping[str, KeyOrKeys] | None = None, active: str = "") -> None:
        self._keys: dict[str, tuple[bytes, ...]] = {}
        self._sealing: dict[str, tuple[AESSIV, ...]] = {}
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
        # Derived once here: HKDF per message would cost the send path for nothing.
        self._sealing = {
            key_id: tuple(_sealing_key(key) for key in values)
            for key_id, values in self._keys.items()
        }
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def keys(self) -> dict[str, tuple[bytes, ...]]:
        return dict(self._keys)

    def issue(
        self,
        recipient: str,
        sender: str,
        channel: Channel,
        issued_at: datetime,
        sender_name: str = "",
    ) -> str:
        """A sealed token; `sender_name` is the name the footer gave, shown on the page."""
        if not self._active:
            raise RuntimeError("no token keys yet: Services.open reads them from the store")
        claims = _pack(recipient, sender, channel, int(issued_at.timestamp()), sender_name)
        sealed = self._sealing[self._active][0].encrypt(
            claims, _associated_data(self._active)
        )
        return f"{self._active}.{_b64encode(bytes([SEALED_VERSION]) + sealed)}"

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of an authentic token of either format, else None (tampered, unknown
        key id, garbage)."""
        sealed = SEALED_TOKEN_SHAPE.match(token)
        if sealed:
            return self._open(*sealed.groups())
        signed = SIGNED_TOKEN_SHAPE.match(token)
        if signed:
            return self._check_signed(*signed.groups())
        return None

    def _open(self, key_id: str, blob: str) -> TokenClaims | None:
        try:
            data = _b64decode(blob)
        except (ValueError, binascii.Error):
            return None
        if _b64encode(data) != blob or data[:1] != bytes([SEALED_VERSION]):
            return None
        for key in self._sealing.get(key_id, ()):
            try:
                claims = key.decrypt(data[1:], _associated_data(key_id))
            except InvalidTag:
                continue
            try:
                return _unpack(claims, key_id)
            except (ValueError, KeyError, struct.error, UnicodeDecodeError):
                return None
        return None

    @staticmethod
    def _sign(key_id: str, key: bytes, payload: str) -> str:
        mac = hmac.new(key, f"{key_id}.{payload}".encode(), hashlib.sha256)
        return _b64encode(mac.digest()[:SIGNATURE_BYTES])

    def _check_signed(self, key_id: str, payload: str, signature: str) -> TokenClaims | None:
        """A token of the earlier, signed format: still honoured, never issued."""
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
