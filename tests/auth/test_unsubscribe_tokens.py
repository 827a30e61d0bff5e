from __future__ import annotations

from datetime import UTC, datetime

from gateway.auth.unsubscribe_tokens import UnsubscribeTokens
from gateway.model import Channel

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD_KEY = b"o" * 40
NEW_KEY = b"n" * 40


def test_round_trip_names_recipient_sender_channel() -> None:
    tokens = UnsubscribeTokens({"k1": OLD_KEY}, "k1")
    token = tokens.issue("bob@x.example.net", "katie@example.com", Channel.EMAIL, NOW)
    claims = tokens.verify(token)
    assert claims is not None
    assert (claims.recipient, claims.sender, claims.channel) == (
        "bob@x.example.net", "katie@example.com", Channel.EMAIL,
    )
    assert claims.issued_at == NOW
    assert claims.key_id == "k1"
    assert claims.sender_name == ""


def test_the_sender_name_it_was_issued_with_is_signed_into_it() -> None:
    tokens = UnsubscribeTokens({"k1": OLD_KEY}, "k1")
    named = tokens.issue("bob@x.example.net", "katie@example.com", Channel.EMAIL, NOW,
                         "Example Corp <Sales>")
    claims = tokens.verify(named)
    assert claims is not None and claims.sender_name == "Example Corp <Sales>"
    unnamed = tokens.issue("bob@x.example.net", "katie@example.com", Channel.EMAIL, NOW)
    assert len(unnamed) < len(named)
    # A name cannot be swapped in: the payload is signed.
    forged = ".".join([unnamed.split(".")[0], named.split(".")[1], unnamed.split(".")[2]])
    assert tokens.verify(forged) is None


def test_rotation_old_tokens_keep_working_new_ones_use_new_key() -> None:
    old = UnsubscribeTokens({"k1": OLD_KEY}, "k1").issue("a@x.example.net", "s", Channel.EMAIL, NOW)
    rotated = UnsubscribeTokens({"k1": OLD_KEY, "k2": NEW_KEY}, "k2")
    assert rotated.verify(old) is not None
    fresh = rotated.issue("a@x.example.net", "s", Channel.EMAIL, NOW)
    assert fresh.startswith("k2.")
    assert UnsubscribeTokens({"k1": OLD_KEY}, "k1").verify(fresh) is None


def test_wrong_key_and_tampering_rejected() -> None:
    tokens = UnsubscribeTokens({"k1": OLD_KEY}, "k1")
    token = tokens.issue("a@x.example.net", "s", Channel.EMAIL, NOW)
    assert UnsubscribeTokens({"k1": NEW_KEY}, "k1").verify(token) is None
    key_id, _, signature = token.split(".")
    other = tokens.issue("b@x.example.net", "s", Channel.EMAIL, NOW).split(".")[1]
    assert tokens.verify(f"{key_id}.{other}.{signature}") is None
    assert tokens.verify(token + "x") is None
    assert tokens.verify("") is None
    assert tokens.verify("k1..") is None
