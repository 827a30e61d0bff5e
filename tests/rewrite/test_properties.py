"""Properties: parse_email never raises, a message without problems can always be rewritten,
and for generated well-formed messages the rewrite keeps attachments and footers every
eligible part exactly once."""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from email import quoprimime
from email.generator import BytesGenerator
from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.parse import MIME_POLICY, parse_email, to_bytes
from gateway.rewrite.mime import SEALED_TYPES, Footer, add_footer

MARK = "https://gw.example/u/PROPERTY"


def carries_footer(text: str) -> bool:
    return MARK in text


def owns_link(url: str) -> bool:
    return url == MARK


FOOTERS = [
    Footer(f"Unsubscribe: {MARK}", f'<a href="{MARK}">Unsubscribe</a>', carries_footer,
           owns_link=owns_link),
    Footer(f"Abmelden: {MARK}\nMusterstraße 1", f'<p><a href="{MARK}">Abmelden</a> Straße</p>',
           carries_footer, owns_link=owns_link),
    Footer(f"配信停止: {MARK}", f'<p><a href="{MARK}">配信停止</a></p>', carries_footer,
           owns_link=owns_link),
]

# Characters each charset can encode; no "-", "_" or "=" so no body can contain a boundary.
REPERTOIRES = {
    "us-ascii": "abc XYZ 019.,!?<>/\n",
    "utf-8": "abc XYZ ßöü€ 日本語 😀\n",
    "iso-8859-1": "abc XYZ ßöüé\n",
    "windows-1252": "abc XYZ €ßö\n",
    "shift_jis": "abc XYZ こんにちは日本\n",
    "iso-2022-jp": "abc XYZ こんにちは日本\n",
    "koi8-r": "abc XYZ привет\n",
}


@dataclass(frozen=True)
class TextLeaf:
    subtype: str
    charset: str
    transfer_encoding: str
    disposition: str
    text: str


@dataclass(frozen=True)
class Attachment:
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Closed:
    """An entity add_footer must never open: a signed part or an attached message."""

    entity: str


@dataclass(frozen=True)
class Multipart:
    subtype: str
    children: tuple[Tree, ...]


Tree = TextLeaf | Attachment | Closed | Multipart


def encoded_text(leaf: TextLeaf) -> str:
    body = leaf.text
    if leaf.subtype == "html":
        body = f"<html><body>{body}</body></html>"
    if leaf.transfer_encoding == "base64":
        return base64.encodebytes(body.replace("\n", "\r\n").encode(leaf.charset)).decode()
    data = body.encode(leaf.charset)  # raw_message turns its LFs into CRLF
    if leaf.transfer_encoding == "quoted-printable":
        return quoprimime.body_encode(data.decode("latin-1"))
    return data.decode("ascii", "surrogateescape")


@st.composite
def text_leaves(draw: st.DrawFn) -> TextLeaf:
    charset = draw(st.sampled_from(sorted(REPERTOIRES)))
    text = draw(st.text(alphabet=REPERTOIRES[charset], max_size=120))
    encodings = ["8bit", "quoted-printable", "base64"]
    if text.encode(charset).isascii():
        encodings.append("7bit")
    return TextLeaf(
        subtype=draw(st.sampled_from(["plain", "html"])),
        charset=charset,
        transfer_encoding=draw(st.sampled_from(encodings)),
        disposition=draw(st.sampled_from(["", "inline", "attachment"])),
        text=text,
    )


attachments = st.builds(
    Attachment,
    content_type=st.sampled_from(["application/pdf", "image/png", "application/octet-stream"]),
    data=st.binary(max_size=200),
)
closed_entities = st.sampled_from(
    [
        Closed(
            'Content-Type: multipart/signed; protocol="application/pgp-signature";\n'
            ' micalg=pgp-sha256; boundary="sig"\n\n'
            "--sig\nContent-Type: text/plain\n\nSigned words.\n"
            "--sig\nContent-Type: application/pgp-signature\n\nSIG\n--sig--\n"
        ),
        Closed(
            "Content-Type: message/rfc822\n\n"
            "From: old@partner.test\nSubject: earlier\nContent-Type: text/plain\n\nOld text.\n"
        ),
        Closed(
            "Content-Type: application/pkcs7-mime; smime-type=signed-data\n"
            "Content-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n"
        ),
    ]
)
trees = st.recursive(
    st.one_of(text_leaves(), attachments, closed_entities),
    lambda children: st.builds(
        Multipart,
        subtype=st.sampled_from(["mixed", "alternative", "related"]),
        children=st.lists(children, min_size=1, max_size=3).map(tuple),
    ),
    max_leaves=6,
)


def render(tree: Tree, names: Iterator[int]) -> str:
    """The entity's Content-* headers, a blank line and its body, with LF line endings."""
    if isinstance(tree, Closed):
        return tree.entity
    if isinstance(tree, Attachment):
        filename = f"file{next(names)}.bin"
        return (
            f'Content-Type: {tree.content_type}; name="{filename}"\n'
            f'Content-Disposition: attachment; filename="{filename}"\n'
            "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(tree.data).decode()
        )
    if isinstance(tree, TextLeaf):
        disposition = f"Content-Disposition: {tree.disposition}\n" if tree.disposition else ""
        if tree.disposition == "attachment":
            disposition = f'Content-Disposition: attachment; filename="text{next(names)}.txt"\n'
        return (
            f"Content-Type: text/{tree.subtype}; charset={tree.charset}\n{disposition}"
            f"Content-Transfer-Encoding: {tree.transfer_encoding}\n\n{encoded_text(tree)}"
        )
    boundary = f"----=_Part_{next(names)}"
    parts = "".join(f"--{boundary}\n{render(child, names)}\n" for child in tree.children)
    return (
        f'Content-Type: multipart/{tree.subtype}; boundary="{boundary}"\n\n{parts}--{boundary}--\n'
    )


def raw_message(tree: Tree) -> bytes:
    headers = "From: Katie <katie@example.com>\nTo: bob@customer.test\nSubject: generated\n"
    text = headers + "MIME-Version: 1.0\n" + render(tree, itertools.count(1))
    return text.replace("\n", "\r\n").encode("ascii", "surrogateescape")


def eligible_parts(part: EmailMessage, shown: bool = False) -> Iterator[EmailMessage]:
    """Text parts a reader is shown: not attachments, except an alternative (a client picks
    one of a multipart/alternative to display, whatever its Content-Disposition)."""
    if part.get_content_maintype() == "multipart" and part.get_content_type() not in SEALED_TYPES:
        alternative = part.get_content_type() == "multipart/alternative"
        for child in part.iter_parts():
            yield from eligible_parts(child, alternative)
    elif part.get_content_type() in ("text/plain", "text/html") and (
        shown or not part.is_attachment()
    ):
        yield part


def closed_parts(part: EmailMessage) -> Iterator[tuple[list[tuple[str, str]], bytes]]:
    """Content-* headers and body bytes of each entity add_footer must not open (a wrapped root
    moves its other headers to the new root)."""
    if part.get_content_type() in SEALED_TYPES or part.get_content_maintype() == "message":
        content_headers = [(n, v) for n, v in part.raw_items() if n.lower().startswith("content-")]
        yield content_headers, to_bytes(part).split(b"\r\n\r\n", 1)[1]
    else:
        for child in part.iter_parts():
            yield from closed_parts(child)


def attachment_payloads(message: EmailMessage) -> dict[str, bytes]:
    shown = {id(part) for part in eligible_parts(message)}
    return {
        part.get_filename(): part.get_payload(decode=True)
        for part in message.walk()
        if part.get_filename() and id(part) not in shown
    }


def is_attached(tree: Tree) -> bool:
    return isinstance(tree, Attachment) or (
        isinstance(tree, TextLeaf) and tree.disposition == "attachment"
    )


def shows_text(tree: Tree, shown: bool) -> bool:
    """Whether a reader shown this part sees a text body the footer can go into: a sealed
    entity or attached message shows its own content, an image or PDF no text at all."""
    if isinstance(tree, TextLeaf):
        return shown or tree.disposition != "attachment"
    if isinstance(tree, Multipart):
        alternative = tree.subtype == "alternative"
        return any(shows_text(c, alternative or (shown and not is_attached(c)))
                   for c in tree.children)
    return False


def unfooted_alternative(tree: Tree) -> bool:
    """A client may display any alternative: one showing no footable text means a reader
    could see the message without the footer."""
    if not isinstance(tree, Multipart):
        return False
    if tree.subtype == "alternative" and not all(shows_text(c, True) for c in tree.children):
        return True
    return any(unfooted_alternative(c) for c in tree.children)


def decoded_text(part: EmailMessage) -> str:
    return part.get_payload(decode=True).decode(part.get_content_charset("us-ascii"))


def rewritten(raw: bytes, footer: Footer) -> bytes:
    content = parse_email(raw)
    assert content.problems == ()
    return to_bytes(add_footer(content.mime, footer))


def assert_rewritable_when_clean(raw: bytes) -> None:
    """The contract between the two: no problems means add_footer cannot fail."""
    content = parse_email(raw)
    assert content.size == len(raw)
    if not content.problems:
        output = to_bytes(add_footer(content.mime, FOOTERS[1]))
        assert parse_email(output).problems == ()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_rewritable_when_clean(raw)


SEEDS = [
    b"From: a@b.test\r\nSubject: =?utf-8?q?hi?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n",
    b'From: a@b.test\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<body>caf\xe9</body>\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQK\r\n--b--\r\n",
    b'From: a@b.test\r\nContent-Type: multipart/alternative; boundary="x"\r\n\r\n'
    b"--x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
    b'--x\r\nContent-Type: multipart/related; boundary="y"\r\n\r\n'
    b"--y\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--y--\r\n--x--\r\n",
]
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"--",
    b"--b",
    b":",
    b";",
    b'"',
    b"=?",
    b"?=",
    b"\xff",
    b"\xc3\xa9",
    b" ",
    b"boundary=",
    b"charset=",
    b"Content-Type: multipart/mixed",
    b"Content-Transfer-Encoding: ",
    b"=?x-foo?q?a?=",
    b"text/plain",
    b"message/rfc822",
    b"multipart/signed",
    b"<",
    b">",
    b"@",
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if action == "insert":
            raw[position:position] = draw(st.sampled_from(FRAGMENTS) | st.binary(max_size=4))
        elif action == "delete":
            del raw[position : position + draw(st.integers(1, 12))]
        else:
            raw[position:position] = raw[position : position + draw(st.integers(1, 40))]
    return bytes(raw)


@settings(max_examples=200, deadline=None)
@given(mutated_messages())
def test_mutated_messages_never_raise(raw: bytes) -> None:
    assert_rewritable_when_clean(raw)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.sampled_from(FOOTERS))
def test_generated_messages_are_footered_once_and_keep_attachments(
    tree: Tree, footer: Footer
) -> None:
    raw = raw_message(tree)
    if unfooted_alternative(tree):
        assert any("is an alternative that cannot carry the footer" in p
                   for p in parse_email(raw).problems)
        return
    output = rewritten(raw, footer)
    original, result = parse_email(raw).mime, parse_email(output)

    assert result.problems == ()
    assert attachment_payloads(result.mime) == attachment_payloads(original)
    assert list(closed_parts(result.mime)) == list(closed_parts(original))
    footered = list(eligible_parts(result.mime))
    assert footered
    assert all(decoded_text(part).count(MARK) == 1 for part in footered)
    assert rewritten(output, footer) == output


def stdlib_bytes(message: EmailMessage) -> bytes:
    buffer = io.BytesIO()
    BytesGenerator(buffer, policy=MIME_POLICY).flatten(message)
    return buffer.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=1500), mutated_messages(), trees.map(raw_message)))
def test_crlf_generator_writes_what_the_stdlib_generator_writes(raw: bytes) -> None:
    """`to_bytes` writes CRLF bodies in one piece; the bytes must not change, for bodies
    with any mix of line endings, before and after the footer."""
    content = parse_email(raw)
    if content.problems:  # blocked: never written
        return
    assert to_bytes(content.mime) == stdlib_bytes(content.mime)
    footered = add_footer(content.mime, FOOTERS[0])
    assert to_bytes(footered) == stdlib_bytes(footered)
