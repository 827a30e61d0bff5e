"""DKIM after the rewrite (RFC 6376, RFC 8058 §4): signatures made here verify with dkimpy
and with an independent implementation (Perl's Mail::DKIM); an agent's signature the
rewrite broke is removed, one it did not break is kept."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.mail.parse import parse_email, to_bytes
from gateway.model import DkimKey
from gateway.rewrite.dkim import (
    DkimSigner,
    public_key_record,
    sign,
    without_broken_signatures,
)
from tests.conftest import crlf

VERIFIER = Path(__file__).resolve().parents[1] / "tools" / "dkim_verify.pl"


def rsa_pem(bits: int = 2048) -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


GATEWAY_KEY = DkimKey("example.com", "gw2026", rsa_pem())
AGENT_KEY = DkimKey("agent.example", "a1", rsa_pem())
KEYS = {f"{k.selector}._domainkey.{k.domain}": public_key_record(k)
        for k in (GATEWAY_KEY, AGENT_KEY)}

MESSAGE = crlf(
    "From: Katie <katie@example.com>\nTo: bob@client.example.net\nSubject: Spring offer\n"
    "Date: Sat, 05 Dec 2026 10:00:00 +0000\nMessage-ID: <1@example.com>\n"
    "List-Unsubscribe: <https://gw.example.com/u/T>,\n <mailto:u@gw.example.com?subject=T>\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\nMIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n\nHello Bob.\n"
)


def dns(name: bytes, timeout: int = 5) -> bytes:
    """The test's DNS: answers only for the keys above."""
    return KEYS.get(name.decode().rstrip("."), "").encode()


def dkimpy_verifies(message: bytes, index: int = 0) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dns))
    except dkim.DKIMException:  # some failures are raised rather than returned
        return False


def signature_tags(message: bytes) -> dict[bytes, bytes]:
    head = message.split(b"\r\n\r\n", 1)[0]
    value = head.split(b"DKIM-Signature:", 1)[1].split(b"\r\n", 1)[0]
    value += b"".join(
        line for line in head.split(b"DKIM-Signature:", 1)[1].split(b"\r\n")[1:]
        if line[:1] in (b" ", b"\t")
    )
    return dkim.util.parse_tag_value(value)


def independent_verifier_missing() -> str:
    if shutil.which("perl") is None:
        return "perl is missing (apt-get install perl)"
    found = subprocess.run(["perl", "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True)
    if found.returncode != 0:
        return "Perl Mail::DKIM is missing (apt-get install libmail-dkim-perl)"
    return ""


def mail_dkim_results(message: bytes, keys: dict[str, str] = KEYS) -> list[str]:
    reason = independent_verifier_missing()
    if reason:
        print(f"independent DKIM verifier skipped: {reason}")
        pytest.skip(reason)
    arguments = [arg for name, record in keys.items() for arg in ("--key", f"{name}={record}")]
    run = subprocess.run(["perl", str(VERIFIER), *arguments], input=message, capture_output=True,
                         timeout=60, check=False)
    return run.stdout.decode().split("\n")[:-1]


def test_the_signature_verifies_with_dkimpy_and_covers_the_one_click_headers() -> None:
    signed = sign(MESSAGE, GATEWAY_KEY)
    assert dkimpy_verifies(signed)
    tags = signature_tags(signed)
    assert (tags[b"d"], tags[b"s"], tags[b"a"]) == (b"example.com", b"gw2026", b"rsa-sha256")
    signed_names = tags[b"h"].replace(b" ", b"").lower().split(b":")
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject"} <= set(
        signed_names
    )
    assert b"l" not in tags, "a length limit would let anyone append to the body"


def test_the_signature_verifies_with_an_independent_implementation() -> None:
    assert mail_dkim_results(sign(MESSAGE, GATEWAY_KEY)) == [
        "pass d=example.com s=gw2026 a=rsa-sha256"
    ]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.replace(b"Hello Bob.", b"Hello Bob!"), "body"),
        (lambda m: m.replace(b"Subject: Spring offer", b"Subject: Spring 0ffer"), "subject"),
        (lambda m: m.replace(b"https://gw.example.com/u/T", b"https://evil.example/u/T"),
         "unsubscribe link"),
        (lambda m: m.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
         "one-click header removed"),
        (lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: ceo@bank.example\r\n\r\n", 1),
         "second From added"),
        (lambda m: m.replace(b"\r\n\r\n", b"\r\nList-Unsubscribe: <https://evil.example/>"
                             b"\r\n\r\n", 1), "second List-Unsubscribe added"),
    ],
)
def test_any_change_after_signing_fails_both_verifiers(change, why: str) -> None:
    """Oversigning (RFC 6376 §8.15) makes an added From or List-Unsubscribe fail too."""
    tampered = change(sign(MESSAGE, GATEWAY_KEY))
    assert not dkimpy_verifies(tampered), why
    [result] = mail_dkim_results(tampered)
    assert result.startswith("fail"), why


def test_the_key_is_chosen_by_from_domain_most_specific_first() -> None:
    parent = DkimKey("example.com", "p", b"")
    child = DkimKey("mail.example.com", "c", b"")
    signer = DkimSigner([parent, child])
    assert signer.key_for("example.com") is parent
    assert signer.key_for("news.example.com") is parent
    assert signer.key_for("a.mail.example.com") is child
    assert signer.key_for("MAIL.EXAMPLE.COM.") is child
    assert signer.key_for("badexample.com") is None
    assert signer.key_for("example.com.evil.test") is None


def agent_signed(message: bytes) -> bytes:
    return sign(message, AGENT_KEY)


@pytest.mark.parametrize(
    ("rewrite", "why"),
    [
        (lambda m: m.replace(b"Hello Bob.\r\n", b"Hello Bob.\r\n\r\nUnsubscribe: ...\r\n"),
         "the rewrite changed the signed body (the footer)"),
        (lambda m: m.replace(b"https://gw.example.com/u/T", b"https://gw.example.com/u/X"),
         "the rewrite changed signed header fields: list-unsubscribe"),
        (lambda m: m.replace(b"Subject: Spring offer", b"Subject: =?utf-8?q?Spring_offer?="),
         "the rewrite changed signed header fields: subject"),
    ],
    ids=["footer", "one-click link", "re-encoded subject"],
)
def test_an_agent_signature_the_rewrite_broke_is_removed_and_named(rewrite, why: str) -> None:
    original = agent_signed(MESSAGE)
    head = original.split(b"\r\n\r\n", 1)[0]
    kept, removed = without_broken_signatures(rewrite(original), head)
    assert b"DKIM-Signature" not in kept
    assert removed == (f"agent DKIM-Signature d=agent.example removed: {why}",)


def test_an_agent_signature_the_rewrite_left_intact_is_kept_and_still_verifies() -> None:
    """A transactional message gets no footer: the agent's signature goes out as it came,
    beside the gateway's own."""
    original = agent_signed(MESSAGE)
    head = original.split(b"\r\n\r\n", 1)[0]
    kept, removed = without_broken_signatures(original, head)
    assert (kept, removed) == (original, ())
    both = sign(kept, GATEWAY_KEY)
    assert dkimpy_verifies(both, 0) and dkimpy_verifies(both, 1)
    assert sorted(mail_dkim_results(both)) == [
        "pass d=agent.example s=a1 a=rsa-sha256", "pass d=example.com s=gw2026 a=rsa-sha256",
    ]


def test_a_signature_on_a_message_the_gateway_composed_is_removed() -> None:
    """Postmark-shaped sends are written as MIME by the gateway: no earlier signature fits."""
    kept, removed = without_broken_signatures(agent_signed(MESSAGE), None)
    assert b"DKIM-Signature" not in kept
    assert removed[0].startswith("agent DKIM-Signature d=agent.example removed: the gateway "
                                 "composed this message")


def test_an_unreadable_agent_signature_is_removed() -> None:
    garbage = MESSAGE.replace(b"From:", b"DKIM-Signature: v=1; a=nope; =bh\r\nFrom:", 1)
    head = garbage.split(b"\r\n\r\n", 1)[0]
    kept, removed = without_broken_signatures(garbage, head)
    assert kept == MESSAGE
    assert removed == ("agent DKIM-Signature (unreadable) removed: the signature cannot be "
                       "read",)


def test_the_published_record_is_the_public_half_of_the_key() -> None:
    record = public_key_record(GATEWAY_KEY)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(record.split("p=", 1)[1])
    public = serialization.load_der_public_key(der)
    private = serialization.load_pem_private_key(GATEWAY_KEY.private_key_pem, None)
    assert public.public_numbers() == private.public_key().public_numbers()


def test_a_signature_over_a_removed_signature_goes_too() -> None:
    """B signs A's DKIM-Signature header (with l=, so the footer leaves its body hash
    intact): once the footer breaks A and A goes, B no longer verifies either."""
    first = agent_signed(MESSAGE)
    signer = dkim.DKIM(first)
    signer.should_not_sign.discard(b"dkim-signature")  # RFC 6376 advises against; agents may
    both = signer.sign(b"a2", b"agent.example", AGENT_KEY.private_key_pem,
                       include_headers=[b"from", b"dkim-signature"], length=True) + first
    head = both.split(b"\r\n\r\n", 1)[0]
    footed = both.replace(b"Hello Bob.\r\n", b"Hello Bob.\r\n\r\nUnsubscribe: ...\r\n")
    kept, removed = without_broken_signatures(footed, head)
    assert b"DKIM-Signature" not in kept
    assert [r.split(" removed: ")[0] for r in removed] == [
        "agent DKIM-Signature d=agent.example", "agent DKIM-Signature d=agent.example"]


def test_a_signature_over_the_absent_stream_header_goes() -> None:
    """The SMTP upstream adds X-PM-Message-Stream after signing; a signature that signed
    its absence would fail at the receiver."""
    signed = dkim.sign(MESSAGE, b"a1", b"agent.example", AGENT_KEY.private_key_pem,
                       include_headers=[b"from", b"x-pm-message-stream"]) + MESSAGE
    kept, removed = without_broken_signatures(signed, signed.split(b"\r\n\r\n", 1)[0])
    assert kept == MESSAGE
    assert removed == ("agent DKIM-Signature d=agent.example removed: it signs the absence of "
                       "x-pm-message-stream, which the upstream adds",)


def test_a_header_block_dkimpy_cannot_read_removes_the_signature_instead_of_failing() -> None:
    signed = agent_signed(MESSAGE)
    kept, removed = without_broken_signatures(signed, b"From: a@b\r\n\rX: y")
    assert b"DKIM-Signature" not in kept
    assert "could not read the header block" in removed[0]


def test_parse_keeps_the_whole_received_header_block_of_a_signed_message() -> None:
    """With CRLF line ends the header block ends at the first empty line, not at the first
    line end: else an intact agent signature would be compared with one header and lost."""
    original = agent_signed(MESSAGE)
    content = parse_email(original)
    assert content.received_head == original.split(b"\r\n\r\n", 1)[0]
    assert content.mime is not None
    kept, removed = without_broken_signatures(to_bytes(content.mime), content.received_head)
    assert removed == ()
    assert dkimpy_verifies(kept)
