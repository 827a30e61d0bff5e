"""An email upstream that sends through Postmark's REST API with the gateway's server token.

An email that arrived through Postmark's API is forwarded as fields (`fields_to_postmark`);
one that arrived as MIME (SMTP) is turned into Postmark's `/email` JSON here. Template sends
are forwarded to `/email/withTemplate` as the agent wrote them, with only the recipient
changed. Nothing is retried
silently: Postmark may have accepted a request whose answer never arrived, and a second POST
would send the message twice.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser
from mimetypes import MimeTypes
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.config.settings import EmailUpstreamConfig
from gateway.mail.parse import MIME_POLICY
from gateway.mail.repair import unescaped
from gateway.model import EmailFields, UpstreamPermanentError, UpstreamTemporaryError
from gateway.rewrite.html_footer import shown_template_html
from gateway.rewrite.mime import FOOTER_TYPES, SEALED_TYPES
from gateway.runtime.clock import Clock

INACTIVE_RECIPIENT = 406
# Headers Postmark writes itself from its own fields or from the hop it makes. Trace and
# signature headers describe a submission this API call replaces (Postmark signs anew).
NOT_FORWARDED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "reply-to", "date", "mime-version", "message-id",
        "return-path", "received", "dkim-signature", "authentication-results",
        "arc-seal", "arc-message-signature", "arc-authentication-results",
    }
)
PM_HEADER_PREFIX = "x-pm-"
PM_METADATA_PREFIX = "x-pm-metadata-"
PM_FIELDS = {
    "x-pm-tag": "Tag",
    "x-pm-message-stream": "MessageStream",
    "x-pm-tracklinks": "TrackLinks",
}
# Built-in table only: the host's mime.types must not change what a message turns into.
_EXTENSIONS = MimeTypes()
# A name is required; ".bin" (octet-stream's guess) is a blocked extension at many providers.
_FALLBACK_EXTENSION = ".dat"


def fields_to_postmark(
    fields: EmailFields, recipient: str, gateway_headers: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """One recipient's copy of an email given as fields, as Postmark's `/email` request.

    `To` is the recipient alone and Cc/Bcc are not forwarded, as in `mime_to_postmark`;
    `gateway_headers` (List-Unsubscribe) replace any header of the same name the agent set,
    and signature and trace headers are left out (Postmark signs the message it builds).
    """
    request: dict[str, Any] = {"From": fields.sender, "To": recipient, "Subject": fields.subject}
    if fields.reply_to:
        request["ReplyTo"] = fields.reply_to
    if fields.text_body:
        request["TextBody"] = fields.text_body
    if fields.html_body:
        request["HtmlBody"] = fields.html_body
    left_out = {name.lower() for name, _ in gateway_headers} | NOT_FORWARDED_HEADERS
    headers = [
        {"Name": name, "Value": value}
        for name, value in (*(h for h in fields.headers if h[0].lower() not in left_out),
                            *gateway_headers)
    ]
    if headers:
        request["Headers"] = headers
    if fields.attachments:
        request["Attachments"] = [
            {"Name": a.name, "Content": base64.b64encode(a.content).decode("ascii"),
             "ContentType": a.content_type} | ({"ContentID": a.content_id} if a.content_id else {})
            for a in fields.attachments
        ]
    request.update(fields.provider_fields)
    return request


def mime_to_postmark(message: EmailMessage, recipient: str) -> dict[str, Any]:
    """One recipient's copy of a rewritten message as Postmark's `/email` request.

    `To` is the recipient alone and Cc/Bcc are not forwarded: the gateway sends every
    recipient their own copy with their own unsubscribe link, so listing the others would
    deliver them extra copies that bypassed their own checks. Never raises on a message
    `parse_email` accepted.
    """
    request: dict[str, Any] = {
        "From": _first_header(message, "From"),
        "To": recipient,
        "Subject": _first_header(message, "Subject"),
    }
    reply_to = _first_header(message, "Reply-To")
    if reply_to:
        request["ReplyTo"] = reply_to
    request.update(_body_fields(message))
    request.update(_header_fields(message))
    return request


def _first_header(message: Message, name: str) -> str:
    for raw_name, value in message.raw_items():
        if raw_name.lower() == name.lower():
            return _decoded_header(raw_name, value)
    return ""


def _decoded_header(name: str, value: str) -> str:
    """The value with encoded words decoded; as written if the header parser chokes on it."""
    try:
        text = str(MIME_POLICY.header_fetch_parse(name, value))
    except Exception:  # bugs in the stdlib header parser surface as arbitrary errors
        text = value.replace("\r", "").replace("\n", "").strip()
    return unescaped(text)


def _header_fields(message: Message) -> dict[str, Any]:
    """Custom headers as Postmark's `Headers`, and Postmark's SMTP-convention X-PM-* headers
    back as the API fields they stand for (the first of each wins)."""
    fields: dict[str, Any] = {}
    headers: list[dict[str, str]] = []
    metadata: dict[str, str] = {}
    for name, raw_value in message.raw_items():
        lowered = name.lower()
        value = _decoded_header(name, raw_value)
        if lowered.startswith(PM_METADATA_PREFIX):
            metadata.setdefault(name[len(PM_METADATA_PREFIX):], value)
        elif lowered in PM_FIELDS:
            fields.setdefault(PM_FIELDS[lowered], value)
        elif lowered == "x-pm-trackopens" and value.lower() in ("true", "false"):
            fields.setdefault("TrackOpens", value.lower() == "true")
        elif not (
            lowered in NOT_FORWARDED_HEADERS
            or lowered.startswith(("content-", PM_HEADER_PREFIX))
        ):
            headers.append({"Name": name, "Value": value})
    if headers:
        fields["Headers"] = headers
    if metadata:
        fields["Metadata"] = metadata
    return fields


def _body_fields(message: Message) -> dict[str, Any]:
    """The first text/plain and text/html body parts as TextBody and HtmlBody; every other
    leaf as an attachment, with the bytes its transfer encoding stood for."""
    fields: dict[str, Any] = {}
    attachments: list[dict[str, str]] = []
    for part in _leaves(message):
        content_type = part.get_content_type()
        field = {"text/plain": "TextBody", "text/html": "HtmlBody"}.get(content_type)
        if field and field not in fields and _is_body_part(part):
            fields[field] = _text(part)
        else:
            attachments.append(_attachment(part, len(attachments) + 1))
    if attachments:
        fields["Attachments"] = attachments
    return fields


def _leaves(part: Message) -> Iterator[Message]:
    """Parts in reading order; attached messages and signed or encrypted entities are leaves,
    forwarded whole, the way the footer rewriter never opens them either."""
    if (
        part.get_content_maintype() == "multipart"
        and part.is_multipart()
        and part.get_content_type() not in SEALED_TYPES
    ):
        for child in part.get_payload():
            yield from _leaves(child)
    else:
        yield part


def _is_body_part(part: Message) -> bool:
    """The same test as the footer rewriter's, so the footer lands in the bodies sent."""
    return part.get_content_type() in FOOTER_TYPES and not part.is_attachment()


def _text(part: Message) -> str:
    """Decoded with the part's charset; undeclared means ASCII, read leniently as UTF-8."""
    data = _content_bytes(part)
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError):  # unknown charset, or a name the codec registry rejects
        return data.decode("utf-8", "replace")


def _attachment(part: Message, number: int) -> dict[str, str]:
    content_type = part.get_content_type()
    filename = part.get_filename()
    attachment = {
        "Name": unescaped(filename) if filename else _fallback_name(content_type, number),
        "Content": base64.b64encode(_content_bytes(part)).decode("ascii"),
        # A forwarded multipart needs its boundary (and protocol) to be read again.
        "ContentType": (
            _first_header(part, "Content-Type")
            if part.get_content_maintype() == "multipart"
            else content_type
        ),
    }
    content_id = _first_header(part, "Content-ID").strip().strip("<>")
    if content_id and part.get_content_disposition() != "attachment":
        attachment["ContentID"] = f"cid:{content_id}"  # how Postmark marks an inline part
    return attachment


def _fallback_name(content_type: str, number: int) -> str:
    extension = _EXTENSIONS.guess_extension(content_type)
    if extension in (None, ".bin"):
        extension = _FALLBACK_EXTENSION
    return f"part{number}{extension}"


def _content_bytes(part: Message) -> bytes:
    """A leaf's decoded content; for an attached message or a sealed multipart, its body
    exactly as the gateway would have sent it over SMTP."""
    if not part.is_multipart():
        return part.get_payload(decode=True) or b""
    buffer = io.BytesIO()
    BytesGenerator(buffer, policy=MIME_POLICY).flatten(part)
    data = buffer.getvalue()
    if data.startswith(b"\r\n"):  # a part without headers (message/rfc822 in a digest)
        return data[2:]
    return data.partition(b"\r\n\r\n")[2]


class PostmarkRefusal(UpstreamPermanentError):
    """Postmark's own 4xx answer, kept whole so Postmark-API agents get exactly what
    Postmark said."""

    def __init__(self, status: int, code: int, text: str, document: Mapping[str, Any]) -> None:
        super().__init__(code, text, recipient_inactive=code == INACTIVE_RECIPIENT)
        self.status = status
        self.document = dict(document)


class PostmarkEmailUpstream:
    """Postmark's REST API at `config.base_url`, with the gateway's server token."""

    name = "postmark"

    def __init__(
        self,
        config: EmailUpstreamConfig,
        *,
        cache_ttl_s: float = 300.0,
        monotonic: Callable[[], float] = Clock.monotonic,
    ) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self.cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._template_bodies: dict[str, tuple[float, asyncio.Task[tuple[str, ...]]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={
                "X-Postmark-Server-Token": self.config.server_token,
                "Accept": "application/json",
            },
            timeout=self.timeout,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        """`envelope_from` has no place in the API: Postmark sets its own Return-Path."""
        parsed = BytesParser(policy=MIME_POLICY).parsebytes(message)
        return await self._send("/email", mime_to_postmark(parsed, recipient))

    async def send_api_email(self, request: dict[str, Any]) -> str:
        """A request `fields_to_postmark` wrote: it goes out as it is."""
        return await self._send("/email", request)

    async def send_template(self, recipient: str, request: Mapping[str, Any]) -> str:
        """The agent's template request for one recipient; Cc and Bcc are dropped for the
        same reason `mime_to_postmark` drops them."""
        body = {key: value for key, value in request.items() if key not in ("To", "Cc", "Bcc")}
        body["To"] = recipient
        return await self._send("/email/withTemplate", body)

    async def template_uses(self, template: int | str, placeholders: Sequence[str]) -> bool:
        """Whether every placeholder is referenced (`{{name}}` or `{{{name}}}`) where a
        reader is shown it: in the template's TextBody or its layout's, or in the HtmlBody
        they make together outside any comment (`shown_template_html`).

        The bodies are cached for `cache_ttl_s`, and concurrent callers share one fetch, so a
        batch of sends with one template costs one request to Postmark.
        """
        bodies = await self._cached_template_bodies(str(template))
        return all(
            any(re.search(_reference(name), body) for body in bodies) for name in placeholders
        )

    async def suppression_dump(self, stream: str) -> list[dict[str, Any]]:
        """Every suppressed address of a message stream (EmailAddress, SuppressionReason,
        Origin, CreatedAt), as Postmark lists them."""
        document = await self._call("GET", f"/message-streams/{quote(stream, safe='')}"
                                    "/suppressions/dump")
        suppressions = document.get("Suppressions")
        if not isinstance(suppressions, list):
            raise UpstreamTemporaryError("Postmark's suppression dump has no Suppressions list")
        return [entry for entry in suppressions if isinstance(entry, dict)]

    async def _send(self, path: str, request: dict[str, Any]) -> str:
        if self.config.message_stream:
            request.setdefault("MessageStream", self.config.message_stream)
        document = await self._call("POST", path, request, sends=True)
        message_id = document.get("MessageID")
        if not message_id:
            raise UpstreamTemporaryError(
                f"Postmark accepted {path} without a MessageID: {document!r:.200}",
                maybe_delivered=True,
            )
        return str(message_id)

    async def _cached_template_bodies(self, key: str) -> tuple[str, ...]:
        now = self._monotonic()
        entry = self._template_bodies.get(key)
        if entry is None or entry[0] <= now:
            task = asyncio.create_task(self._fetch_template_bodies(key))
            task.add_done_callback(functools.partial(self._forget_failed_fetch, key))
            entry = (now + self.cache_ttl_s, task)
            self._template_bodies[key] = entry
        # One caller giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(entry[1])

    def _forget_failed_fetch(self, key: str, task: asyncio.Task[tuple[str, ...]]) -> None:
        """A failed lookup is not an answer: the next caller asks Postmark again."""
        failed = task.cancelled() or task.exception() is not None
        entry = self._template_bodies.get(key)
        if failed and entry is not None and entry[1] is task:
            del self._template_bodies[key]

    async def _fetch_template_bodies(self, key: str) -> tuple[str, ...]:
        """The HTML body is put in its layout's before it is read, as Postmark renders it:
        a layout that comments out `{{{@content}}}` hides the template's placeholders."""
        document = await self._call("GET", f"/templates/{quote(key, safe='')}")
        html, texts = document.get("HtmlBody"), [document.get("TextBody")]
        layout = document.get("LayoutTemplate")
        if layout:  # Postmark renders the template inside its layout's {{{@content}}}
            wrapper = await self._call("GET", f"/templates/{quote(str(layout), safe='')}")
            texts.append(wrapper.get("TextBody"))
            if isinstance(wrapper.get("HtmlBody"), str):
                content = html if isinstance(html, str) else ""
                html = re.sub(_reference("@content"), lambda _: content, wrapper["HtmlBody"])
        shown = [shown_template_html(html)] if isinstance(html, str) else []
        return (*shown, *(text for text in texts if isinstance(text, str)))

    async def _call(
        self, method: str, path: str, body: Any = None, *, sends: bool = False
    ) -> dict[str, Any]:
        """One request; `sends` marks a request that may deliver mail, so that a failure after
        it went out is reported as possibly delivered."""
        assert self._session is not None, "start() first"
        try:
            async with self._session.request(method, self.base_url + path, json=body) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamTemporaryError(f"Postmark unreachable: {exc}") from exc
        except TimeoutError as exc:
            raise UpstreamTemporaryError(
                f"Postmark did not answer {method} {path} within {self.timeout.total:g}s",
                maybe_delivered=sends,
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamTemporaryError(
                f"Postmark connection failed during {method} {path}: {exc}",
                maybe_delivered=sends,
            ) from exc
        return _document_or_error(status, raw, sends=sends)


def _document_or_error(status: int, raw: bytes, *, sends: bool) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if status == 404 and not isinstance(document, dict):
        document = {"ErrorCode": 404, "Message": "Entity doesn't exist"}  # Postmark's meaning
    if 200 <= status < 300 and isinstance(document, dict):
        return document
    if status < 400 or status >= 500 or status == 429 or not isinstance(document, dict):
        raise UpstreamTemporaryError(
            f"Postmark answered {status}: {raw[:200]!r}",
            maybe_delivered=sends and 200 <= status < 300,
        )
    code = document.get("ErrorCode")
    if not isinstance(code, int) or isinstance(code, bool):
        code = status
    raise PostmarkRefusal(status, code, str(document.get("Message", "")), document)


def _reference(name: str) -> str:
    """A Mustachio value reference to `name`, escaped or not, blanks allowed in the braces."""
    return r"\{\{\{?\s*" + re.escape(name) + r"\s*\}?\}\}"
