"""Repairs of sloppiness whose meaning is not in doubt, made before anything reads the message.

Every real MTA relays these, so refusing them would only stop legitimate mail; each repair
is named in the notes it returns, which the decision keeps as evidence. The exact list:

- A Content-Transfer-Encoding spelled loosely (any case, surrounding blanks or quotes, a
  trailing ";", "-", "_" or a space between words, a plural "bits": `8bits`, `7-bit`,
  `quoted printable`, `Quoted_Printable;`, `base-64`) is written as its RFC 2045 name.
- Raw UTF-8 in a top-level header (RFC 6532), with or without SMTPUTF8, is re-encoded so
  that an upstream without SMTPUTF8 can carry it: unstructured text (Subject, X-…) and
  display names become RFC 2047 encoded words, domains become IDNA A-labels, comments in
  structured fields (a Date's time-zone name) become encoded words. What RFC 2047 cannot
  carry (a non-ASCII local part or message id) stays UTF-8 and needs SMTPUTF8 upstream.

Raw 8-bit header bytes that are not UTF-8 are not repaired: which charset they are in is a
guess, and `parse_email` refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.errors import NonASCIILocalPartDefect
from email.header import Header
from email.headerregistry import Address, AddressHeader, UnstructuredHeader
from email.message import Message

from gateway.rewrite.mime import SEALED_TYPES, child_section

_CANONICAL_ENCODINGS = {
    "7bit": "7bit", "8bit": "8bit", "binary": "binary",
    "quotedprintable": "quoted-printable", "base64": "base64",
}
_ENCODING_NOISE = re.compile(r"[\s\"';_-]")
# Raw 8-bit header bytes, as the parser stores them (surrogate escapes).
ESCAPED_8BIT = re.compile("[\udc80-\udcff]")
# A quoted string (left as it is: RFC 2047 §5 forbids encoded words in one), or an RFC 5322
# comment without nested parentheses or quoted pairs (group 1); nested ones are left.
_QUOTED_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\(([^()\\]*)\)')
# Message ids may not hold encoded words (RFC 2047 §5): UTF-8 in one needs SMTPUTF8.
_MESSAGE_ID_HEADERS = frozenset(
    {"message-id", "in-reply-to", "references", "content-id", "resent-message-id"}
)
LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FOLD_AT = 76


def repair_transfer_encodings(message: Message) -> list[str]:
    """Repair in place; returns one note per repair."""
    return [
        note for part, section in _open_parts(message) for note in _repair_encoding(part, section)
    ]


def canonical_transfer_encoding(written: str) -> str | None:
    """The RFC 2045 name `written` unambiguously means, or None for anything else."""
    key = _ENCODING_NOISE.sub("", written.lower())
    if key in ("7bits", "8bits"):
        key = key[:-1]
    return _CANONICAL_ENCODINGS.get(key)


def _open_parts(part: Message, section: str = "") -> Iterator[tuple[Message, str]]:
    """Signed or encrypted entities and attached messages are never touched."""
    yield part, section
    if (part.get_content_maintype() == "multipart" and part.is_multipart()
            and part.get_content_type() not in SEALED_TYPES):
        for index, child in enumerate(part.get_payload(), 1):
            yield from _open_parts(child, child_section(section, index))


def _repair_encoding(part: Message, section: str) -> list[str]:
    written = _raw_header(part, "Content-Transfer-Encoding")
    if written is None:
        return []
    stripped = written.strip()
    canonical = canonical_transfer_encoding(stripped)
    if canonical is None or canonical == stripped:
        return []
    part.replace_header("Content-Transfer-Encoding", canonical)
    where = f"MIME part {section}" if section else "the message"
    return [f"Content-Transfer-Encoding {stripped!r} of {where} read as {canonical!r}"]


def _raw_header(part: Message, name: str) -> str | None:
    for raw_name, value in part.raw_items():
        if raw_name.lower() == name.lower():
            return value
    return None


def reencode_utf8_headers(message: Message) -> list[str]:
    """Re-encode in place; returns one note per header. Never raises on a message whose
    headers all parse (`parse_email` checks that first)."""
    notes = []
    headers = list(message.raw_items())
    for index, (name, value) in enumerate(headers):
        if not ESCAPED_8BIT.search(value) or not is_utf8(value):
            continue
        text = LINE_BREAK.sub("", unescaped(value)).strip()
        try:
            repaired = _reencoded(message, name, text)
        except Exception:  # the stdlib header parsers fail in many ways on odd input
            repaired = None  # left as written: it then needs SMTPUTF8
        if repaired is None or repaired == text:
            continue
        headers[index] = (name, " " + _escaped(repaired))
        remains = "" if repaired.isascii() else " (the rest needs SMTPUTF8)"
        notes.append(f"header {name!r}: raw UTF-8 re-encoded for 7-bit transport{remains}")
    if notes:
        _rewrite_header_block(message, headers)
    return notes


def _reencoded(message: Message, name: str, text: str) -> str | None:
    """`text` is the header unfolded; unstructured text is re-encoded as the policy read it
    (encoded words in it decoded), so the reader sees exactly what was checked."""
    kind = message.policy.header_factory[name]
    if name.lower() in _MESSAGE_ID_HEADERS:
        return None
    if issubclass(kind, AddressHeader):
        return _ascii_addresses(message, name, text)
    if issubclass(kind, UnstructuredHeader):
        decoded = str(message.policy.header_factory(name, text))
        return _encoded_words(name, " ".join(decoded.split()))
    return _encoded_comments(name, text)


def _ascii_addresses(message: Message, name: str, text: str) -> str | None:
    """Display names as encoded words, domains as A-labels; None when the parser cannot
    say for certain what the addresses are (the header is then left as written)."""
    header = message.policy.header_factory(name, text)
    if any(not isinstance(d, NonASCIILocalPartDefect) for d in header.defects):
        return None
    written = []
    for group in header.groups:
        mailboxes = ", ".join(_ascii_mailbox(name, a) for a in group.addresses)
        written.append(
            f"{_phrase(name, group.display_name)}: {mailboxes};"
            if group.display_name is not None else mailboxes
        )
    return ",\r\n ".join(written)


def _ascii_mailbox(name: str, address: Address) -> str:
    spec = Address(username=address.username, domain=_a_label(address.domain)).addr_spec
    if address.display_name:
        return f"{_phrase(name, address.display_name)} <{spec}>"
    return spec


def _phrase(name: str, text: str) -> str:
    if text.isascii():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(name, text)


def _a_label(domain: str) -> str:
    """IDNA 2003 as Python has it; a domain it cannot convert stays UTF-8 (SMTPUTF8)."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _encoded_comments(name: str, text: str) -> str:
    """RFC 2047 §5 allows encoded words in the comments of structured fields."""
    def encoded(found: re.Match[str]) -> str:
        inside = found.group(1)
        if inside is None or inside.isascii():
            return found.group(0)
        return f"({_encoded_words(name, inside)})"

    return _QUOTED_OR_COMMENT.sub(encoded, text)


def _encoded_words(name: str, text: str) -> str:
    return Header(text, "utf-8", header_name=name, maxlinelen=_FOLD_AT).encode(linesep="\r\n")


def _rewrite_header_block(message: Message, headers: list[tuple[str, str]]) -> None:
    """Header order is kept (a reader or a DKIM verifier may care); the stdlib can only
    replace a raw header by removing every header of its name, so the block is rewritten."""
    for name in {name.lower() for name, _ in headers}:
        del message[name]
    for name, value in headers:
        message.set_raw(name, value)


def is_utf8(escaped: str) -> bool:
    try:
        escaped.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def unescaped(escaped: str) -> str:
    """Raw header bytes read as UTF-8; bytes that are not UTF-8 become U+FFFD."""
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _escaped(text: str) -> str:
    """How the parser stores raw bytes: UTF-8 left in a header stays bytes on the wire."""
    return text.encode("utf-8").decode("ascii", "surrogateescape")
