"""Adding the compliance footer to a parsed email without disturbing anything else.

The rules are COMPLIANCE.md's "Rewriting email safely": every text/plain and text/html part
that is not an attachment gets the footer; signed or encrypted entities and attached messages
are never opened; a message with no such part gets a footer part. A touched part changes only
its body, its charset parameter and, where 7bit can no longer hold it, its transfer encoding,
so that signatures, Content-IDs and attachments come out byte for byte as they went in.
"""

from __future__ import annotations

import base64
import codecs
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import errors, quoprimime
from email.message import EmailMessage, MIMEPart
from email.policy import Policy

from gateway.rewrite.html_footer import FOOTER_MARK, footed_html, visibility_problems
from gateway.rewrite.placed_footer import without_placed_footer

SEALED_TYPES = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
    }
)
FOOTER_TYPES = frozenset({"text/plain", "text/html"})
# Alternatives a client may show instead of the HTML (Gmail renders AMP, Apple Watch
# watch-html) that the footer cannot safely be written into: AMP forbids the footer's inline
# styles, and enriched/richtext have commands that hide their content (`<param>`,
# `<comment>`) which the agent could leave open. They go when a footer comes, and say so.
DROPPED_ALTERNATIVE_TYPES = frozenset(
    {"text/x-amp-html", "text/watch-html", "text/enriched", "text/richtext"}
)
_STRUCTURAL_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition")
# What get_content_type() gives for a header a client reads the same way (RFC 2045 tokens);
# a comment or stray text in it would let the gateway and a client disagree on the type.
_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
# A Content-Type parameter's name; RFC 2231 sections (boundary*0, boundary*1) are one name.
_PARAMETER_NAME = re.compile(r";\s*([!#$%&'+.^`|~\w-]+?)(\*\d+)?\*?\s*=")

_TRANSFER_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})
_MAX_7BIT_LINE = 998
PROVIDER_UNSUBSCRIBE_PLACEHOLDER = re.compile(r"\{\{\{?\s*pm:unsubscribe\s*\}?\}\}")
_HEADER_BLOCK_DEFECTS: dict[type[errors.MessageDefect], str] = {
    errors.MissingHeaderBodySeparatorDefect: "has a line that is not a header field",
    errors.FirstHeaderLineIsContinuationDefect: "starts with a continuation line",
    errors.MisplacedEnvelopeHeaderDefect: "contains a 'From ' envelope line",
    errors.InvalidHeaderDefect: "has a line with no header name",
}


@dataclass(frozen=True)
class Footer:
    """`already_present` tells whether a text body already shows this recipient's whole
    footer; `owns_link` whether an unsubscribe URL is this gateway's for this recipient (an
    HTML body's footer the gateway placed is recognised by it). `unsubscribe_url` replaces a
    provider's own unsubscribe placeholder in the body (Postmark's `{{{ pm:unsubscribe }}}`),
    whose link would bypass the gateway's list."""

    text: str
    html: str
    already_present: Callable[[str], bool]
    unsubscribe_url: str = ""
    owns_link: Callable[[str], bool] = lambda url: False


class RewriteError(Exception):
    """The message cannot be given a footer safely; `check_rewrite` names the same cause."""


@dataclass(frozen=True)
class _DecodedBody:
    text: str
    charset: str
    transfer_encoding: str


def add_footer(message: EmailMessage, footer: Footer) -> EmailMessage:
    """Return `message` with the footer in every eligible part, or with a footer part added;
    the alternatives `check_rewrite` lists as `dropped` are removed first.

    Mutates `message`. Raises `RewriteError` only for messages `check_rewrite` rejects.
    """
    _drop_unfootable_alternatives(message)
    targets = _footer_targets(message)
    for part, section in targets:
        _add_footer_to_part(part, section, footer)
    if not targets:
        _attach_footer_part(message, footer)
    _declare_mime(message)
    return message


@dataclass(frozen=True)
class RewriteCheck:
    """What `add_footer` would meet in a message: `problems`, every reason it would refuse
    it (MESSAGE_MALFORMED), and `hidden`, every reason a footer it adds to an HTML body
    could not be seen (FOOTER_NOT_VISIBLE), each naming its part; `dropped` names the
    alternatives it would remove because no footer can be written into them."""

    problems: list[str]
    hidden: list[str]
    dropped: list[str]


def footer_target_count(message: EmailMessage) -> int:
    """How many parts `add_footer` would write the footer into, counted without decoding
    any (`parse_email` caps it before `check_rewrite` decodes them: every footed part adds
    a footer's bytes to every copy). Assumes every header can be parsed, as check_rewrite."""
    return sum(1 for part, _section, shown, kind in _visited_parts(message)
               if _is_footer_target(part, kind, shown))


def check_rewrite(message: EmailMessage) -> RewriteCheck:
    """One walk over the parts, decoding each footer target once, without changing anything.

    Assumes every header in the message can be parsed; `parse_email` checks that first.
    """
    problems: list[str] = []
    html_bodies: list[tuple[str, str]] = []
    dropped: list[str] = []
    for part, section, shown, kind in _visited_parts(message):
        problems += _structure_problems(part, section, shown, kind)
        if _is_dropped(kind, shown):
            dropped.append(f"{_describe_part(part, section)} removed: a footer cannot be "
                           "written into it")
            continue
        if not _is_footer_target(part, kind, shown):
            continue
        try:
            body = _decoded_body(part, section)
        except RewriteError as error:
            problems.append(str(error))
            continue
        if kind == "text/html":
            html_bodies.append((_describe_part(part, section), body.text))
    if problems:
        return RewriteCheck(problems, [], [])
    hidden = [f"{where}: {problem}" for where, text in html_bodies
              for problem in visibility_problems(text)]
    return RewriteCheck([], hidden, dropped)


def child_section(section: str, index: int) -> str:
    """IMAP-style part number ("2.1") of the `index`-th child (from 1) of part `section`."""
    return f"{section}.{index}" if section else str(index)


def _describe_part(part: MIMEPart, section: str) -> str:
    """How problems name a part: "text/plain part 2.1", or "top-level text/html"."""
    if section:
        return f"{part.get_content_type()} part {section}"
    return f"top-level {part.get_content_type()}"


def _visited_parts(
    part: MIMEPart, section: str = "", shown: bool = False
) -> Iterator[tuple[MIMEPart, str, bool, str]]:
    """The parts add_footer looks at: it never opens sealed entities or attached messages.
    `shown`: a part a client may display as the body because it is, or is inside, an
    alternative of a multipart/alternative (a client renders the root of a related part it
    picks), whatever its Content-Disposition (an "attachment" text/html included). The
    part's content type is read once and given along: every step of the walk needs it."""
    kind = part.get_content_type()
    yield part, section, shown, kind
    if kind.startswith("multipart/") and kind not in SEALED_TYPES:
        for index, child in enumerate(part.iter_parts(), 1):
            yield from _visited_parts(
                child, child_section(section, index), _child_shown(kind, shown, child)
            )


def _child_shown(parent_kind: str, parent_shown: bool, child: MIMEPart) -> bool:
    if parent_kind == "multipart/alternative":
        return True
    return parent_shown and not child.is_attachment()


def _is_dropped(kind: str, shown: bool) -> bool:
    return shown and kind in DROPPED_ALTERNATIVE_TYPES


def _drop_unfootable_alternatives(message: EmailMessage) -> None:
    """Every shown DROPPED_ALTERNATIVE_TYPES part goes; a client then shows a part that
    carries the footer (`check_rewrite` refused messages where none would be left)."""
    for part, _section, shown, kind in list(_visited_parts(message)):
        if not kind.startswith("multipart/") or not part.is_multipart():
            continue
        children = part.get_payload()
        kept = [c for c in children
                if not _is_dropped(c.get_content_type(), _child_shown(kind, shown, c))]
        if len(kept) != len(children):
            part.set_payload(kept)


def _is_footer_target(part: MIMEPart, kind: str, shown: bool) -> bool:
    return kind in FOOTER_TYPES and (shown or not part.is_attachment())


def _footer_targets(message: EmailMessage) -> list[tuple[MIMEPart, str]]:
    targets = []
    for part, section, shown, kind in _visited_parts(message):
        problems = _structure_problems(part, section, shown, kind)
        if problems:
            raise RewriteError(problems[0])
        if _is_footer_target(part, kind, shown):
            targets.append((part, section))
    return targets


def _structure_problems(part: MIMEPart, section: str, shown: bool, kind: str) -> list[str]:
    """Damage that would hide text parts from the walk or misplace a part's headers, and
    parts a client may show that cannot carry the footer."""
    where = f"MIME part {section}" if section else "the message"
    problems = [
        f"header block of {where} {_HEADER_BLOCK_DEFECTS[type(defect)]}"
        for defect in part.defects
        if type(defect) in _HEADER_BLOCK_DEFECTS
    ]
    problems += _ambiguous_structure(part, where)
    if not _CONTENT_TYPE.fullmatch(kind):
        problems.append(f"Content-Type of {where} is not a plain type/subtype ({kind!r})")
        return problems
    if kind.startswith("multipart/") and not part.is_multipart():
        problems.append(_unsplit_multipart_problem(part, section))
    if kind.startswith("multipart/") and part.is_multipart():
        problems += _emptied_by_drops(part, section, shown, kind)
        if kind == "multipart/alternative":
            problems += _footerless_alternatives(part, section)
    return problems


def _emptied_by_drops(part: MIMEPart, section: str, shown: bool, kind: str) -> list[str]:
    children = list(part.iter_parts())
    if children and all(_is_dropped(c.get_content_type(), _child_shown(kind, shown, c))
                        for c in children):
        return [f"{_describe_part(part, section)} would be left empty once its parts that "
                "cannot carry the footer are removed"]
    return []


def _ambiguous_structure(part: MIMEPart, where: str) -> list[str]:
    """A header or parameter given twice: the gateway reads one value, a reader's client may
    read the other, and the footer would land where the client does not look (a comment,
    undecodable base64, the epilogue)."""
    problems = []
    names = [name.lower() for name, _ in part.raw_items()]
    for header in _STRUCTURAL_HEADERS:
        if names.count(header) > 1:
            problems.append(f"{where} has {names.count(header)} {header} headers")
    content_type = next((str(v) for n, v in part.raw_items() if n.lower() == "content-type"), "")
    given = [
        m.group(1).lower()
        for m in _PARAMETER_NAME.finditer(content_type)
        if m.group(2) in (None, "*0")  # later RFC 2231 sections continue the same value
    ]
    for parameter in ("boundary", "charset"):
        if given.count(parameter) > 1:
            problems.append(f"{where} gives its {parameter} parameter {given.count(parameter)} "
                            "times")
    return problems


def _footerless_alternatives(part: MIMEPart, section: str) -> list[str]:
    """A reader may be shown any alternative (Gmail shows text/x-amp-html, a client renders
    the root of a related alternative, the content of a signed one), so each one must carry
    the footer, or be one of the kinds dropped when the footer comes."""
    return [
        f"{_describe_part(child, child_section(section, index))} is an alternative "
        "that cannot carry the footer"
        for index, child in enumerate(part.iter_parts(), 1)
        if not _is_dropped(child.get_content_type(), True) and not _carries_footer(child, True)
    ]


def _carries_footer(part: MIMEPart, shown: bool) -> bool:
    """Whether add_footer writes the footer into this part or a part it shows; sealed
    entities and attached messages are never opened, so they carry none."""
    kind = part.get_content_type()
    if not kind.startswith("multipart/"):
        return _is_footer_target(part, kind, shown)
    if kind in SEALED_TYPES or not part.is_multipart():
        return False
    return any(
        _carries_footer(child, _child_shown(kind, shown, child)) for child in part.iter_parts()
    )


def _unsplit_multipart_problem(part: MIMEPart, section: str) -> str:
    """The parser keeps a multipart whose boundary it cannot find as one opaque string."""
    label = _describe_part(part, section)
    boundary = part.get_boundary()
    if boundary is None:
        return f"{label} has no boundary parameter"
    return f"boundary {boundary!r} of {label} never appears in its body"


def _decoded_body(part: MIMEPart, section: str) -> _DecodedBody:
    """The part's text, after checking everything that rewriting it depends on."""
    label = _describe_part(part, section)
    transfer_encoding = str(part.get("Content-Transfer-Encoding", "")).lower()
    if transfer_encoding not in _TRANSFER_ENCODINGS:
        raise RewriteError(
            f"unsupported Content-Transfer-Encoding {transfer_encoding!r} in {label}"
        )
    charset = part.get_content_charset("us-ascii")
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):
        raise RewriteError(f"unknown charset {charset!r} in {label}") from None
    data = part.get_payload(decode=True)
    try:
        text = data.decode(charset, "surrogateescape")
        text.encode("utf-8", "surrogateescape")  # the fallback when the footer does not fit
    except (LookupError, UnicodeError):
        raise RewriteError(f"{label} cannot be decoded as {charset!r}") from None
    if not _charset_can_switch(part):
        raise RewriteError(f"Content-Type header of {label} cannot take a new charset")
    return _DecodedBody(text, charset, transfer_encoding)


def _charset_can_switch(part: MIMEPart) -> bool:
    """Try the switch to UTF-8 on a copy of the Content-Type header.

    set_param rebuilds the whole header from its parsed parameters; raw 8-bit bytes or stray
    control characters in it make that, or writing the result, fail.
    """
    scratch = MIMEPart(policy=part.policy)
    for name, value in part.raw_items():
        if name.lower() == "content-type":
            scratch.set_raw(name, value)
    try:
        _set_charset(scratch, "utf-8")
        for name, value in scratch.raw_items():
            scratch.policy.fold_binary(name, value)
    except Exception:  # the stdlib header code fails in many ways on malformed input
        return False
    return True


def footed_body(text: str, footer: Footer, *, subtype: str, flowed: bool = False) -> str:
    """One body of type text/`subtype` (plain or html) with the footer in it: the rule every
    ingress shares, whether the body came from a MIME part or from an API field.

    The provider's own unsubscribe placeholder becomes the gateway's link. A text body that
    already shows this recipient's whole footer is left as it is; in HTML, where a copy
    could sit in hidden markup, only the footer the gateway itself placed last in the body
    counts, and it is placed afresh (a re-sent message keeps one footer).
    """
    is_html = subtype == "html"
    text = _replace_placeholders(text, footer.unsubscribe_url, is_html)
    newline = "\r\n" if "\r\n" in text else "\n"
    if is_html:
        if FOOTER_MARK in text:
            text = without_placed_footer(text, footer.owns_link)
        return footed_html(text, footer.html.replace("\n", newline), newline)
    if footer.already_present(text):
        return text
    lines = footer.text.split("\n")
    if flowed:
        lines = _fixed_flowed_lines(lines)
    return _append_text(text, newline.join(lines), newline)


def _add_footer_to_part(part: MIMEPart, section: str, footer: Footer) -> None:
    body = _decoded_body(part, section)
    text = footed_body(
        body.text,
        footer,
        subtype=part.get_content_subtype(),
        flowed=str(part.get_param("format", "")).lower() == "flowed",
    )
    if text == body.text:
        return
    data, charset = _encode(text, body.charset)
    if charset != body.charset:
        _set_charset(part, charset)
    _write_body(part, data, body.transfer_encoding)


def _replace_placeholders(text: str, url: str, is_html: bool) -> str:
    if not url:
        return text
    return PROVIDER_UNSUBSCRIBE_PLACEHOLDER.sub(
        html.escape(url, quote=True) if is_html else url, text
    )


def _append_text(text: str, footer: str, newline: str) -> str:
    """The footer as its own paragraph after the body, ending with a line break."""
    if not text.endswith("\n"):
        text += newline
    return text + newline + footer + newline


def _fixed_flowed_lines(lines: list[str]) -> list[str]:
    """Footer lines as RFC 3676 fixed lines: no trailing space (it would mean "joins the next
    line"), and space-stuffed where a leading space, ">" or "From " would be misread."""
    stuffed = []
    for line in lines:
        line = line.rstrip(" ")
        if line.startswith((" ", ">", "From ")):
            line = " " + line
        stuffed.append(line)
    return stuffed


def _encode(text: str, charset: str) -> tuple[bytes, str]:
    """Keep the part's charset if it can carry the footer; otherwise the part becomes UTF-8.

    surrogateescape writes bytes that were invalid in the original charset back unchanged.
    """
    try:
        return text.encode(charset, "surrogateescape"), charset
    except UnicodeError:
        return text.encode("utf-8", "surrogateescape"), "utf-8"


def _set_charset(part: MIMEPart, charset: str) -> None:
    """Change only the charset parameter, in place, keeping format=flowed and the rest."""
    if "Content-Type" in part:
        part.set_param("charset", charset, replace=True)
    else:
        part["Content-Type"] = f'text/plain; charset="{charset}"'


def _write_body(part: MIMEPart, data: bytes, transfer_encoding: str) -> None:
    """Write back in the part's own transfer encoding; 7bit that no longer fits becomes QP.

    set_payload with a str stores it as is, unlike set_content, which replaces every
    Content-* header of the part.
    """
    if transfer_encoding == "base64":
        part.set_payload(base64.encodebytes(data).decode("ascii"))
    elif transfer_encoding == "quoted-printable":
        part.set_payload(_quoted_printable(data))
    elif transfer_encoding in ("8bit", "binary"):
        part.set_payload(data.decode("ascii", "surrogateescape"))
    elif _fits_7bit(data):
        part.set_payload(data.decode("ascii"))
    else:
        _set_transfer_encoding(part, "quoted-printable")
        part.set_payload(_quoted_printable(data))


def _fits_7bit(data: bytes) -> bool:
    return data.isascii() and all(len(line) <= _MAX_7BIT_LINE for line in data.splitlines())


def _quoted_printable(data: bytes) -> str:
    """QP lines of at most 76 characters; latin-1 maps each byte to one code point for the
    stdlib encoder, which works on str."""
    return quoprimime.body_encode(data.decode("latin-1"))


def _set_transfer_encoding(part: MIMEPart, transfer_encoding: str) -> None:
    if "Content-Transfer-Encoding" in part:
        part.replace_header("Content-Transfer-Encoding", transfer_encoding)
    else:
        part["Content-Transfer-Encoding"] = transfer_encoding


def _attach_footer_part(message: EmailMessage, footer: Footer) -> None:
    """Append a footer part to a multipart/mixed root; wrap any other root in one first."""
    if message.get_content_type() != "multipart/mixed":
        _wrap_in_mixed(message)
    message.attach(_footer_part(footer, message.policy))


def _wrap_in_mixed(message: EmailMessage) -> None:
    """Move the root's Content-* headers and body, untouched, into the first part of a new
    multipart/mixed; every other header (From, Subject, Message-ID, MIME-Version…) stays.

    make_mixed moves the raw headers, so the entity keeps its exact bytes; the preamble and
    epilogue belong to the entity too, but make_mixed leaves them on the root.
    """
    preamble, epilogue = message.preamble, message.epilogue
    message.make_mixed()
    entity = message.get_payload(0)
    entity.preamble, entity.epilogue = preamble, epilogue
    message.preamble = message.epilogue = None


def _footer_part(footer: Footer, policy: Policy) -> MIMEPart:
    alternative = MIMEPart(policy=policy)
    alternative["Content-Type"] = "multipart/alternative"
    alternative.attach(_utf8_text_part("plain", footer.text + "\n", policy))
    alternative.attach(_utf8_text_part("html", footed_html("", footer.html), policy))
    return alternative


def _utf8_text_part(subtype: str, text: str, policy: Policy) -> MIMEPart:
    part = MIMEPart(policy=policy)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(_quoted_printable(text.encode("utf-8")))
    return part


def _declare_mime(message: EmailMessage) -> None:
    """A message that (now) has MIME headers must say so, or readers may ignore them."""
    has_mime_headers = "Content-Type" in message or "Content-Transfer-Encoding" in message
    if has_mime_headers and "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"
