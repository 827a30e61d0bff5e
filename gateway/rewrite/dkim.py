"""DKIM after the rewrite: sign the final bytes, and never forward a signature the rewrite broke.

Mailbox providers want `List-Unsubscribe` and `List-Unsubscribe-Post` covered by a DKIM
signature (RFC 8058 §4), and those headers, like the footer, only exist once the gateway has
rewritten the message, so signing happens last (RFC 6376 with dkimpy). An agent's own
signature that the rewrite invalidated would make the message fail DKIM at the receiver; it
is removed and the removal named. Whether it still holds is decided without the agent's key:
a signature holds exactly when the bytes it covers (its body hash and its signed header
fields, canonicalized as it says) are what they were when the agent sent the message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.util import InvalidTagValueList, parse_tag_value

from gateway.model import DkimKey

# RFC 6376 §5.4.1's list, with the one-click headers RFC 8058 §4 asks to be signed.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to", "references",
    "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id",
)
# Signed once more than they occur, so that nobody can add a second one later (RFC 6376
# §8.15): a second From or List-Unsubscribe added in transit would fail verification.
OVERSIGNED_HEADERS = frozenset(
    {"from", "reply-to", "subject", "to", "cc", "list-unsubscribe", "list-unsubscribe-post"}
)
# Headers an upstream adds after the egress signed (`gateway.upstream.smtp`'s Postmark
# stream header): an agent signature over their absence would fail at the receiver.
ADDED_AFTER_SIGNING = frozenset({"x-pm-message-stream"})
_HASHES = {b"rsa-sha256": hashlib.sha256, b"ed25519-sha256": hashlib.sha256,
           b"rsa-sha1": hashlib.sha1}
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_WHITESPACE = re.compile(rb"\s+")


@dataclass(frozen=True)
class Signed:
    """The message as it goes out, and what happened to agent signatures on the way."""

    message: bytes
    removed: tuple[str, ...] = ()


class DkimSigner:
    """The operator's `[[dkim]]` keys: each signs mail whose From domain is its domain or a
    subdomain of it; the most specific domain wins."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self.keys = sorted(keys, key=lambda key: -len(key.domain))

    def key_for(self, from_domain: str) -> DkimKey | None:
        domain = from_domain.lower().rstrip(".")
        return next(
            (k for k in self.keys if domain == k.domain or domain.endswith("." + k.domain)),
            None,
        )

    def finish(self, message: bytes, from_domain: str, received_head: bytes | None) -> Signed:
        """Remove the agent's signatures the rewrite broke, then sign with the key for
        `from_domain` if there is one. `received_head` is the header block as the agent sent
        it; None when the gateway composed the message itself (no agent signature can hold)."""
        message, removed = without_broken_signatures(message, received_head)
        key = self.key_for(from_domain) if from_domain else None
        if key is not None:
            message = sign(message, key)
        return Signed(message, removed)


def sign(message: bytes, key: DkimKey) -> bytes:
    """relaxed/relaxed: the one canonicalization that survives the re-folding and trailing
    whitespace changes that relays are known to make."""
    headers, _ = dkim.rfc822_parse(message)
    present = [name.decode("ascii", "replace").lower() for name, _ in headers]
    include = [
        name
        for name in SIGNED_HEADERS
        for _ in range(present.count(name) + (name in OVERSIGNED_HEADERS))
        if name in present or name in OVERSIGNED_HEADERS
    ]
    signature = dkim.sign(
        message,
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private_key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode("ascii") for name in include],
    )
    return signature + message


def without_broken_signatures(
    message: bytes, received_head: bytes | None
) -> tuple[bytes, tuple[str, ...]]:
    """Repeated until nothing changes: removing one signature breaks another that signed
    it (an `h=` naming dkim-signature)."""
    removed: list[str] = []
    while True:
        message, removed_now = _without_broken_once(message, received_head)
        if not removed_now:
            return message, tuple(removed)
        removed += removed_now


def _without_broken_once(message: bytes, received_head: bytes | None) -> tuple[bytes, list[str]]:
    head, separator, body = message.partition(b"\r\n\r\n")
    fields = _FIELD_START.split(head)
    if not any(_is_signature(field) for field in fields):
        return message, []
    headers, canonical_body_source = dkim.rfc822_parse(message)
    received = _received_headers(received_head)
    kept, removed = [], []
    for field in fields:
        if _is_signature(field):
            problem = _broken(field.split(b":", 1)[1], headers, canonical_body_source, received)
            if problem:
                removed.append(f"agent DKIM-Signature {_signer(field)} removed: {problem}")
                continue
        kept.append(field)
    return b"\r\n".join(kept) + separator + body, removed


def _received_headers(received_head: bytes | None) -> list[list[bytes]] | None:
    """The agent's header fields as DKIM reads them; None (no signature can be shown to
    hold) when the gateway composed the message or dkimpy cannot read the header block."""
    if not received_head:
        return None
    try:
        return dkim.rfc822_parse(received_head + b"\r\n\r\n")[0]
    except dkim.MessageFormatError:
        return None


def _is_signature(field: bytes) -> bool:
    return field[:15].lower() == b"dkim-signature:"


def _signer(field: bytes) -> str:
    try:
        tags = parse_tag_value(field.split(b":", 1)[1])
    except InvalidTagValueList:
        return "(unreadable)"
    return "d=" + tags.get(b"d", b"?").decode("ascii", "replace")


def _broken(
    value: bytes,
    headers: list[list[bytes]],
    body: bytes,
    received: list[list[bytes]] | None,
) -> str:
    """Why the signature no longer holds, or "" if it covers exactly what the agent sent."""
    if received is None:
        return "the gateway composed this message or could not read the header block it came "\
            "with, so no signature made before can be shown to hold"
    try:
        tags = parse_tag_value(value)
        canonical = CanonicalizationPolicy.from_c_value(tags.get(b"c"))
        hasher = _HASHES[tags[b"a"]]
        signed = [name.lower() for name in re.split(rb"\s*:\s*", tags[b"h"].strip())]
        length = int(tags[b"l"]) if b"l" in tags else None
        expected_body_hash = _WHITESPACE.sub(b"", tags[b"bh"])
    except (InvalidTagValueList, InvalidCanonicalizationPolicyError, KeyError, ValueError):
        return "the signature cannot be read"
    added_later = sorted(ADDED_AFTER_SIGNING.intersection(
        n.decode("ascii", "replace") for n in signed) - {n.decode("ascii", "replace").lower()
                                                         for n, _ in headers})
    if added_later:
        return "it signs the absence of " + ", ".join(added_later) + \
            ", which the upstream adds"
    canonical_body = canonical.canonicalize_body(body)
    if length is not None:
        canonical_body = canonical_body[:length]
    if base64.b64encode(hasher(canonical_body).digest()) != expected_body_hash:
        return "the rewrite changed the signed body (the footer)"
    before = canonical.canonicalize_headers(dkim.select_headers(received, signed))
    after = canonical.canonicalize_headers(dkim.select_headers(headers, signed))
    if before != after:
        changed = sorted({n.decode("ascii", "replace") for n, _ in set(map(tuple, before))
                          ^ set(map(tuple, after))})
        return "the rewrite changed signed header fields: " + ", ".join(changed)
    return ""


def public_key_record(key: DkimKey) -> str:
    """The DNS TXT value to publish at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1)."""
    private = serialization.load_pem_private_key(key.private_key_pem, password=None)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
