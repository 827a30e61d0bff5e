"""Postmark-shaped ingress: `/email`, `/email/batch`, `/email/withTemplate`,
`/email/batchWithTemplates`, authenticated with `X-Postmark-Server-Token`.

Each request becomes `EmailFields`: its headers are read for the policy by the same code as
an SMTP submission's, and the footer goes into its bodies through the same function as a MIME
part's, so one pipeline decides and rewrites an email whichever way it arrived; MIME is
written only for upstreams that take MIME. Answers and errors use Postmark's shapes so the
agent's SDK behaves as against Postmark itself.

Retries: a request carrying `X-Idempotency-Key` (or `Idempotency-Key`) gives each of its
messages a delivery key made of the account, the endpoint, the key, the message's place in
the request and its content, so a retry of the same request sends no copy that already went
out (the delivery ledger, as for SMTP). One request asks for at most
`http.max_copies_per_request` recipient copies, so no request runs for minutes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from aiohttp import web

from gateway.addresses import domain_of
from gateway.auth.authenticate import Authenticator
from gateway.auth.secret_check import account_or_refusal
from gateway.mail.parse import fields_content, sender_identities
from gateway.model import (
    Account,
    Channel,
    EmailAttachment,
    EmailContent,
    EmailFields,
    OutboundMessage,
    Reason,
)
from gateway.pipeline.process import (
    ALREADY_DELIVERED,
    Outcome,
    Pipeline,
    TemporaryFailure,
    delivery_key,
)
from gateway.runtime.clock import Clock
from gateway.runtime.ids import unique_hex
from gateway.runtime.input_limits import JsonTooDeep, line_break_in, read_json

log = logging.getLogger("gateway.ingress.postmark")

MAX_RECIPIENTS = 50
MAX_BATCH_MESSAGES = 500
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_BATCH_BYTES = 50 * 1024 * 1024
MAX_COPIES_PER_REQUEST = 1000
IDEMPOTENCY_HEADERS = ("X-Idempotency-Key", "Idempotency-Key")
IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")  # printable ASCII, no blanks
BAD_TOKEN = 10
# Postmark answers HTTP 429 when it rate-limits; its ErrorCode table has no entry for that.
RATE_LIMITED = 429
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
# RFC 5322 field names: printable ASCII but the colon.
HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(?:\s*;[ -~]*)?", re.ASCII)
CONTENT_ID = re.compile(r"[ -~]{0,250}")
MAX_ATTACHMENT_NAME = 255
_ADDR_SPEC = r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_NAME = r"[A-Za-z0-9'-]+(?: [A-Za-z0-9'-]+)*"
SIMPLE_ADDRESS = re.compile(
    rf"(?P<bare>{_ADDR_SPEC})|(?P<name>{_PLAIN_NAME}) <(?P<address>{_ADDR_SPEC})>"
)
SMALL_REQUEST_CHARS = 256 * 1024
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
    return _encodable(key, value)


def _encodable(key: str, value: str) -> str:
    """JSON can carry lone surrogates ("\\ud800"), which no email can: refuse them here
    rather than fail while writing the message."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid email request: {key} is not valid Unicode text."
            ) from None
    return value


def _single_line(key: str, value: str) -> str:
    """Header values with line breaks would let the agent write headers of its own, and
    CR and LF are not the only line breaks (VT, FF, NEL, U+2028...: `line_break_in`)."""
    separator = line_break_in(value)
    if separator:
        raise RequestProblem(
            INVALID_REQUEST, f"Invalid email request: {key} contains a line break ({separator})."
        )
    return _encodable(key, value)


def _addresses(item: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    text = _single_line(key, _string(item, key))
    if not text.strip():
        return []
    pairs = address_list(text)
    if not all(address and "@" in address for _, address in pairs):
        raise RequestProblem(
            INVALID_REQUEST, f"Invalid email request: {key} is not a list of email addresses."
        )
    return pairs


def address_list(text: str) -> list[tuple[str, str]]:
    """`getaddresses`, which costs 25 µs an address, with a shortcut for what agents mostly
    send: comma-separated bare addresses or `Plain Name <address>`, which it would return
    exactly as written."""
    pairs = []
    for item in text.split(","):
        match = SIMPLE_ADDRESS.fullmatch(item.strip())
        if match is None:
            return getaddresses([text])
        pairs.append((match["name"] or "", match["bare"] or match["address"]))
    return pairs


@dataclass(frozen=True)
class PostmarkRequest:
    """One message of a request, validated: its fields (or template request) and where it goes."""

    item: Mapping[str, Any]
    to_field: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    fields: EmailFields | None
    template: Mapping[str, Any] | None


def build_request(item: Any, *, template: bool, now: datetime) -> PostmarkRequest:
    if not isinstance(item, dict):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: a message must be an object.")
    allowed = EMAIL_FIELDS | (TEMPLATE_FIELDS if template else set())
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise RequestProblem(INVALID_REQUEST, f"Invalid email request: unknown fields {unknown}.")
    size = len(json.dumps(item))
    if size > MAX_MESSAGE_BYTES:
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
    headers = _agent_headers(item)
    provider = _provider_fields(item)
    sender = from_pairs[0][1]
    if template:
        return PostmarkRequest(item, _string(item, "To"), sender, recipients, size, None,
                               _template_request(item, headers))
    fields = _fields(item, headers, provider, now, domain_of(sender))
    return PostmarkRequest(item, _string(item, "To"), sender, recipients, size, fields, None)


def _agent_headers(item: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
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
        if not HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid email request: header {name!r} cannot be set here."
            )
        headers.append((name, _single_line(f"header {name}", entry["Value"])))
    return tuple(headers)


def _provider_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """Postmark's delivery options, checked: they travel as API fields or X-PM-* headers."""
    provider: dict[str, Any] = {}
    for key in ("Tag", "MessageStream"):
        value = _single_line(key, _string(item, key))
        if value:
            provider[key] = value
    metadata = item.get("Metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in metadata.items()
    ):
        raise RequestProblem(INVALID_REQUEST, "Invalid email request: Metadata must map strings.")
    for key, value in metadata.items():
        if not HEADER_NAME.fullmatch(key):
            raise RequestProblem(INVALID_REQUEST, f"Invalid email request: Metadata key {key!r}.")
        _single_line(f"Metadata {key}", str(value))
    if metadata:
        provider["Metadata"] = metadata
    if item.get("TrackOpens") is not None:
        if not isinstance(item["TrackOpens"], bool):
            raise RequestProblem(INVALID_REQUEST, "Invalid email request: TrackOpens is a boolean.")
        provider["TrackOpens"] = item["TrackOpens"]
    links = item.get("TrackLinks")
    if links is not None:
        if not isinstance(links, str) or links not in TRACK_LINKS:
            raise RequestProblem(INVALID_REQUEST, f"Invalid email request: TrackLinks {links!r}.")
        provider["TrackLinks"] = links
    return provider


def _fields(
    item: Mapping[str, Any],
    headers: tuple[tuple[str, str], ...],
    provider: dict[str, Any],
    now: datetime,
    sender_domain: str,
) -> EmailFields:
    text, html = _string(item, "TextBody"), _string(item, "HtmlBody")
    if not text and not html:
        raise RequestProblem(
            INVALID_REQUEST, "Provide either email TextBody or HtmlBody or both."
        )
    sender = _single_line("From", _string(item, "From"))
    return EmailFields(
        sender=sender,
        to=_single_line("To", _string(item, "To")),
        cc=_single_line("Cc", _string(item, "Cc")),
        reply_to=_single_line("ReplyTo", _string(item, "ReplyTo")),
        subject=_single_line("Subject", _string(item, "Subject")),
        text_body=text,
        html_body=html,
        message_id=make_msgid(domain=sender_domain),
        date=format_datetime(now),
        headers=headers,
        attachments=_attachments(item),
        provider_fields=provider,
    )


def _attachments(item: Mapping[str, Any]) -> tuple[EmailAttachment, ...]:
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
        if not CONTENT_TYPE.fullmatch(content_type):
            raise RequestProblem(
                INVALID_REQUEST, f"Invalid attachment ContentType {content_type!r}."
            )
        name = _single_line("Attachment Name", entry["Name"])
        if len(name) > MAX_ATTACHMENT_NAME:
            raise RequestProblem(
                INVALID_REQUEST,
                f"Invalid attachment Name: over {MAX_ATTACHMENT_NAME} characters.",
            )
        content_id = entry.get("ContentID") or ""
        if not isinstance(content_id, str) or not CONTENT_ID.fullmatch(content_id):
            raise RequestProblem(INVALID_REQUEST, f"Invalid attachment ContentID {content_id!r}.")
        result.append(EmailAttachment(name, data, content_type, content_id))
    return tuple(result)


def _template_request(
    item: Mapping[str, Any], headers: tuple[tuple[str, str], ...]
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
    request["Headers"] = [{"Name": n, "Value": v} for n, v in headers]
    return request


def _credentials_refused(status: int, why: str) -> web.Response:
    if status == RATE_LIMITED:
        return postmark_error(status, RATE_LIMITED, f"Rate limit exceeded: {why}.")
    return postmark_error(status, UNAVAILABLE, f"Service unavailable: {why}.")


class PostmarkRoutes:
    def __init__(
        self,
        pipeline: Pipeline,
        accounts: Callable[[], tuple[Account, ...]],
        clock: Clock,
        templates_supported: bool,
        authenticator: Authenticator,
        max_copies_per_request: int = MAX_COPIES_PER_REQUEST,
    ) -> None:
        self.pipeline = pipeline
        self.accounts = accounts
        self.clock = clock
        self.authenticator = authenticator
        self.templates_supported = templates_supported
        self.max_copies_per_request = max_copies_per_request

    def register(self, app: web.Application) -> None:
        for path, handler in (
            ("/email", self.single),
            ("/email/batch", self.batch),
            ("/email/withTemplate", self.single_template),
            ("/email/batchWithTemplates", self.batch_templates),
        ):
            app.router.add_post(path, handler)
            app.router.add_post(path + "/", handler)

    async def _body(self, request: web.Request, limit: int) -> tuple[Account, Any] | web.Response:
        account = await account_or_refusal(
            self.authenticator, request, "postmark", _credentials_refused,
            request.headers.get("X-Postmark-Server-Token", ""),
        )
        if isinstance(account, web.Response):
            return account
        if account is None:
            return postmark_error(
                401, BAD_TOKEN,
                "The Server Token you provided in the X-Postmark-Server-Token request header "
                "was invalid. Please verify that you are using a valid token.",
            )
        if (request.content_length or 0) > limit:
            return postmark_error(422, INVALID_REQUEST, f"Request body over {limit} bytes.")
        try:
            return account, read_json(await request.read())
        except JsonTooDeep as exc:
            return postmark_error(422, INVALID_JSON, f"Received invalid JSON input: {exc}.")
        except (ValueError, UnicodeDecodeError):
            return postmark_error(422, INVALID_JSON, "Received invalid JSON input.")
        except web.HTTPRequestEntityTooLarge:
            return postmark_error(422, INVALID_REQUEST, f"Request body over {limit} bytes.")

    @staticmethod
    def _idempotency_key(request: web.Request) -> str | web.Response:
        """The request's idempotency key ("" without one), or the refusal of a bad one."""
        given = {request.headers[name] for name in IDEMPOTENCY_HEADERS if name in request.headers}
        if not given:
            return ""
        key = given.pop()
        if given:
            return postmark_error(
                422, INVALID_REQUEST,
                "X-Idempotency-Key and Idempotency-Key differ: send one idempotency key.",
            )
        if not IDEMPOTENCY_KEY.fullmatch(key):
            return postmark_error(
                422, INVALID_REQUEST,
                "X-Idempotency-Key must be 1 to 255 printable ASCII characters without blanks.",
            )
        return key

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
        key = self._idempotency_key(request)
        if isinstance(key, web.Response):
            return key
        account, item = received
        status, result = await self._send_one(
            account, item, template=template, retry_key=_retry_key(request, key, 0)
        )
        return web.json_response(result, status=status)

    async def _batch(self, request: web.Request, *, template: bool) -> web.Response:
        received = await self._body(request, MAX_BATCH_BYTES)
        if isinstance(received, web.Response):
            return received
        key = self._idempotency_key(request)
        if isinstance(key, web.Response):
            return key
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
        copies = sum(_copies(item) for item in items)
        if copies > self.max_copies_per_request:
            return postmark_error(
                422, INVALID_REQUEST,
                f"This batch asks for {copies} recipient copies; one request may ask for at "
                f"most {self.max_copies_per_request} (http.max_copies_per_request). Nothing "
                "was sent: split it into smaller batches.",
            )
        results = [
            await self._send_one(
                account, item, template=template, retry_key=_retry_key(request, key, index)
            )
            for index, item in enumerate(items)
        ]
        if results and all(status == 503 for status, _ in results):
            return web.json_response(results[0][1], status=503)
        return web.json_response([result for _, result in results])

    async def _send_one(
        self, account: Account, item: Any, *, template: bool, retry_key: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """One message's answer, whatever happens to it: a batch answers every message
        (one that fails does not turn the whole answer into an error after others went
        out, which the agent's retry would send again)."""
        now = self.clock.now()
        try:
            if template and not self.templates_supported:
                raise RequestProblem(
                    INVALID_REQUEST,
                    "Template sends need upstream.email.kind = postmark (or outbox): only "
                    "Postmark can render a template.",
                )
            if _is_small(item):
                built, message = self._prepare(account, item, template, now, retry_key)
            else:  # decoding megabytes of attachments would stall every other request
                built, message = await asyncio.to_thread(
                    self._prepare, account, item, template, now, retry_key
                )
        except RequestProblem as problem:
            return await self._refuse(account, item, problem, now)
        except Exception as exc:  # a message the gateway cannot read: nothing was sent
            log.error("postmark-message-unreadable", exc_info=exc)
            return await self._refuse(account, item, RequestProblem(
                INVALID_REQUEST, "Invalid email request: the gateway could not read this "
                f"message ({type(exc).__name__}, logged); nothing was sent.",
            ), now)
        try:
            outcome = await self.pipeline.process(message)
        except TemporaryFailure as exc:
            sent = ("it may have been sent: check before sending it again"
                    if exc.maybe_delivered else "nothing was sent; retry")
            return 503, {"ErrorCode": UNAVAILABLE, "Message": f"{exc.reason}: {exc.text} ({sent})"}
        except Exception as exc:
            log.error("postmark-message-failed", exc_info=exc,
                      extra={"fields": {"gateway_id": message.id}})
            return 503, {"ErrorCode": UNAVAILABLE, "Message": (
                f"INTERNAL_ERROR: the gateway failed on this message (logged, gateway id "
                f"{message.id}); copies may have gone out: retry only with the same "
                "X-Idempotency-Key, or check before sending it again"
            )}
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
            id=unique_hex(), channel=Channel.EMAIL, ingress="postmark", account=account,
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
        self, account: Account, item: Any, template: bool, now: datetime, retry_key: str = ""
    ) -> tuple[PostmarkRequest, OutboundMessage]:
        built = build_request(item, template=template, now=now)
        return built, self._message(account, built, now, retry_key)

    def _message(
        self, account: Account, built: PostmarkRequest, now: datetime, retry_key: str = ""
    ) -> OutboundMessage:
        if built.fields is not None:
            email = fields_content(built.fields, built.size)
        else:  # From and ReplyTo are checked as for any other send
            from_addresses, problems, other_identities = sender_identities(
                _string(built.item, "From"), _string(built.item, "ReplyTo")
            )
            email = EmailContent(
                from_addresses=from_addresses,
                subject=str(built.item.get("Subject") or ""),
                is_reply=False,
                message_id="",
                size=built.size,
                problems=problems,
                other_identities=other_identities,
                template=built.template,
            )
        return OutboundMessage(
            id=unique_hex(),
            channel=Channel.EMAIL,
            ingress="postmark",
            account=account,
            envelope_sender=built.sender,
            recipients=built.recipients,
            received_at=now,
            idempotency_key=delivery_key(
                account.name, retry_key, json.dumps(built.item, sort_keys=True).encode()
            ) if retry_key else "",
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
            repeated = sum(d.receipt.upstream_id == ALREADY_DELIVERED for d in outcome.delivered)
            if repeated:
                message += (f"; already sent to {repeated} recipient(s) under this "
                            "idempotency key, not sent again")
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


def _retry_key(request: web.Request, key: str, index: int) -> str:
    """What identifies one message of one request across its retries: the endpoint, the
    agent's idempotency key and the message's place in the request ("" without a key)."""
    return f"postmark{request.path.rstrip('/')}\0{key}\0{index}" if key else ""


def _copies(item: Any) -> int:
    """The recipient copies a message asks for (none if it will be refused anyway)."""
    if not isinstance(item, dict):
        return 0
    try:
        return len({a for k in ("To", "Cc", "Bcc") for _, a in _addresses(item, k)})
    except RequestProblem:
        return 0


def _is_small(item: Any) -> bool:
    """Whether preparing the message is cheaper than handing it to a worker thread."""
    if not isinstance(item, dict):
        return True
    attachments = item.get("Attachments")
    total = sum(len(value) for value in item.values() if isinstance(value, str))
    if isinstance(attachments, list):
        total += sum(
            len(entry.get("Content") or "") for entry in attachments
            if isinstance(entry, dict) and isinstance(entry.get("Content"), str)
        )
    return total <= SMALL_REQUEST_CHARS
