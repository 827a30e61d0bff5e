"""Unsubscribe tokens: sealed ones show nothing of their claims, every byte of either format
is authenticated, and links of the earlier signed format keep verifying."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime

import pytest

from gateway.auth.unsubscribe_tokens import (
    SEALED_TOKEN_SHAPE,
    SIGNED_TOKEN_SHAPE,
    TOKEN_IN_TEXT,
    TOKEN_SHAPE,
    TokenClaims,
    UnsubscribeTokens,
)
from gateway.model import Channel

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD_KEY = b"o" * 40
NEW_KEY = b"n" * 40
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ADDRESS_30 = "jonathan.smith@client-mail.net"  # 30 characters

# recipient, sender, channel, sender name
CLAIMS = [
    (ADDRESS_30, "katie@example.com", Channel.EMAIL, ""),
    ("bob@x.example.net", "katie@example.com", Channel.EMAIL, "Example Corp <Sales>"),
    ("Zoë.Müller@bücher.example", "vertrieb@händler.example", Channel.EMAIL, "Händler GmbH"),
    ("+12125550123", "katie@example.com", Channel.SMS, "Example Corp"),
    ("+14165550123", "+12025550100", Channel.CALL, ""),
    ("a@b.c", "", Channel.EMAIL, ""),
    ("long-" + "x" * 230 + "@example.net", "s" * 300 + "@example.com", Channel.EMAIL, "n" * 500),
]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def old_format(key_id: str, key: bytes, recipient: str, sender: str, channel: Channel,
               issued_at: datetime, sender_name: str = "") -> str:
    """A token exactly as earlier versions issued it: keyid.b64(json).b64(hmac[:16])."""
    claims: dict[str, object] = {
        "r": recipient, "s": sender, "c": channel.value, "t": int(issued_at.timestamp()),
    }
    if sender_name:
        claims["n"] = sender_name
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(key, f"{key_id}.{payload}".encode(), hashlib.sha256).digest()[:16]
    return f"{key_id}.{payload}.{b64(mac)}"


def forms(secret: str) -> set[str]:
    """As written, in lower case, and JSON-escaped (as the old format held it)."""
    return {secret, secret.lower(), json.dumps(secret)[1:-1]}


def other_char(char: str) -> str:
    return ALPHABET[(ALPHABET.index(char) + 1) % len(ALPHABET)]


def with_char_changed(token: str, at: int) -> str:
    return token[:at] + other_char(token[at]) + token[at + 1:]


@pytest.mark.parametrize(("recipient", "sender", "channel", "name"), CLAIMS)
def test_sealed_round_trip(recipient: str, sender: str, channel: Channel, name: str) -> None:
    tokens = UnsubscribeTokens({"k1": NEW_KEY}, "k1")
    token = tokens.issue(recipient, sender, channel, NOW, name)
    assert SEALED_TOKEN_SHAPE.match(token) and not SIGNED_TOKEN_SHAPE.match(token)
    assert tokens.verify(token) == TokenClaims(recipient, sender, channel, NOW, "k1", name)


@pytest.mark.parametrize(("recipient", "sender", "channel", "name"), CLAIMS)
def test_sealed_token_shows_no_claim_in_any_form(
    recipient: str, sender: str, channel: Channel, name: str
) -> None:
    token = UnsubscribeTokens({"k1": NEW_KEY}, "k1").issue(recipient, sender, channel, NOW, name)
    decoded = unb64(token.split(".")[1])
    secrets = {recipient, sender, name, *recipient.split("@"), *sender.split("@")} - {""}
    for secret in secrets:
        for form in forms(secret):
            assert form not in token
            assert form.encode() not in decoded
            assert form.encode("utf-16-le") not in decoded
    # The check finds plaintext where there is some: the old format shows the recipient.
    old = unb64(old_format("k1", NEW_KEY, recipient, sender, channel, NOW, name).split(".")[1])
    assert any(form.encode() in old for form in forms(recipient))


def test_a_30_character_address_gives_a_token_under_100_characters() -> None:
    tokens = UnsubscribeTokens({"g1": NEW_KEY}, "g1")
    token = tokens.issue(ADDRESS_30, "katie@example.com", Channel.EMAIL, NOW)
    old = old_format("g1", NEW_KEY, ADDRESS_30, "katie@example.com", Channel.EMAIL, NOW)
    assert len(ADDRESS_30) == 30
    assert len(token) == 98 < len(old)


@pytest.mark.parametrize(("recipient", "sender", "channel", "name"), CLAIMS[:4])
def test_every_changed_character_of_a_sealed_token_is_refused(
    recipient: str, sender: str, channel: Channel, name: str
) -> None:
    tokens = UnsubscribeTokens({"k1": NEW_KEY, "k2": NEW_KEY}, "k1")
    token = tokens.issue(recipient, sender, channel, NOW, name)
    assert tokens.verify(token) is not None
    for at in range(len(token)):
        if token[at] != ".":
            assert tokens.verify(with_char_changed(token, at)) is None, at


@pytest.mark.parametrize(("recipient", "sender", "channel", "name"), CLAIMS[:4])
def test_every_flipped_bit_of_a_sealed_token_is_refused(
    recipient: str, sender: str, channel: Channel, name: str
) -> None:
    """Version byte, SIV tag and ciphertext: each bit is authenticated."""
    tokens = UnsubscribeTokens({"k1": NEW_KEY}, "k1")
    key_id, blob = tokens.issue(recipient, sender, channel, NOW, name).split(".")
    data = unb64(blob)
    for at in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[at] ^= 1 << bit
            assert tokens.verify(f"{key_id}.{b64(bytes(flipped))}") is None, (at, bit)


def test_key_id_is_bound_even_where_two_ids_hold_the_same_key() -> None:
    tokens = UnsubscribeTokens({"a": NEW_KEY, "b": NEW_KEY}, "a")
    token = tokens.issue("bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    assert tokens.verify(token) is not None
    assert tokens.verify("b" + token[1:]) is None


@pytest.mark.parametrize("mangle", [
    lambda t: t + "A",
    lambda t: t[:-1],
    lambda t: t[:-4],
    lambda t: t.replace(".", ".."),
    lambda t: t.replace(".", "~"),
    lambda t: t + "=",
    lambda t: t.split(".")[0],
    lambda t: "." + t.split(".")[1],
    lambda t: t + "." + "A" * 22,
    lambda t: "x" * 17 + "." + t.split(".")[1],
    lambda t: "",
    lambda t: "k1." + "A" * 5000,
])
def test_malformed_sealed_tokens_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    tokens = UnsubscribeTokens({"k1": NEW_KEY}, "k1")
    token = tokens.issue("bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    assert tokens.verify(mangle(token)) is None


def test_claims_moved_between_keys_or_instances_are_refused() -> None:
    token = UnsubscribeTokens({"k1": NEW_KEY}, "k1").issue(
        "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    assert UnsubscribeTokens({"k1": OLD_KEY}, "k1").verify(token) is None
    assert UnsubscribeTokens({"k9": NEW_KEY}, "k9").verify(token) is None  # unknown key id


@pytest.mark.parametrize(("recipient", "sender", "channel", "name"), CLAIMS)
def test_old_signed_tokens_still_verify(
    recipient: str, sender: str, channel: Channel, name: str
) -> None:
    old = old_format("k1", OLD_KEY, recipient, sender, channel, NOW, name)
    assert SIGNED_TOKEN_SHAPE.match(old) and not SEALED_TOKEN_SHAPE.match(old)
    tokens = UnsubscribeTokens({"k1": OLD_KEY}, "k1")
    assert tokens.verify(old) == TokenClaims(recipient, sender, channel, NOW, "k1", name)


def test_old_signed_tokens_never_expire() -> None:
    issued = datetime(2019, 1, 1, tzinfo=UTC)
    old = old_format("k1", OLD_KEY, "bob@x.example.net", "s@example.com", Channel.EMAIL, issued)
    claims = UnsubscribeTokens({"k1": OLD_KEY}, "k1").verify(old)
    assert claims is not None and claims.issued_at == issued


def test_every_changed_character_of_an_old_token_is_refused() -> None:
    tokens = UnsubscribeTokens({"k1": OLD_KEY, "k2": OLD_KEY}, "k1")
    old = old_format("k1", OLD_KEY, "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW,
                     "Example Corp")
    assert tokens.verify(old) is not None
    for at in range(len(old)):
        if old[at] != ".":
            assert tokens.verify(with_char_changed(old, at)) is None, at


def test_old_tokens_refused_on_wrong_key_unknown_id_and_swapped_parts() -> None:
    tokens = UnsubscribeTokens({"k1": OLD_KEY}, "k1")
    old = old_format("k1", OLD_KEY, "a@x.example.net", "s", Channel.EMAIL, NOW)
    assert UnsubscribeTokens({"k1": NEW_KEY}, "k1").verify(old) is None
    assert tokens.verify(old_format("k7", OLD_KEY, "a@x.example.net", "s", Channel.EMAIL,
                                    NOW)) is None
    key_id, _, signature = old.split(".")
    other = old_format("k1", OLD_KEY, "b@x.example.net", "s", Channel.EMAIL, NOW).split(".")[1]
    assert tokens.verify(f"{key_id}.{other}.{signature}") is None
    named = old_format("k1", OLD_KEY, "a@x.example.net", "s", Channel.EMAIL, NOW, "Name")
    assert tokens.verify(f"{key_id}.{named.split('.')[1]}.{signature}") is None
    assert tokens.verify(old + "x") is None
    assert tokens.verify("k1..") is None


def test_an_old_token_made_with_a_bad_payload_is_refused_though_signed() -> None:
    """Signed garbage (not JSON, a channel that does not exist) is None, never an error."""
    for payload in (b"not json", b'{"r":"a@x","s":"s","c":"fax","t":1}', b'{"r":"a@x"}'):
        part = b64(payload)
        mac = hmac.new(OLD_KEY, f"k1.{part}".encode(), hashlib.sha256).digest()[:16]
        assert UnsubscribeTokens({"k1": OLD_KEY}, "k1").verify(f"k1.{part}.{b64(mac)}") is None


def test_rotation_tokens_of_the_old_key_id_keep_verifying() -> None:
    before = UnsubscribeTokens({"a": OLD_KEY}, "a")
    sealed = before.issue("bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    signed = old_format("a", OLD_KEY, "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    rotated = UnsubscribeTokens({"a": OLD_KEY, "b": NEW_KEY}, "b")
    for token in (sealed, signed):
        claims = rotated.verify(token)
        assert claims is not None and claims.key_id == "a"
        assert claims.recipient == "bob@x.example.net"
    fresh = rotated.issue("bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    assert fresh.startswith("b.")
    assert before.verify(fresh) is None


def test_every_key_an_id_holds_opens_its_tokens() -> None:
    """Replicas that generated keys of their own before sharing them kept them under one id."""
    adopted = b"a" * 48
    token = UnsubscribeTokens({"g1": adopted}, "g1").issue(
        "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    old = old_format("g1", adopted, "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    shared = UnsubscribeTokens({"g1": (NEW_KEY, adopted)}, "g1")
    assert shared.verify(token) is not None
    assert shared.verify(old) is not None
    assert shared.issue("bob@x.example.net", "s", Channel.EMAIL, NOW) != token
    assert UnsubscribeTokens({"g1": NEW_KEY}, "g1").verify(token) is None


def test_both_shapes_are_recognised_in_text_and_alone() -> None:
    sealed = UnsubscribeTokens({"k1": NEW_KEY}, "k1").issue(
        "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    signed = old_format("k1", OLD_KEY, "bob@x.example.net", "s@example.com", Channel.EMAIL, NOW)
    link = re.compile(re.escape("https://gw.example.com/u/") + f"({TOKEN_IN_TEXT})")
    for token in (sealed, signed):
        assert TOKEN_SHAPE.match(token)
        found = link.search(f"Unsubscribe: https://gw.example.com/u/{token}.\n")
        assert found is not None and found.group(1) == token
    assert not TOKEN_SHAPE.match("not-a-token")


def test_issuing_without_keys_is_an_error_naming_why() -> None:
    with pytest.raises(RuntimeError, match="no token keys"):
        UnsubscribeTokens().issue("bob@x.example.net", "s", Channel.EMAIL, NOW)
