"""Footer insertion over realistic MIME shapes, checked on the serialized and re-parsed output.

Every shape is raw bytes as a mail client would send them. The generic checks hold for all
shapes: the output parses with no new defects; exactly the expected parts gained the footer,
in the right place, with the expected charset and transfer encoding and otherwise unchanged
headers; every other part is byte-identical; a second pass changes nothing.
"""

import base64
import re
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest

from gateway.mail.parse import parse_email, to_bytes
from gateway.rewrite.html_footer import footed_html
from gateway.rewrite.mime import SEALED_TYPES, Footer, RewriteError, add_footer
from tests.conftest import crlf

UNSUBSCRIBE = "https://gw.example/u/T0K3N"
FOOTER_TEXT = f"Unsubscribe: {UNSUBSCRIBE}\nExample Corp, 548 Market St, San Francisco"
FOOTER_HTML = f'<p class="gw">Unsubscribe: <a href="{UNSUBSCRIBE}">here</a></p>'
UMLAUT_TEXT = FOOTER_TEXT + "\nMusterstraße 1, Köln"


def carries_footer(text: str) -> bool:
    return UNSUBSCRIBE in text


def owns_link(url: str) -> bool:
    return url == UNSUBSCRIBE


FOOTER = Footer(FOOTER_TEXT, FOOTER_HTML, carries_footer, owns_link=owns_link)
UMLAUT_FOOTER = Footer(UMLAUT_TEXT, FOOTER_HTML, carries_footer, owns_link=owns_link)

PDF = b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n1 0 obj<<>>endobj\r\ntrailer<<>>\r\n%%EOF\r\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))

TOP = (
    "From: Katie Agent <katie@example.com>\n"
    "To: bob@customer.test\n"
    "Subject: Quick question\n"
    "Date: Tue, 05 Mar 2024 10:00:00 +0000\n"
    "Message-ID: <20240305100000.1@example.com>\n"
    "MIME-Version: 1.0\n"
)


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


def attachment(content_type: str, filename: str, data: bytes) -> str:
    return (
        f'Content-Type: {content_type}; name="{filename}"\n'
        f'Content-Disposition: attachment; filename="{filename}"\n'
        "Content-Transfer-Encoding: base64\n\n"
        f"{b64(data)}"
    )


def signed(body: str) -> str:
    """A PGP/MIME signed entity (its Content-* headers and body), boundary "sig"."""
    return (
        "Content-Type: multipart/signed; micalg=pgp-sha256;\n"
        ' protocol="application/pgp-signature"; boundary="sig"\n\n'
        "This is an OpenPGP/MIME signed message.\n"
        "--sig\n"
        "Content-Type:text/plain;  charset=us-ascii\n"
        "Content-Transfer-Encoding: 7bit\n\n"
        f"{body}\n"
        "--sig\n"
        'Content-Type: application/pgp-signature; name="signature.asc"\n\n'
        "-----BEGIN PGP SIGNATURE-----\n"
        "iHUEARYIAB0WIQTc0ffeeAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
        "-----END PGP SIGNATURE-----\n"
        "--sig--\n"
    )


@dataclass(frozen=True)
class Footered:
    """What a part that gains the footer looks like afterwards."""

    text: str  # decoded body, line endings shown as LF
    charset: str
    transfer_encoding: str  # "" when the part has no Content-Transfer-Encoding header


@dataclass(frozen=True)
class Shape:
    raw: bytes
    footered: dict[str, Footered] = field(default_factory=dict)
    footer: Footer = FOOTER
    footer_part_appended: bool = False


def html_after(markup: str) -> str:
    """An HTML body with the footer placed by the HTML rule (tests/rewrite/test_html_footer.py
    tests that rule; here, that each part gets it, and keeps its charset and encoding)."""
    return footed_html(markup, FOOTER_HTML.replace("\n", "\r\n"), "\r\n").replace("\r\n", "\n")


def after(body: str, footer_text: str = FOOTER_TEXT) -> str:
    """A text body followed by a blank line, the footer and a line break."""
    return body + "\n" + footer_text + "\n"


SHAPES: dict[str, Shape] = {
    "plain": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=us-ascii\n"
            "Content-Transfer-Encoding: 7bit\n\n"
            "Hi Bob,\n\nDo you have ten minutes?\n"
        ),
        {"": Footered(after("Hi Bob,\n\nDo you have ten minutes?\n"), "us-ascii", "7bit")},
    ),
    "html only": Shape(
        crlf(
            TOP + "Content-Type: text/html; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            "<html><head><title>Hi</title></head><body>\n"
            "<p>Hi Bob, see the </body> tag in this sentence.</p>\n"
            "</BODY>\n</html>\n"
        ),
        {
            "": Footered(
                html_after(
                    "<html><head><title>Hi</title></head><body>\n"
                    "<p>Hi Bob, see the </body> tag in this sentence.</p>\n"
                    "</BODY>\n</html>\n"
                ),
                "utf-8",
                "quoted-printable",
            )
        },
    ),
    "alternative": Shape(
        crlf(
            TOP + 'Content-Type: multipart/alternative; boundary="alt"\n\n'
            "--alt\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            "Grüße, Bob\n"
            "--alt\n"
            "Content-Type: text/html; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            "<html><body><p>Grüße</p></body></html>\n"
            "--alt--\n"
        ),
        {
            "1": Footered("Grüße, Bob\n\n" + FOOTER_TEXT + "\n", "utf-8", "8bit"),
            "2": Footered(html_after("<html><body><p>Grüße</p></body></html>"), "utf-8", "8bit"),
        },
    ),
    "mixed with pdf and png": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "This is a multi-part message in MIME format.\n"
            "--mix\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            "The quote is attached.\n\n"
            "--mix\n"
            + attachment("application/pdf", "quote.pdf", PDF)
            + "--mix\n"
            + attachment("image/png", "chart.png", PNG)
            + "--mix--\n"
        ),
        {"1": Footered(after("The quote is attached.\n"), "us-ascii", "")},
    ),
    "related with inline image": Shape(
        crlf(
            TOP + 'Content-Type: multipart/related; type="text/html"; boundary="rel"\n\n'
            "--rel\n"
            "Content-Type: text/html; charset=us-ascii\n"
            "Content-Language: en-US\n\n"
            '<html><body><img src="cid:logo@example.com"></body></html>\n'
            "--rel\n"
            "Content-Type: image/png\n"
            "Content-ID: <logo@example.com>\n"
            "Content-Disposition: inline\n"
            "Content-Transfer-Encoding: base64\n\n" + b64(PNG) + "--rel--\n"
        ),
        {
            "1": Footered(
                html_after('<html><body><img src="cid:logo@example.com"></body></html>'),
                "us-ascii",
                "",
            )
        },
    ),
    "base64 text": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: base64\n\n" + b64("Schöne Grüße\r\nKatie\r\n".encode() * 20)
        ),
        {"": Footered(after("Schöne Grüße\nKatie\n" * 20), "utf-8", "base64")},
    ),
    "quoted-printable text": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            "Caf=C3=A9 au lait, and a line that is long enough to need a soft line =\n"
            "break.\n"
        ),
        {
            "": Footered(
                after("Café au lait, and a line that is long enough to need a soft line break.\n"),
                "utf-8",
                "quoted-printable",
            )
        },
    ),
    "iso-8859-1 keeps its charset for a footer it can encode": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: 8bit\n\n"
            "Un café ?\n",
            "iso-8859-1",
        ),
        {"": Footered(after("Un café ?\n", UMLAUT_TEXT), "iso-8859-1", "8bit")},
        footer=UMLAUT_FOOTER,
    ),
    "windows-1252": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=windows-1252\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            "Price: 10 =80 net\n"
        ),
        {"": Footered(after("Price: 10 € net\n", UMLAUT_TEXT), "windows-1252", "quoted-printable")},
        footer=UMLAUT_FOOTER,
    ),
    "shift_jis": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=shift_jis\n"
            "Content-Transfer-Encoding: base64\n\n" + b64("こんにちは\r\n".encode("shift_jis"))
        ),
        {"": Footered(after("こんにちは\n"), "shift_jis", "base64")},
    ),
    "iso-2022-jp switches to utf-8 for a footer it cannot encode": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=iso-2022-jp\n"
            "Content-Transfer-Encoding: 7bit\n\n",
        )
        + crlf("こんにちは\n", "iso-2022-jp"),
        {"": Footered(after("こんにちは\n", UMLAUT_TEXT), "utf-8", "quoted-printable")},
        footer=UMLAUT_FOOTER,
    ),
    "mime-less us-ascii switches to utf-8 and quoted-printable": Shape(
        crlf("From: katie@example.com\nTo: bob@customer.test\nSubject: hi\n\nRFC 822 text.\n"),
        {"": Footered(after("RFC 822 text.\n", UMLAUT_TEXT), "utf-8", "quoted-printable")},
        footer=UMLAUT_FOOTER,
    ),
    "format=flowed keeps its parameters": Shape(
        crlf(
            TOP + "Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes\n"
            "Content-Language: en\n\n"
            "This paragraph flows \nacross two lines.\n"
        ),
        {
            "": Footered(
                after(
                    "This paragraph flows \nacross two lines.\n",
                    " > Reply STOP to opt out\nMusterstraße 1",
                ),
                "utf-8",
                "quoted-printable",
            )
        },
        footer=Footer("> Reply STOP to opt out  \nMusterstraße 1", "", lambda text: "STOP" in text),
    ),
    "html with only </html>": Shape(
        crlf(TOP + "Content-Type: text/html\n\n<html><p>Hi Bob</p></HTML>\n"),
        {"": Footered(html_after("<html><p>Hi Bob</p></HTML>\n"), "us-ascii", "")},
    ),
    "html fragment": Shape(
        crlf(TOP + "Content-Type: text/html\n\n<p>Hi Bob</p>\n"),
        {"": Footered(html_after("<p>Hi Bob</p>\n"), "us-ascii", "")},
    ),
    "attached message stays closed": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n"
            "Content-Type: text/plain\n\n"
            "Forwarding the thread.\n"
            "--mix\n"
            "Content-Type: message/rfc822\n"
            "Content-Disposition: inline\n\n"
            "From: alice@partner.test\nSubject: Original\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            "Original text.\n"
            "--mix--\n"
        ),
        {"1": Footered(after("Forwarding the thread.\n"), "us-ascii", "")},
    ),
    "deep nesting": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="l1"\n\n'
            "--l1\n"
            'Content-Type: multipart/alternative; boundary="l2"\n\n'
            "--l2\n"
            "Content-Type: text/plain; charset=utf-8\n\n"
            "Text version.\n"
            "--l2\n"
            'Content-Type: multipart/related; boundary="l3"\n\n'
            "--l3\n"
            "Content-Type: text/html; charset=utf-8\n\n"
            "<html><body>HTML version.</body></html>\n"
            "--l3\n"
            "Content-Type: image/png\nContent-ID: <img1>\n"
            "Content-Transfer-Encoding: base64\n\n" + b64(PNG) + "--l3--\n"
            "--l2--\n"
            "--l1\n" + attachment("application/pdf", "quote.pdf", PDF) + "--l1--\n"
        ),
        {
            "1.1": Footered(after("Text version.\n"), "utf-8", ""),
            "1.2.1": Footered(html_after("<html><body>HTML version.</body></html>"), "utf-8", ""),
        },
    ),
    "text attachment stays untouched": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n"
            "Content-Type: text/plain\n\n"
            "Notes attached.\n"
            "--mix\n"
            'Content-Type: text/plain; charset=us-ascii; name="notes.txt"\n'
            'Content-Disposition: attachment; filename="notes.txt"\n\n'
            "These are my notes.\n"
            "--mix--\n"
        ),
        {"1": Footered(after("Notes attached.\n"), "us-ascii", "")},
    ),
    "unusual but valid headers": Shape(
        crlf(
            "From:katie@example.com\n"
            "To:  bob@customer.test,\n\tcarol@customer.test\n"
            "Subject: a subject line that the agent folded\n   with odd indentation\n"
            "X-Agent-Trace:\n value on the next line\n"
            "Content-Type: text/plain\n\n"
            "Body.\n"
        ),
        {"": Footered(after("Body.\n"), "us-ascii", "")},
    ),
    "bare LF line endings": Shape(
        (TOP + "Content-Type: text/plain; charset=us-ascii\n\nOne\nTwo\n").encode(),
        {"": Footered(after("One\nTwo\n"), "us-ascii", "")},
    ),
    "8bit UTF-8 body": Shape(
        crlf(
            "From: katie@example.com\nTo: bob@customer.test\n"
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            "Grüße aus Köln\n"
        ),
        {"": Footered(after("Grüße aus Köln\n"), "utf-8", "8bit")},
    ),
    "missing close boundary is tolerated": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n"
            "Content-Type: text/plain\n\n"
            "Cut short.\n"
        ),
        {"1": Footered(after("Cut short.\n"), "us-ascii", "")},
    ),
    "attachment only gets a footer part": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n" + attachment("application/pdf", "quote.pdf", PDF) + "--mix--\n"
        ),
        footer_part_appended=True,
    ),
    "signed entity inside mixed with text": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n"
            "Content-Type: text/plain\n\n"
            "See the signed statement.\n"
            "--mix\n" + signed("I, Katie, state this.") + "--mix--\n"
        ),
        {"1": Footered(after("See the signed statement.\n"), "us-ascii", "")},
    ),
    "signed entity alone inside mixed gets a footer part": Shape(
        crlf(
            TOP + 'Content-Type: multipart/mixed; boundary="mix"\n\n'
            "--mix\n" + signed("I, Katie, state this.") + "--mix--\n"
        ),
        footer_part_appended=True,
    ),
}


def parse_clean(raw: bytes) -> EmailMessage:
    content = parse_email(raw)
    assert content.problems == ()
    assert content.mime is not None
    return content.mime


def rewrite(raw: bytes, footer: Footer = FOOTER) -> bytes:
    return to_bytes(add_footer(parse_clean(raw), footer))


def closed_parts(message: EmailMessage, section: str = "") -> dict[str, EmailMessage]:
    """Leaves, attached messages and sealed entities by IMAP-style section."""
    if (
        not message.is_multipart()
        or message.get_content_maintype() == "message"
        or message.get_content_type() in SEALED_TYPES
    ):
        return {section: message}
    found = {}
    for index, child in enumerate(message.iter_parts(), 1):
        found |= closed_parts(child, f"{section}.{index}" if section else str(index))
    return found


def all_defects(message: EmailMessage) -> list[str]:
    return sorted(type(d).__name__ for part in message.walk() for d in part.defects)


def text_of(part: EmailMessage) -> str:
    return part.get_payload(decode=True).decode(part.get_content_charset("us-ascii"))


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def header_items(part: EmailMessage, without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(n, v) for n, v in part.raw_items() if n.lower() not in without]


def params_without_charset(part: EmailMessage) -> list[tuple[str, str]]:
    return [(k, v) for k, v in part.get_params(failobj=[("text/plain", "")]) if k != "charset"]


def header_block(raw: bytes) -> bytes:
    return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


def header_fields(raw: bytes) -> list[bytes]:
    """Each field of the top-level header block with its folding, as CRLF bytes."""
    block = header_block(raw).replace(b"\r\n", b"\n")
    return [f.replace(b"\n", b"\r\n") for f in re.split(rb"\n(?=[^ \t])", block)]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_rewrite_shape(shape: Shape) -> None:
    output = rewrite(shape.raw, shape.footer)
    original = parse_clean(shape.raw)
    result = parse_clean(output)

    assert b"\n" not in output.replace(b"\r\n", b"")
    assert all_defects(result) == [
        d for d in all_defects(original) if d != "CloseBoundaryNotFoundDefect"
    ]
    before, now = closed_parts(original), closed_parts(result)
    if shape.footer_part_appended:
        appended = str(len(result.get_payload()))
        assert lf(text_of(now.pop(f"{appended}.1"))) == shape.footer.text + "\n"
        assert lf(text_of(now.pop(f"{appended}.2"))) == footed_html("", shape.footer.html)
    assert now.keys() == before.keys()
    for section, part in now.items():
        if section in shape.footered:
            assert_footered(before[section], part, shape.footered[section])
        else:
            assert to_bytes(part) == to_bytes(before[section])
            assert part.get_payload(decode=True) == before[section].get_payload(decode=True)
    rewritten_root = "" in shape.footered
    for raw_field in header_fields(shape.raw):
        name = raw_field.split(b":", 1)[0].lower()
        if not (rewritten_root and name in (b"content-type", b"content-transfer-encoding")):
            assert raw_field in header_block(output)


def assert_footered(original: EmailMessage, rewritten: EmailMessage, expected: Footered) -> None:
    assert lf(text_of(rewritten)) == expected.text
    assert rewritten.get_content_charset("us-ascii") == expected.charset
    assert str(rewritten.get("Content-Transfer-Encoding", "")) == expected.transfer_encoding
    assert params_without_charset(rewritten) == params_without_charset(original)
    changed = ("content-type", "content-transfer-encoding", "mime-version")
    assert header_items(rewritten, changed) == header_items(original, changed)
    limit = 76 if expected.transfer_encoding in ("base64", "quoted-printable") else 998
    assert max(len(line) for line in rewritten.get_payload().splitlines()) <= limit


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_second_pass_changes_nothing(shape: Shape) -> None:
    once = rewrite(shape.raw, shape.footer)
    assert rewrite(once, shape.footer) == once


def test_footer_already_in_the_input_is_not_repeated() -> None:
    raw = crlf(
        TOP + 'Content-Type: multipart/alternative; boundary="alt"\n\n'
        "--alt\n"
        "Content-Type: text/plain\n\n"
        f"> Earlier mail quoted with {UNSUBSCRIBE} in it\n"
        "--alt\n"
        "Content-Type: text/html\n\n"
        "<html><body>No link here</body></html>\n"
        "--alt--\n"
    )
    result = parse_clean(rewrite(raw))
    plain, html = result.get_payload()
    assert text_of(plain) == f"> Earlier mail quoted with {UNSUBSCRIBE} in it"
    assert text_of(html).count(UNSUBSCRIBE) == 1


@pytest.mark.parametrize(
    ("body", "newline"), [(b"Line one\r\nLine two\r\n", "\r\n"), (b"Line one\nLine two\n", "\n")]
)
def test_base64_text_keeps_its_own_line_endings(body: bytes, newline: str) -> None:
    raw = crlf(TOP + "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + b64(body))
    result = parse_clean(rewrite(raw))
    expected = body.decode() + newline + FOOTER_TEXT.replace("\n", newline) + newline
    assert result.get_payload(decode=True).decode() == expected


def test_text_without_final_newline_gets_one_before_the_footer() -> None:
    raw = crlf(TOP + "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n") + (
        b64(b"No newline").encode()
    )
    result = parse_clean(rewrite(raw))
    assert result.get_payload(decode=True) == f"No newline\n\n{FOOTER_TEXT}\n".encode()


def test_invalid_bytes_in_the_original_charset_survive() -> None:
    raw = (
        crlf(TOP + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n")
        + b64(b"caf\xe9 \xff\n").encode()
    )
    result = parse_clean(rewrite(raw, UMLAUT_FOOTER))
    expected = b"caf\xe9 \xff\n\n" + UMLAUT_TEXT.encode() + b"\n"
    assert result.get_payload(decode=True) == expected


def test_invalid_bytes_survive_a_switch_to_utf8() -> None:
    raw = crlf(
        TOP + "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 8bit\n\n"
    )
    result = parse_clean(rewrite(raw + b"caf\xff\r\n", UMLAUT_FOOTER))
    assert result.get_content_charset() == "utf-8"
    expected = b"caf\xff\r\n\r\n" + UMLAUT_TEXT.replace("\n", "\r\n").encode() + b"\r\n"
    assert result.get_payload(decode=True) == expected


@pytest.mark.parametrize(("footer", "mime_version"), [(FOOTER, None), (UMLAUT_FOOTER, "1.0")])
def test_message_that_gains_mime_headers_declares_mime(
    footer: Footer, mime_version: str | None
) -> None:
    raw = crlf("From: katie@example.com\nSubject: hi\n\nPlain text.\n")
    assert parse_clean(rewrite(raw, footer))["MIME-Version"] == mime_version


def test_seven_bit_body_with_an_overlong_line_becomes_quoted_printable() -> None:
    raw = crlf(TOP + "Content-Type: text/plain\nContent-Transfer-Encoding: 7bit\n\n" + "x" * 990)
    result = parse_clean(rewrite(raw, Footer("y" * 20, "", carries_footer)))
    assert result["Content-Transfer-Encoding"] == "7bit"
    long_raw = crlf(TOP + "Content-Type: text/plain\n\n" + "x" * 1200 + "\n")
    long_result = parse_clean(rewrite(long_raw))
    assert long_result["Content-Transfer-Encoding"] == "quoted-printable"
    assert lf(text_of(long_result)) == after("x" * 1200 + "\n")


def test_footer_part_is_utf8_alternative_with_text_and_html() -> None:
    raw = crlf(TOP + attachment("application/pdf", "quote.pdf", PDF))
    result = parse_clean(rewrite(raw, UMLAUT_FOOTER))
    footer_part = result.get_payload(1)
    assert footer_part.get_content_type() == "multipart/alternative"
    plain, html = footer_part.get_payload()
    assert (plain.get_content_type(), plain.get_content_charset()) == ("text/plain", "utf-8")
    assert (html.get_content_type(), html.get_content_charset()) == ("text/html", "utf-8")
    assert lf(text_of(plain)) == UMLAUT_TEXT + "\n"
    assert lf(text_of(html)) == footed_html("", FOOTER_HTML)


WRAPPED_ROOTS = {
    "multipart/signed": signed("I, Katie, state this."),
    "application/pkcs7-mime": (
        'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\n'
        "Content-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="smime.p7m"\n\n' + b64(bytes(range(200)))
    ),
    "application/x-pkcs7-mime": (
        "Content-Type: application/x-pkcs7-mime; smime-type=enveloped-data\n"
        "Content-Transfer-Encoding: base64\n\n" + b64(bytes(range(90)))
    ),
    "multipart/encrypted": (
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n'
        ' boundary="enc"\n\n'
        "--enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n"
        "--enc\nContent-Type: application/octet-stream\n\n"
        "-----BEGIN PGP MESSAGE-----\nhQEMA0x\n-----END PGP MESSAGE-----\n"
        "--enc--\n"
    ),
    "application/pdf": (
        'Content-Type: application/pdf; name="quote.pdf"\nContent-Transfer-Encoding: base64\n\n'
        + b64(PDF)
    ),
    "text/plain attachment": (
        'Content-Type: text/plain; name="notes.txt"\n'
        'Content-Disposition: attachment; filename="notes.txt"\n\n'
        "My notes.\n"
    ),
}


@pytest.mark.parametrize("entity", WRAPPED_ROOTS.values(), ids=WRAPPED_ROOTS.keys())
def test_root_without_room_for_a_footer_is_wrapped(entity: str) -> None:
    output = rewrite(crlf(TOP + entity))
    result = parse_clean(output)

    assert result.get_content_type() == "multipart/mixed"
    assert [n for n, _ in result.raw_items()] == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ]
    assert header_block(output).startswith(header_block(crlf(TOP)))
    first, footer_part = result.get_payload()
    assert b"\r\n" + crlf(entity) + b"\r\n--" in output
    assert UNSUBSCRIBE not in to_bytes(first).decode("latin-1")
    plain, html = footer_part.get_payload()
    assert lf(text_of(plain)) == FOOTER_TEXT + "\n"
    assert lf(text_of(html)) == footed_html("", FOOTER_HTML)
    assert rewrite(output) == output


def test_signed_entity_keeps_preamble_and_epilogue() -> None:
    entity = signed("Signed.") + "epilogue text\n"
    output = rewrite(crlf(TOP + entity))
    assert b"\r\n" + crlf(entity) + b"\r\n--" in output


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            crlf(TOP + "Content-Type: text/plain; charset=x-foo\n\nHi\n"),
            "unknown charset 'x-foo' in top-level text/plain",
        ),
        (
            crlf(TOP + "Content-Type: multipart/mixed\n\n--x\n\nHi\n--x--\n"),
            "top-level multipart/mixed has no boundary parameter",
        ),
    ],
)
def test_rewrite_error_names_the_problem_parse_email_reported(raw: bytes, problem: str) -> None:
    content = parse_email(raw)
    assert content.problems == (problem,)
    assert content.mime is not None
    with pytest.raises(RewriteError, match=re.escape(problem)):
        add_footer(content.mime, FOOTER)
