"""Parsing an agent's email into `EmailContent`, and writing a message back out as bytes.

The gateway forwards what the agent wrote, changed only where compliance requires it, so
serialization must not reformat anything it did not touch: headers read from the input are
written back exactly as received (only line endings become CRLF) and 8-bit bodies stay 8-bit.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import re
import unicodedata
from collections.abc import Iterator
from email.errors import HeaderParseError, InvalidHeaderDefect
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy, compat32
from typing import Any

from gateway.lookalikes import fold_char, shown
from gateway.mail.repair import (
    ESCAPED_8BIT,
    LINE_BREAK,
    is_utf8,
    reencode_utf8_headers,
    repair_transfer_encodings,
    unescaped,
)
from gateway.model import EmailContent, EmailFields, ShownAddress
from gateway.rewrite.html_footer import visibility_problems
from gateway.rewrite.mime import check_rewrite, child_section, footer_target_count
from gateway.runtime.input_limits import line_break_in
from gateway.speedups.crlf_lines import SpeedupBytesGenerator
from gateway.speedups.header_classes import SpeedupHeaderRegistry

MAX_NESTING_DEPTH = 50
# Parts one message may have the footer written into (smtp.max_footed_parts): each adds a
# footer to every copy, so 100,000 tiny text parts would turn 3 MB into 47 MB.
MAX_FOOTED_PARTS = 100



REREAD_HEADERS = frozenset({
    "content-type", "content-transfer-encoding", "content-disposition", "mime-version",
    "from", "sender", "reply-to",
})


def _parsed_header(factory: Any, name: str, value: str) -> Any:
    """Parsing a header with the modern parser is slow, and the rewriter reads the MIME
    structure headers (Content-Type above all) many times, as the policy reads From, Sender
    and Reply-To (one value per sending identity): those are cached and shared (header
    objects are immutable). Per-message headers are not, so the cache stays small and the
    garbage collector does not have to walk a large heap of parse trees."""
    if name.lower() in REREAD_HEADERS:
        return _cached_header(factory, name, value)
    return factory(name, value)


@functools.lru_cache(maxsize=1024)
def _cached_header(factory: Any, name: str, value: str) -> Any:
    return factory(name, value)


@functools.lru_cache(maxsize=1024)
def _fetched_header(factory: Any, name: str, source: str) -> Any:
    """Keyed by the header as it was read, so that a repeated read (Content-Type is read
    dozens of times per message) skips the unfolding as well as the parse."""
    return factory(name, _unfolded(source))


def _unfolded(source: str) -> str:
    return LINE_BREAK.sub("", source).strip(" \t")


class VerbatimHeaderPolicy(EmailPolicy):
    """`EmailPolicy` that writes headers read from the source back byte for byte.

    The stdlib policy drops the whitespace after the colon and writes exactly one space back,
    and splits on more line breaks than CR and LF; either changes the bytes of a signed entity
    and of headers a DKIM signature may cover. Parsed values (`msg["Subject"]`) are unfolded and
    stripped of surrounding blanks, so that a trailing space does not hide a transfer encoding.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> VerbatimHeaderPolicy:
        """A policy is immutable, so a copied message shares it: a copy with a policy of its
        own would have a header factory of its own too, and miss every cached header."""
        return self

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = sourcelines[0].split(":", 1)
        return name, (value + "".join(sourcelines[1:])).rstrip("\r\n")

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if hasattr(value, "name") or not isinstance(value, str) or len(value.splitlines()) > 1:
            return super().header_store_parse(name, value)
        return name, _parsed_header(self.header_factory, name, value)

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if not isinstance(value, str):
            return super().header_fetch_parse(name, value)
        if name.lower() in REREAD_HEADERS:
            return _fetched_header(self.header_factory, name, value)
        return self.header_factory(name, _unfolded(value))

    def fold(self, name: str, value: Any) -> str:
        if hasattr(value, "name"):
            return super().fold(name, value)
        return name + ":" + self.linesep.join(LINE_BREAK.split(value)) + self.linesep

    def fold_binary(self, name: str, value: Any) -> bytes:
        if hasattr(value, "name"):
            return super().fold_binary(name, value)
        return self.fold(name, value).encode("utf-8", "surrogateescape")


MIME_POLICY = VerbatimHeaderPolicy(
    linesep="\r\n", refold_source="none", header_factory=SpeedupHeaderRegistry()
)


def parse_email(raw: bytes, *, max_footed_parts: int = MAX_FOOTED_PARTS) -> EmailContent:
    """Extract what the policy needs, and every reason the message cannot be checked or rewritten.

    Never raises: a message the gateway cannot understand is blocked with its problems named.
    What is unambiguous is repaired (`gateway.mail.repair`) and the repairs are listed. A
    message whose footer would go into more than `max_footed_parts` parts is refused before
    any part is decoded.
    """
    try:
        message = BytesParser(policy=MIME_POLICY).parsebytes(raw)
    except RecursionError:
        return _unparsed(raw, [f"MIME nesting deeper than {MAX_NESTING_DEPTH} levels"])
    except Exception as error:  # the modern parser raises on some malformed Content-Type headers
        return _unparsed(raw, _parser_failure(raw, error))
    problems, broken_headers = _tree_problems(message)
    footer_problems: list[str] = []
    repairs: list[str] = []
    if not problems:
        footed = footer_target_count(message)
        if footed > max_footed_parts:
            problems.append(
                f"the footer would go into {footed} parts; at most {max_footed_parts} "
                "(smtp.max_footed_parts)"
            )
    if not problems:
        repairs = repair_transfer_encodings(message)
        check = check_rewrite(message)
        problems += check.problems
        footer_problems = check.hidden
        repairs += check.dropped
    problems += _eight_bit_header_problems(message)
    from_addresses, from_problems = (), []
    if "from" not in broken_headers:
        from_addresses, from_problems = _from_addresses(message)
    other_identities = () if broken_headers else _other_identities(message)
    if "reply-to" not in broken_headers:
        problems += _reply_to_problems(message)
    subject, subject_problems = "", []
    if "subject" not in broken_headers:
        subject, subject_problems = _subject(message)
    problems += from_problems + subject_problems + _repeated_header_problems(message)
    message_id = _raw_value(message, "Message-ID")
    if not problems:  # the policy has read the headers as written; the upstream gets ASCII
        repairs += reencode_utf8_headers(message)
    return EmailContent(
        from_addresses=from_addresses,
        subject=subject,
        is_reply=_is_reply(message),
        message_id=message_id,
        size=len(raw),
        problems=tuple(problems),
        other_identities=other_identities,
        footer_problems=tuple(footer_problems),
        repairs=tuple(repairs),
        received_head=_signed_head(raw),
        mime=message,
    )


_SIGNATURE_FIELD = re.compile(rb"(?im)^dkim-signature[ \t]*:")


def _signed_head(raw: bytes) -> bytes:
    """The header block as received, when it carries a DKIM signature (else empty)."""
    head = _header_block(raw)
    return head if _SIGNATURE_FIELD.search(head) else b""


# The end of the header block: a line break (CRLF counts as one) followed by another.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")


def _header_block(raw: bytes) -> bytes:
    """The top-level header block; it ends where the parser's does, at the first empty line
    whatever its line ending."""
    return _BLANK_LINE.split(raw, maxsplit=1)[0]


def mailbox_subject(raw: bytes) -> str:
    """The subject of a message to the unsubscribe mailbox, read from its header block
    alone: whatever the body holds is never parsed (anyone may write to the mailbox)."""
    try:
        headers = BytesParser(policy=MIME_POLICY).parsebytes(
            _header_block(raw) + b"\r\n\r\n", headersonly=True
        )
        return _subject(headers)[0]
    except Exception:  # an unreadable Subject holds no token
        return ""


def fields_content(fields: EmailFields, size: int) -> EmailContent:
    """What the policy needs from an email given as fields, read by the same code as a parsed
    message's headers (the bodies need no checking: they are text already)."""
    from_addresses, problems, other_identities = sender_identities(
        fields.sender, fields.reply_to
    )
    subject, subject_problems = fields.subject, []
    if "=?" in subject:  # encoded words: the reader's client would decode them, so does policy
        headers = EmailMessage(policy=MIME_POLICY)
        headers.set_raw("Subject", subject)
        subject, subject_problems = _subject(headers)
    return EmailContent(
        from_addresses=from_addresses,
        subject=subject,
        is_reply=any(
            name.lower() in REPLY_HEADERS and value.strip() for name, value in fields.headers
        ),
        message_id=fields.message_id,
        size=size,
        problems=(*problems, *subject_problems),
        other_identities=other_identities,
        footer_problems=tuple(
            f"HtmlBody: {problem}" for problem in visibility_problems(fields.html_body)
        ) if fields.html_body else (),
        fields=fields,
    )


@functools.lru_cache(maxsize=1024)
def sender_identities(
    from_value: str, reply_to: str = ""
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[ShownAddress, ...]]:
    """From's addresses, the problems of From and Reply-To, and the other identities they
    show, for an email given as fields (Postmark's From and ReplyTo): read as the headers
    of a parsed message are. One value per sending identity, so cached."""
    headers = EmailMessage(policy=MIME_POLICY)
    if from_value:
        headers.set_raw("From", from_value)
    if reply_to:
        headers.set_raw("Reply-To", reply_to)
    unreadable = list(_unreadable_headers(headers))
    if unreadable:
        return (), tuple(f"{name} cannot be parsed" for name in unreadable), ()
    addresses, problems = _from_addresses(headers)
    problems += _reply_to_problems(headers)
    return addresses, tuple(problems), _other_identities(headers)


def to_bytes(message: EmailMessage) -> bytes:
    """The message as sent on the wire: CRLF line endings, 8-bit content kept as it is."""
    buffer = io.BytesIO()
    SpeedupBytesGenerator(buffer, policy=MIME_POLICY).flatten(message)
    return buffer.getvalue()


def _unparsed(raw: bytes, problems: list[str]) -> EmailContent:
    return EmailContent((), "", False, "", len(raw), tuple(problems))


def _parser_failure(raw: bytes, error: Exception) -> list[str]:
    """Name the header that broke the modern parser, found with the legacy one.

    The legacy parser reads Content-Type as plain text, so it gets through the same input.
    """
    try:
        legacy = BytesParser(policy=compat32).parsebytes(raw)
    except Exception:  # nothing left to learn from; report the original failure
        legacy = None
    problems = _tree_problems(legacy)[0] if legacy is not None else []
    return problems or [f"message cannot be parsed ({error!r})"]


def _tree_problems(message: Message) -> tuple[list[str], set[str]]:
    """Headers that raise when read, anywhere in the tree, and nesting beyond the limit.

    Also returns the lower-cased names of the top-level headers that raise, so that extracting
    From and Subject does not trip over them again. Walks iteratively: the depth is not known
    to be safe for recursion until this walk has measured it.
    """
    problems: list[str] = []
    broken_top_level: set[str] = set()
    too_deep = False
    for part, section, depth in _parts_with_depth(message):
        too_deep = too_deep or depth > MAX_NESTING_DEPTH
        where = f" of MIME part {section}" if section else ""
        for name in _unreadable_headers(part):
            problems.append(f"header {name!r}{where} cannot be parsed")
            if not section:
                broken_top_level.add(name.lower())
        for name, separator in _line_separators(part):
            problems.append(
                f"header {name!r}{where} contains a line break ({separator}) other than "
                "CRLF, where some readers would start a new header"
            )
    if too_deep:
        problems.append(f"MIME nesting deeper than {MAX_NESTING_DEPTH} levels")
    return problems, broken_top_level


def _parts_with_depth(message: Message) -> Iterator[tuple[Message, str, int]]:
    stack: list[tuple[Message, str, int]] = [(message, "", 0)]
    while stack:
        part, section, depth = stack.pop()
        yield part, section, depth
        if part.is_multipart():
            children = list(enumerate(part.get_payload(), 1))
            stack.extend(
                (child, child_section(section, index), depth + 1)
                for index, child in reversed(children)
            )


def _line_separators(part: Message) -> Iterator[tuple[str, str]]:
    """Headers holding VT, FF, FS, GS, RS, NEL, U+2028 or U+2029 (raw or as UTF-8): a reader
    splitting lines as Python's str.splitlines() does would see the rest as a header of
    its own. Only CR and LF (the folds) end header lines here."""
    for name, value in part.raw_items():
        text = unescaped(value) if ESCAPED_8BIT.search(value) else value
        separator = line_break_in(text.replace("\r", "").replace("\n", ""))
        if separator:
            yield name, separator


def _unreadable_headers(part: Message) -> Iterator[str]:
    for name, value in part.raw_items():
        try:
            MIME_POLICY.header_fetch_parse(name, value)
        except Exception:  # bugs in the stdlib header parser surface as arbitrary errors
            yield name


def _eight_bit_header_problems(message: Message) -> list[str]:
    """Raw 8-bit bytes in the top-level header are read as UTF-8 (RFC 6532), with or without
    SMTPUTF8; in any other charset their meaning is a guess. (Inside the body, MIME part
    headers travel as 8BITMIME content.)"""
    return [
        f"header {name!r} contains 8-bit bytes that are not valid UTF-8"
        for name, value in message.raw_items()
        if ESCAPED_8BIT.search(value) and not is_utf8(value)
    ]


# Fields RFC 5322 allows once that decide what a reader sees as subject or sender: given
# twice, the gateway checks one and the reader's client may show the other.
SINGLE_HEADERS = ("subject", "sender", "reply-to")


def _repeated_header_problems(message: Message) -> list[str]:
    names = [name.lower() for name, _ in message.raw_items()]
    return [
        f"more than one {name.title()} header" for name in SINGLE_HEADERS if names.count(name) > 1
    ]


def _from_addresses(message: Message) -> tuple[tuple[str, ...], list[str]]:
    headers = message.get_all("From", [])
    if not headers:
        return (), ["missing From header"]
    if len(headers) > 1:
        return (), ["more than one From header"]
    header = headers[0]
    if not header.addresses or _has_invalid_syntax(header):
        written = _raw_value(message, "From")
        return (), [f"From header is not a valid address list: {written!r}"]
    incomplete = [a.addr_spec for a in header.addresses if not (a.username and a.domain)]
    if incomplete:
        return (), [f"From address {incomplete[0]!r} has an empty local part or domain"]
    return tuple(_normalized_addr_spec(a) for a in header.addresses), []


ADDRESS_IN_TEXT = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_COMMENT_TEXT = re.compile(r"\(([^()]*)\)")
# Headers whose addresses a reader takes for the sender's, or for where a reply goes.
IDENTITY_HEADERS = ("From", "Sender", "Reply-To")


def _reply_to_problems(message: Message) -> list[str]:
    """A Reply-To the parser had to guess at cannot be checked against sender_domains."""
    header = message["Reply-To"]
    if header is None:
        return []
    addresses = getattr(header, "addresses", ())
    if not addresses or _has_invalid_syntax(header):
        written = _raw_value(message, "Reply-To")
        return [f"Reply-To header is not a valid address list: {written!r}"]
    incomplete = [a.addr_spec for a in addresses if not (a.username and a.domain)]
    if incomplete:
        return [f"Reply-To address {incomplete[0]!r} has an empty local part or domain"]
    return []


def _other_identities(message: Message) -> tuple[ShownAddress, ...]:
    """Addresses a reader may take for the sender besides From's own: the Sender and Reply-To
    addresses, and addresses written into the display names or comments of From, Sender and
    Reply-To ("ceo@bank.example" <a@b.example>, a@b.example (ceo@bank.example)), found as the
    reader sees them (`_addresses_in_text`)."""
    found: list[ShownAddress] = []
    for name in IDENTITY_HEADERS:
        for header in message.get_all(name, []):
            for address in getattr(header, "addresses", ()):
                if name != "From" and address.domain:
                    found.append(ShownAddress(_normalized_addr_spec(address), name))
                found += [
                    ShownAddress(text, f"{name} display name")
                    for text in _addresses_in_text(unescaped(address.display_name or ""))
                ]
    names = {name.lower(): name for name in IDENTITY_HEADERS}
    for raw_name, value in message.raw_items():
        name = names.get(raw_name.lower())
        if name:
            for comment in _COMMENT_TEXT.findall(unescaped(value)):
                found += [
                    ShownAddress(text, f"{name} comment")
                    for text in _addresses_in_text(_decoded_words(comment))
                ]
    return tuple(dict.fromkeys(found))


def _addresses_in_text(text: str) -> list[str]:
    """The addresses a reader sees in a display name or comment. Found in the text folded as
    the reader sees it (`gateway.lookalikes.fold`: characters drawn as nothing removed,
    full-width, Cyrillic or other look-alike letters, "@" and "." read as the letters and
    signs they look like, U+3002 and the other IDNA full stops as "."), each quoted as
    written, without its invisible characters and with its "@" and "." look-alikes
    written as "@" and "."."""
    if text.isascii() and "@" not in text:
        return []
    pieces = [_letters(char) for char in text]
    starts = list(itertools.accumulate(map(len, pieces), initial=0))
    found = []
    for match in ADDRESS_IN_TEXT.finditer("".join(pieces)):
        first = bisect.bisect_right(starts, match.start()) - 1
        last = bisect.bisect_left(starts, match.end())
        found.append("".join(_as_written(char) for char in text[first:last]))
    return found


@functools.lru_cache(maxsize=65536)
def _letters(char: str) -> str:
    """The character folded, without the combining marks an address's letters may carry
    ("café@"): the address pattern looks at the letters they sit on."""
    return "".join(c for c in fold_char(char) if unicodedata.category(c) != "Mn")


def _as_written(char: str) -> str:
    folded = fold_char(char)
    return folded if folded in ("@", ".") else shown(char)


def _decoded_words(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def _has_invalid_syntax(header: Any) -> bool:
    """Obsolete-but-readable syntax is fine; invalid syntax means the parser had to guess."""
    return any(isinstance(defect, InvalidHeaderDefect) for defect in header.defects)


def _normalized_addr_spec(address: Address) -> str:
    """Domains are case-insensitive; local parts may not be, so they are kept as written.

    Raw UTF-8 (SMTPUTF8) reaches the address parser as escaped bytes, decoded here.
    """
    username, domain = unescaped(address.username), unescaped(address.domain).lower()
    return Address(username=username, domain=domain).addr_spec


def _subject(message: Message) -> tuple[str, list[str]]:
    header = message["Subject"]
    if header is None:
        return "", []
    return str(header), _encoded_word_problems("Subject", _raw_value(message, "Subject"))


def _encoded_word_problems(name: str, value: str) -> list[str]:
    """RFC 2047 words the modern parser would silently turn into replacement characters."""
    try:
        chunks = decode_header(value)
    except HeaderParseError:
        return [f"{name} has an encoded word with invalid base64"]
    problems = []
    for data, charset in chunks:
        if charset is None:
            continue
        codec = charset.partition("*")[0]  # RFC 2231 language suffix
        try:
            data.decode(codec)
        except UnicodeDecodeError:
            problems.append(f"{name} has an encoded word that is not valid {codec!r}")
        except (LookupError, ValueError):  # ValueError: a name with NUL or escaped 8-bit bytes
            problems.append(f"{name} has an encoded word in unknown charset {codec!r}")
    return problems


REPLY_HEADERS = frozenset({"in-reply-to", "references"})


def _is_reply(message: Message) -> bool:
    return any(_raw_value(message, name) for name in REPLY_HEADERS)


def _raw_value(message: Message, name: str) -> str:
    """The first `name` header unfolded as written, without going through the header parser
    (a Message-ID the parser chokes on is still worth recording)."""
    for raw_name, value in message.raw_items():
        if raw_name.lower() == name.lower():
            return unescaped(LINE_BREAK.sub("", value).strip())
    return ""
