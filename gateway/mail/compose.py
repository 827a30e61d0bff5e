"""Writing an email given as fields (`EmailFields`) as MIME, for upstreams that take MIME.

Building an `EmailMessage` and flattening it parses and refolds every header and costs ten
times the rest of a send. Here the common headers (ASCII, short) are written as given, the
rest are folded by the same stdlib policy `EmailMessage` would use, bodies go through the
stdlib's quoted-printable and base64 encoders, and only the assembly is done by hand.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from email import quoprimime
from email.utils import encode_rfc2231
from typing import Any

from gateway.mail.parse import MIME_POLICY
from gateway.model import EmailAttachment, EmailFields
from gateway.runtime.ids import unique_hex

CRLF = "\r\n"
MAX_LINE = 998
SHORT_HEADER = 78
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def compose_mime(
    fields: EmailFields, folded_headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The message as it goes on the wire (CRLF line ends, 7-bit safe bodies).

    `folded_headers` are the gateway's own (List-Unsubscribe), written as given; a header of
    the same name the agent set is left out, so there is one of each.
    """
    replaced = {name.lower() for name, _ in folded_headers}
    headers = [
        ("From", fields.sender),
        ("To", fields.to),
        ("Cc", fields.cc),
        ("Reply-To", fields.reply_to),
        ("Subject", fields.subject),
        ("Date", fields.date),
        ("Message-ID", fields.message_id),
        *((n, v) for n, v in fields.headers if n.lower() not in replaced),
        *postmark_smtp_headers(fields.provider_fields),
    ]
    lines = [header_line(name, value) for name, value in headers if value or name == "Subject"]
    lines += [f"{name}: {value}{CRLF}" for name, value in folded_headers]
    lines.append("MIME-Version: 1.0" + CRLF)
    return ("".join(lines) + _entity(fields)).encode("utf-8")


def postmark_smtp_headers(provider_fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Postmark's delivery options as its SMTP service reads them (X-PM-* headers)."""
    headers = []
    for field, header in (("Tag", "X-PM-Tag"), ("MessageStream", "X-PM-Message-Stream"),
                          ("TrackLinks", "X-PM-TrackLinks")):
        if provider_fields.get(field):
            headers.append((header, str(provider_fields[field])))
    if provider_fields.get("TrackOpens") is not None:
        headers.append(("X-PM-TrackOpens", str(provider_fields["TrackOpens"]).lower()))
    for key, value in (provider_fields.get("Metadata") or {}).items():
        headers.append((f"X-PM-Metadata-{key}", str(value)))
    return headers


def header_line(name: str, value: str) -> str:
    """`Name: value` and its line end; values that are not short ASCII are folded (and
    RFC 2047-encoded) by the stdlib policy, exactly as `EmailMessage` would write them."""
    if value.isascii() and len(name) + 2 + len(value) <= SHORT_HEADER:
        return f"{name}: {value}{CRLF}"
    return MIME_POLICY.fold(name, MIME_POLICY.header_store_parse(name, value)[1])


def _entity(fields: EmailFields) -> str:
    bodies = [
        _text_part(subtype, text)
        for subtype, text in (("plain", fields.text_body), ("html", fields.html_body))
        if text
    ]
    content = bodies[0] if len(bodies) == 1 else _multipart("alternative", bodies)
    if fields.attachments:
        content = _multipart("mixed", [content, *map(_attachment_part, fields.attachments)])
    return content


def _multipart(subtype: str, parts: Iterable[str]) -> str:
    """Parts are headers + CRLF + body; a boundary starting with "=_" cannot occur in
    quoted-printable or base64 text, and is checked against 7bit text."""
    parts = list(parts)
    boundary = "=_" + unique_hex()
    while any(boundary in part for part in parts):
        boundary = "=_" + unique_hex()
    delimiter = f"--{boundary}{CRLF}"
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{CRLF}{CRLF}'
        + "".join(delimiter + part + CRLF for part in parts)
        + f"--{boundary}--{CRLF}"
    )


def _text_part(subtype: str, text: str) -> str:
    """7bit when the text allows it, quoted-printable otherwise; always ends with a line end."""
    lines = LINE_BREAK.split(text)
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the text's own last line end; one is added below either way
    if text.isascii() and max(map(len, lines)) <= MAX_LINE:
        encoding, body = "7bit", CRLF.join(lines) + CRLF
    else:
        encoding = "quoted-printable"
        body = quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), eol=CRLF)
        if not body.endswith(CRLF):
            body += CRLF
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{body}"
    )


def _attachment_part(attachment: EmailAttachment) -> str:
    disposition = "inline" if attachment.content_id else "attachment"
    headers = [
        f"Content-Type: {attachment.content_type}",
        f"Content-Disposition: {disposition}; {_filename_parameter(attachment.name)}",
        "Content-Transfer-Encoding: base64",
    ]
    if attachment.content_id:
        headers.append(f"Content-ID: <{attachment.content_id.removeprefix('cid:')}>")
    body = base64.encodebytes(attachment.content).decode("ascii").replace("\n", CRLF)
    return CRLF.join(headers) + CRLF + CRLF + body


def _filename_parameter(name: str) -> str:
    """RFC 2231 for names that are not plain ASCII; quoted otherwise."""
    if name.isascii() and len(name) <= 60 and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*={encode_rfc2231(name, 'utf-8')}"
