"""Postmark-shaped ingress: `/email`, `/email/batch`, `/email/withTemplate`,
`/email/batchWithTemplates`, authenticated with `X-Postmark-Server-Token`.

Each request is turned into a MIME message and parsed by the same code as SMTP submissions,
so one pipeline decides and rewrites an email whichever way it arrived. Answers and errors
use Postmark's shapes so the agent's SDK behaves as against Postmark itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from aiohttp import web

from gateway.addresses import domain_of
from gateway.clock import Clock
from gateway.credentials import account_with_secret
from gateway.email_message import MIME_POLICY, parse_email, to_bytes
from gateway.model import Account, Channel, EmailContent, OutboundMessage, Reason
from gateway.pipeline import Outcome, Pipeline, TemporaryFailure

MAX_RECIPIENTS = 50
MAX_BATCH_MESSAGES = 500
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_BATCH_BYTES = 50 * 1024 * 1024
BAD_TOKEN = 10
UNAVAILABLE = 100
INVALID_REQUEST = 300
INVALID_JSON = 402
INACTIVE_RECIPIENT = 406
TRACK_LINKS = {"None", "HtmlAndText", "HtmlOnly", "TextOnly"}
TEMPLATE_FIELDS = {"TemplateId", "TemplateAlias", "TemplateModel", "InlineCss"}
EMAIL_FIELDS = {
    "From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo", "Headers",
    "TrackOpens", "TrackLinks", "Metadata", "Attachments", "MessageStream",
}
RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "reply-to", "sender", "date", "mime-version",
    "content-type", "content-transfer-encoding", "return-path",
}


class RequestProblem(ValueError):
    """A request Postmark would refuse: its ErrorCode and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def postmark_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"ErrorCode": code, "Message": message}, status=status)


def _string(item: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise RequestProblem(INVALID_REQUEST, f"Invalid email request: {key} is required.")
        return ""
    if not isinstance(value, str):
        raise RequestProblem(INVALID_REQUEST, f"Invalid email request: {key} must be a string.")
    return value


def _single_line(key: str, value: str) -> str:
    """Header values with line breaks would let the agent write headers of its own."""
    if "\r" in value or "\n" in value:
        raise RequestProblem(
            INVALID_REQUEST, f"Invalid email request: {key} contains a line break."
        )
    return value


def _addresses(item: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    text = _single_line(key, _string(item, key))
    if not text.strip():
        return []
    pairs = getaddresses([text])
    if not all(address and "@" in address for _, address in pairs):
        raise RequestProblem(
            INVALID_REQUEST, f"Invalid email request: {key} is not a list of email addresses."
        )
    return pairs


@dataclass(frozen=True)
class PostmarkRequest:
    """One message of a request, validated: its MIME form and where it goes."""

    item: Mapping[str, Any]
    to_field: str
    sender: str
    recipients: tuple[str, ...]
    mime: EmailMessage | None
    template: Mapping[str, Any] | None


def build_request(item: Any, *, template: bool, now: datetime) -> PostmarkRequest:
    if not isinstance(item, dict):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: a message must be an object.")
    allowed = EMAIL_FIELDS | (TEMPLATE_FIELDS if template else set())
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise RequestProblem(INVALID_REQUEST, f"Invalid email request: unknown fields {unknown}.")
    if len(json.dumps(item)) > MAX_MESSAGE_BYTES:
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: message over 10 MB.")
    from_pairs = _addresses(item, "From")
    if len(from_pairs) != 1:
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: From needs one address.")
    to, cc, bcc = (_addresses(item, k) for k in ("To", "Cc", "Bcc"))
    recipients = tuple(dict.fromkeys(a for _, a in to + cc + bcc))
    if not recipients:
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: zero recipients specified.")
    if len(recipients) > MAX_RECIPIENTS:
        raise RequestProblem(
            INVALID_REQUEST,
            f"Invalid email request: {len(recipients)} recipients; at most {MAX_RECIPIENTS}.",
        )
    headers = _extra_headers(item)
    if template:
        return PostmarkRequest(item, _string(item, "To"), from_pairs[0][1], recipients, None,
                               _template_request(item, headers))
    mime = _mime(item, headers, now)
    return PostmarkRequest(item, _string(item, "To"), from_pairs[0][1], recipients, mime, None)


def _extra_headers(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headers, plus Postmark's fields that travel as X-PM-* headers over SMTP."""
    raw = item.get("Headers") or []
    if not isinstance(raw, list):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: Headers must be a list.")
    headers = []
    for entry in raw:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("Name", "Value")
        ):
            raise RequestProblem(
                INVALID_REQUEST, "Invalid email request: each header needs a Name and a Value."
            )
        name = _single_line("Headers.Name", entry["Name"]).strip()
        if not name or ":" in name or name.lower() in RESERVED_HEADERS:
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid email request: header {name!r} cannot be set here."
            )
        headers.append((name, _single_line(f"header {name}", entry["Value"])))
    tag = _single_line("Tag", _string(item, "Tag"))
    if tag:
        headers.append(("X-PM-Tag", tag))
    stream = _single_line("MessageStream", _string(item, "MessageStream"))
    if stream:
        headers.append(("X-PM-Message-Stream", stream))
    metadata = item.get("Metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in metadata.items()
    ):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: Metadata must map strings.")
    for key, value in metadata.items():
        headers.append((f"X-PM-Metadata-{_single_line('Metadata', key)}",
                        _single_line(f"Metadata {key}", str(value))))
    if "TrackOpens" in item and item["TrackOpens"] is not None:
        if not isinstance(item["TrackOpens"], bool):
            raise RequestProblem(INVALID_REQUEST, "Invalid email request: TrackOpens is a boolean.")
        headers.append(("X-PM-TrackOpens", str(item["TrackOpens"]).lower()))
    links = item.get("TrackLinks")
    if links is not None:
        if links not in TRACK_LINKS:
            raise RequestProblem(INVALID_REQUEST, f"Invalid email request: TrackLinks {links!r}.")
        headers.append(("X-PM-TrackLinks", links))
    return headers


def _mime(item: Mapping[str, Any], headers: list[tuple[str, str]], now: datetime) -> EmailMessage:
    text, html = _string(item, "TextBody"), _string(item, "HtmlBody")
    if not text and not html:
        raise RequestProblem(
            INVALID_REQUEST, "Provide either email TextBody or HtmlBody or both."
        )
    message = EmailMessage(policy=MIME_POLICY)
    sender = _single_line("From", _string(item, "From"))
    message["From"] = sender
    for field, header in (("To", "To"), ("Cc", "Cc"), ("ReplyTo", "Reply-To")):
        value = _single_line(field, _string(item, field))
        if value.strip():
            message[header] = value
    message["Subject"] = _single_line("Subject", _string(item, "Subject"))
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=domain_of(getaddresses([sender])[0][1]))
    for name, value in headers:
        message[name] = value
    if text:
        message.set_content(text)
    if html:
        if text:
            message.add_alternative(html, subtype="html")
        else:
            message.set_content(html, subtype="html")
    for attachment in _attachments(item):
        name, data, content_type, content_id = attachment
        maintype, _, subtype = content_type.partition("/")
        extra = {"cid": f"<{content_id.removeprefix('cid:')}>", "disposition": "inline"} \
            if content_id else {}
        message.add_attachment(data, maintype, subtype or "octet-stream", filename=name, **extra)
    return message


def _attachments(item: Mapping[str, Any]) -> list[tuple[str, bytes, str, str]]:
    raw = item.get("Attachments") or []
    if not isinstance(raw, list):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: Attachments must be a list.")
    result = []
    for entry in raw:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("Name", "Content", "ContentType")
        ):
            raise RequestProblem(
                INVALID_REQUEST,
                "Invalid email request: each attachment needs Name, Content and ContentType.",
            )
        try:
            data = base64.b64decode(entry["Content"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid attachment content for {entry['Name']!r}: not base64."
            ) from None
        content_type = _single_line("ContentType", entry["ContentType"])
        if content_type.count("/") != 1:
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid attachment ContentType {content_type!r}."
            )
        result.append((
            _single_line("Attachment Name", entry["Name"]), data, content_type,
            _single_line("ContentID", entry.get("ContentID") or ""),
        ))
    return result


def _template_request(
    item: Mapping[str, Any], headers: list[tuple[str, str]]
) -> Mapping[str, Any]:
    if not (isinstance(item.get("TemplateId"), int) or isinstance(item.get("TemplateAlias"), str)):
        raise RequestProblem(
            INVALID_REQUEST, "Invalid email request: TemplateId or TemplateAlias is required."
        )
    if not isinstance(item.get("TemplateModel"), dict):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: TemplateModel is required.")
    for field in ("Subject", "ReplyTo", "Cc"):
        _single_line(field, _string(item, field))
    _attachments(item)
    request = {k: v for k, v in item.items() if k not in ("Headers", "Bcc", "Cc")}
    request["Headers"] = [{"Name": n, "Value": v} for n, v in headers
                          if not n.startswith("X-PM-")]
    return request


class PostmarkRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        accounts: Callable[[], tuple[Account, ...]],
        clock: Clock,
        templates_supported: bool,
    ) -> None:
        self.pipeline = pipeline
        self.accounts = accounts
        self.clock = clock
        self.templates_supported = templates_supported

    def register(self, app: web.Application) -> None:
        for path, handler in (
            ("/email", self.single),
            ("/email/batch", self.batch),
            ("/email/withTemplate", self.single_template),
            ("/email/batchWithTemplates", self.batch_templates),
        ):
            app.router.add_post(path, handler)
            app.router.add_post(path + "/", handler)

    def _account(self, request: web.Request) -> Account | None:
        return account_with_secret(
            self.accounts(), request.headers.get("X-Postmark-Server-Token", "")
        )

    async def _body(self, request: web.Request, limit: int) -> tuple[Account, Any] | web.Response:
        account = self._account(request)
        if account is None:
            return postmark_error(
                401, BAD_TOKEN,
                "The Server Token you provided in the X-Postmark-Server-Token request header "
                "was invalid. Please verify that you are using a valid token.",
            )
        if (request.content_length or 0) > limit:
            return postmark_error(422, INVALID_REQUEST, f"Request body over {limit} bytes.")
        try:
            return account, json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return postmark_error(422, INVALID_JSON, "Received invalid JSON input.")
        except web.HTTPRequestEntityTooLarge:
            return postmark_error(422, INVALID_REQUEST, f"Request body over {limit} bytes.")

    async def single(self, request: web.Request) -> web.Response:
        return await self._single(request, template=False)

    async def single_template(self, request: web.Request) -> web.Response:
        return await self._single(request, template=True)

    async def batch(self, request: web.Request) -> web.Response:
        return await self._batch(request, template=False)

    async def batch_templates(self, request: web.Request) -> web.Response:
        return await self._batch(request, template=True)

    async def _single(self, request: web.Request, *, template: bool) -> web.Response:
        received = await self._body(request, MAX_MESSAGE_BYTES + 64 * 1024)
        if isinstance(received, web.Response):
            return received
        account, item = received
        status, result = await self._send_one(account, item, template=template)
        return web.json_response(result, status=status)

    async def _batch(self, request: web.Request, *, template: bool) -> web.Response:
        received = await self._body(request, MAX_BATCH_BYTES)
        if isinstance(received, web.Response):
            return received
        account, body = received
        items = body.get("Messages") if template and isinstance(body, dict) else body
        if not isinstance(items, list):
            shape = '{"Messages": [...]}' if template else "a JSON array of messages"
            return postmark_error(422, INVALID_REQUEST, f"A batch must be {shape}.")
        if len(items) > MAX_BATCH_MESSAGES:
            return postmark_error(
                422, INVALID_REQUEST,
                f"A batch holds at most {MAX_BATCH_MESSAGES} messages ({len(items)} given).",
            )
        results = [(await self._send_one(account, item, template=template)) for item in items]
        if results and all(status == 503 for status, _ in results):
            return web.json_response(results[0][1], status=503)
        return web.json_response([result for _, result in results])

    async def _send_one(
        self, account: Account, item: Any, *, template: bool
    ) -> tuple[int, dict[str, Any]]:
        now = self.clock.now()
        try:
            if template and not self.templates_supported:
                raise RequestProblem(
                    INVALID_REQUEST,
                    "Template sends need upstream.email.kind = postmark (or outbox): only "
                    "Postmark can render a template.",
                )
            # MIME work is CPU-heavy; keep it off the event loop.
            built, message = await asyncio.to_thread(self._prepare, account, item, template, now)
        except RequestProblem as problem:
            return await self._refuse(account, item, problem, now)
        try:
            outcome = await self.pipeline.process(message)
        except TemporaryFailure as exc:
            return 503, {"ErrorCode": UNAVAILABLE,
                         "Message": f"{exc.reason}: {exc.text} (nothing was sent; retry)"}
        return self._answer(built, outcome, now)

    async def _refuse(
        self, account: Account, item: Any, problem: RequestProblem, now: datetime
    ) -> tuple[int, dict[str, Any]]:
        """A malformed request is recorded like any other block before it is answered."""
        recipients: tuple[str, ...] = ()
        sender = ""
        if isinstance(item, dict):
            recipients = tuple(
                a for k in ("To", "Cc", "Bcc") if isinstance(item.get(k), str)
                for _, a in getaddresses([item[k].replace("\r", " ").replace("\n", " ")]) if a
            )[:MAX_RECIPIENTS]
            sender = item.get("From") if isinstance(item.get("From"), str) else ""
        message = OutboundMessage(
            id=uuid.uuid4().hex, channel=Channel.EMAIL, ingress="postmark", account=account,
            envelope_sender=sender.replace("\r", " ").replace("\n", " ")[:320],
            recipients=recipients, received_at=now,
        )
        try:
            await self.pipeline.reject(
                message, Reason("MESSAGE_MALFORMED", str(problem), "postmark.request")
            )
        except TemporaryFailure as exc:
            return 503, {"ErrorCode": UNAVAILABLE, "Message": f"{exc.reason}: {exc.text}"}
        return 422, {"ErrorCode": problem.code, "Message": str(problem)}

    def _prepare(
        self, account: Account, item: Any, template: bool, now: datetime
    ) -> tuple[PostmarkRequest, OutboundMessage]:
        built = build_request(item, template=template, now=now)
        return built, self._message(account, built, now)

    def _message(self, account: Account, built: PostmarkRequest, now: datetime) -> OutboundMessage:
        if built.mime is not None:
            email = parse_email(to_bytes(built.mime))
        else:
            email = EmailContent(
                from_addresses=(built.sender,),
                subject=str(built.item.get("Subject") or ""),
                is_reply=False,
                message_id="",
                size=len(json.dumps(built.item)),
                template=built.template,
            )
        return OutboundMessage(
            id=uuid.uuid4().hex,
            channel=Channel.EMAIL,
            ingress="postmark",
            account=account,
            envelope_sender=built.sender,
            recipients=built.recipients,
            received_at=now,
            email=email,
        )

    def _answer(
        self, built: PostmarkRequest, outcome: Outcome, now: datetime
    ) -> tuple[int, dict[str, Any]]:
        if outcome.refused:
            error = outcome.refused[0].error
            document = getattr(error, "document", None)
            if isinstance(document, dict):
                return getattr(error, "status", 422), document
            return 422, {"ErrorCode": INVALID_REQUEST, "Message": f"{error.code} {error.text}"}
        if outcome.delivered:
            message = "OK"
            blocked = outcome.decision.blocked_recipients
            if blocked:
                codes = ",".join(dict.fromkeys(r.code for b in blocked for r in b.reasons))
                message = f"OK; not sent to {len(blocked)} recipient(s): {codes}"
            return 200, {
                "To": built.to_field,
                "SubmittedAt": now.isoformat(),
                "MessageID": outcome.delivered[0].receipt.upstream_id,
                "ErrorCode": 0,
                "Message": message,
            }
        reasons = outcome.decision.all_reasons()
        codes = list(dict.fromkeys(r.code for r in reasons))
        only_suppressed = set(codes) == {"SUPPRESSED"}
        return 422, {
            "ErrorCode": INACTIVE_RECIPIENT if only_suppressed else INVALID_REQUEST,
            "Message": f"{','.join(codes)}: " + "; ".join(r.message for r in reasons),
        }
