"""What every MTA relays is repaired (RFC 6532 headers, loosely spelled transfer encodings);
what could be read two ways is still refused, naming the part."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.parse import parse_email, to_bytes
from gateway.mail.repair import canonical_transfer_encoding
from tests.conftest import crlf

SPELLINGS = {
    "8bits": "8bit", "8BIT": "8bit", "8-bit": "8bit", "7-bit": "7bit", "7bits": "7bit",
    " 7bit ": "7bit", "quoted printable": "quoted-printable",
    "quoted-printable;": "quoted-printable", "Quoted_Printable": "quoted-printable",
    '"base64"': "base64", "base-64": "base64", "BINARY": "binary",
}


@pytest.mark.parametrize(("written", "meant"), SPELLINGS.items())
def test_loose_transfer_encoding_spellings_have_one_meaning(written: str, meant: str) -> None:
    assert canonical_transfer_encoding(written) == meant


@pytest.mark.parametrize("written", ["x-uuencode", "8bitz", "quoted", "base32", "uue", ""])
def test_other_transfer_encodings_are_not_guessed(written: str) -> None:
    assert canonical_transfer_encoding(written) is None


def text_message(transfer_encoding: str, body: str, charset: str = "utf-8") -> bytes:
    return crlf(
        "From: katie@example.com\nTo: bob@client.example.net\nSubject: hi\nMIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset={charset}\n"
        f"Content-Transfer-Encoding: {transfer_encoding}\n\n{body}\n"
    )


@pytest.mark.parametrize(
    ("written", "body", "text"),
    [
        ("quoted printable", "Gr=C3=BC=C3=9Fe", "Grüße"),
        ("quoted-printable;", "caf=C3=A9", "café"),
        ("8bits", "Grüße", "Grüße"),
        ("7-bit", "Hello", "Hello"),
        ("Base-64", "R3LDvMOfZQ==", "Grüße"),
    ],
)
def test_a_repaired_part_is_decoded_as_its_sender_meant_and_the_repair_named(
    written: str, body: str, text: str
) -> None:
    content = parse_email(text_message(written, body))
    assert content.problems == ()
    meant = canonical_transfer_encoding(written)
    assert content.repairs == (
        f"Content-Transfer-Encoding {written!r} of the message read as {meant!r}",
    )
    assert content.mime is not None
    reread = message_from_bytes(to_bytes(content.mime), policy=policy.default)
    assert reread["Content-Transfer-Encoding"] == meant
    assert reread.get_content().rstrip("\r\n") == text


UTF8_HEADERS = {
    "subject": ("Subject: Grüße aus Köln", "Subject", "Grüße aus Köln"),
    "display name and IDN domain": (
        "From: Jürgen Müller <jm@bücher.example>", "From",
        "Jürgen Müller <jm@xn--bcher-kva.example>",
    ),
    "group of addresses": (
        "To: Käufer: anna@bücher.example, ben@example.com;", "To",
        "Käufer: anna@xn--bcher-kva.example, ben@example.com;",
    ),
    "comment in a date": (
        "Date: Mon, 30 Nov 2026 10:00:00 +0100 (Mitteleuropäische Zeit)", "Date",
        "Mon, 30 Nov 2026 10:00:00 +0100 (Mitteleuropäische Zeit)",
    ),
    "unknown header": ("X-Campaign: Frühling", "X-Campaign", "Frühling"),
}


@pytest.mark.parametrize(("line", "name", "decoded"), UTF8_HEADERS.values(),
                         ids=UTF8_HEADERS.keys())
def test_raw_utf8_headers_are_re_encoded_to_ascii_with_the_same_meaning(
    line: str, name: str, decoded: str
) -> None:
    """RFC 6532 in, RFC 2047 and IDNA out: any upstream can carry it, any reader decodes
    it to what the agent wrote."""
    sender = "" if line.startswith("From:") else "From: katie@example.com\n"
    raw = crlf(f"{sender}{line}\n\nHi\n")
    content = parse_email(raw)
    assert content.problems == ()
    assert content.repairs == (f"header {name!r}: raw UTF-8 re-encoded for 7-bit transport",)
    assert content.mime is not None
    out = to_bytes(content.mime)
    head = out.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    written = message_from_bytes(out, policy=policy.compat32)[name]
    # decode_header keeps the space that separates an encoded word from a group's colon
    assert str(make_header(decode_header(written))).replace(" :", ":") == decoded


def test_what_the_policy_reads_is_the_header_as_written() -> None:
    raw = crlf("From: Jürgen <jm@BÜCHER.example>\nSubject: Grüße\n\nHi\n")
    content = parse_email(raw)
    assert content.from_addresses == ("jm@bücher.example",)
    assert content.subject == "Grüße"


def test_a_non_ascii_local_part_stays_utf8_and_says_it_needs_smtputf8() -> None:
    """RFC 2047 may not encode an addr-spec: only SMTPUTF8 can carry it."""
    raw = crlf("From: Jürgen <jürgen@bücher.example>\nSubject: hi\n\nHi\n")
    content = parse_email(raw)
    assert content.problems == ()
    assert content.repairs == (
        "header 'From': raw UTF-8 re-encoded for 7-bit transport (the rest needs SMTPUTF8)",
    )
    assert content.mime is not None
    head = to_bytes(content.mime).split(b"\r\n\r\n", 1)[0]
    assert "=?utf-8?q?J=C3=BCrgen?= <jürgen@xn--bcher-kva.example>".encode() in head


def test_header_order_is_kept_by_the_re_encoding() -> None:
    raw = crlf("Received: by x\nFrom: a@b.test\nSubject: Grüße\nX-Later: 1\n\nHi\n")
    content = parse_email(raw)
    assert content.mime is not None
    assert [n for n, _ in content.mime.raw_items()] == ["Received", "From", "Subject", "X-Later"]


AMBIGUOUS = {
    "unknown transfer encoding": (
        text_message("x-uuencode", "begin 644 x"),
        "unsupported Content-Transfer-Encoding 'x-uuencode' in top-level text/plain",
    ),
    "unknown charset": (
        text_message("8bit", "hi", charset="x-klingon"),
        "unknown charset 'x-klingon' in top-level text/plain",
    ),
    "boundary that never appears": (
        crlf("From: a@b.test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n"
             "--yy\nContent-Type: text/plain\n\nhi\n--yy--\n"),
        "boundary 'zz' of top-level multipart/mixed never appears in its body",
    ),
    "header block with a non-header line": (
        crlf("From: a@b.test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
             "--b\nContent-Type: text/plain\nthis is not a header\n\nhi\n--b--\n"),
        "header block of MIME part 1 has a line that is not a header field",
    ),
    "latin-1 bytes in a header": (
        b"From: a@b.test\r\nSubject: Gr\xfc\xdfe\r\n\r\nHi\r\n",
        "header 'Subject' contains 8-bit bytes that are not valid UTF-8",
    ),
}


@pytest.mark.parametrize(("raw", "problem"), AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_what_could_be_read_two_ways_is_still_refused(raw: bytes, problem: str) -> None:
    content = parse_email(raw)
    assert problem in content.problems


@pytest.mark.parametrize(
    "line",
    [
        'From: "Zoë Smith"\n <katie@example.com>',
        "To: Zoë <a@example.com>,\n Jürgen <b@example.com>",
        "Cc: :é",
        "Reply-To: .,Re:é",
        "To: Käufer:;",
        "Subject: Grüße\n aus\n Köln",
    ],
)
def test_odd_or_folded_utf8_headers_never_break_parsing(line: str) -> None:
    """Found by an attack run: folds and odd syntax made the re-encoding raise (a 451 on
    every retry). A header that cannot be re-encoded stays as written."""
    sender = "" if line.startswith("From:") else "From: katie@example.com\n"
    content = parse_email(crlf(f"{sender}{line}\n\nHi\n"))
    assert content.mime is not None
    to_bytes(content.mime)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["Subject", "From", "To", "Cc", "Reply-To", "Date", "X-Note",
                          "Message-ID", "Content-Type", "Keywords"]),
    value=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
                  max_size=40),
    fold=st.booleans(),
)
def test_any_utf8_header_value_is_parsed_without_raising(name: str, value: str, fold: bool) -> None:
    line = f"{name}: {value}".replace(" ", "\n ", 1) if fold else f"{name}: {value}"
    raw = f"From: katie@example.com\n{line}\n\nHi\n" if name != "From" else f"{line}\n\nHi\n"
    content = parse_email(crlf(raw))
    if content.mime is not None and not content.problems:
        to_bytes(content.mime)


def test_the_reader_sees_the_subject_the_policy_checked() -> None:
    """An encoded word written inside raw UTF-8 text was decoded by the policy; re-encoding
    the raw text would show the reader the literal, a different subject."""
    raw = crlf("From: katie@example.com\nSubject: [EXT=?utf-8?q?=5D?=] Re: überfällig\n\nHi\n")
    content = parse_email(raw)
    assert content.mime is not None
    written = message_from_bytes(to_bytes(content.mime), policy=policy.default)["Subject"]
    assert written == content.subject == "[EXT]] Re: überfällig"


def test_message_ids_and_quoted_strings_are_left_as_written() -> None:
    """RFC 2047 §5: no encoded words in a msg-id or a quoted string."""
    raw = crlf("From: katie@example.com\nIn-Reply-To: <zoë.1@example.com>\n"
               'Message-ID: <"(ü)"@example.com>\nDate: Mon, 30 Nov 2026 10:00:00 +0100 (MEZ ü)\n'
               "\nHi\n")
    content = parse_email(raw)
    assert content.mime is not None
    head = to_bytes(content.mime).split(b"\r\n\r\n", 1)[0]
    assert "In-Reply-To: <zoë.1@example.com>".encode() in head
    assert 'Message-ID: <"(ü)"@example.com>'.encode() in head
    assert b"(=?utf-8?" in head, "the Date comment is still re-encoded"


CLOSED_ENTITIES = {
    "signed entity": (
        'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=s\n\n'
        "--s\nContent-Type: text/plain\nContent-Transfer-Encoding: 7-bit\n\nsigned\n"
        "--s\nContent-Type: application/pgp-signature\n\nSIG\n--s--\n",
        b"Content-Transfer-Encoding: 7-bit",
    ),
    "attached message": (
        "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: text/plain\n\n"
        "see attached\n--m\nContent-Type: message/rfc822\n\nFrom: old@partner.test\n"
        "Subject: earlier\nContent-Type: text/plain\n"
        "Content-Transfer-Encoding: Quoted_Printable\n\nold\n--m--\n",
        b"Content-Transfer-Encoding: Quoted_Printable",
    ),
}


@pytest.mark.parametrize(("entity", "kept"), CLOSED_ENTITIES.values(), ids=CLOSED_ENTITIES.keys())
def test_a_signed_entity_or_attached_message_is_never_repaired(entity: str, kept: bytes) -> None:
    """Changing a byte inside breaks its signature or changes what was forwarded."""
    content = parse_email(crlf(f"From: katie@example.com\nMIME-Version: 1.0\n{entity}"))
    assert content.repairs == ()
    assert content.mime is not None
    assert kept in to_bytes(content.mime)
