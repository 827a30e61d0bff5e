"""A fake Postmark API that records what it receives and misbehaves on request.

It is an aiohttp app on 127.0.0.1, port 0, in the test's own event loop, served at the root
(the `postmarker` SDK drops any path prefix of its root URL).

    async with FakePostmark() as postmark:
        upstream = PostmarkEmailUpstream(EmailUpstreamConfig(
            kind="postmark", server_token=SERVER_TOKEN, base_url=postmark.url))
        postmark.answer_next(422, {"ErrorCode": 406, "Message": "inactive"})
        ...
        assert postmark.requests[0].json["To"] == "jane@example.net"

Every request needs `X-Postmark-Server-Token` equal to the fake's token, as at Postmark
(401 with ErrorCode 10 otherwise). Queued answers and stalls apply, in the order they were
queued, to the next requests that got past that check, whatever their path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

HOST = "127.0.0.1"
SERVER_TOKEN = "fake-postmark-server-token"
SUBMITTED_AT = "2026-06-02T12:00:00.0000000-04:00"
INVALID_TOKEN = 10
INVALID_REQUEST = 300
INVALID_JSON = 402
TEMPLATE_NOT_FOUND = 1101
STREAM_NOT_FOUND = 1226

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived; `json` is None for an empty body, the text if not JSON."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any


@dataclass(frozen=True)
class _Answer:
    """Reply `status` with `body` (JSON for a dict, text/html for a str), or stall first."""

    stall: bool = False
    status: int = 0
    body: dict[str, Any] | str = ""


def error_document(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}


def suppression_entry(
    address: str,
    reason: str = "ManualSuppression",
    origin: str = "Recipient",
    created_at: str = "2026-06-01T09:30:00-04:00",
) -> dict[str, str]:
    """One entry of a suppression dump, shaped as Postmark lists it."""
    return {
        "EmailAddress": address,
        "SuppressionReason": reason,
        "Origin": origin,
        "CreatedAt": created_at,
    }


class FakePostmark:
    """The fake server. Enter it with `async with`; it listens at `url`.

    Configure `templates` with `add_template`, and `suppressions` (stream → dump entries,
    "outbound" and "broadcast" exist from the start). What it saw: `requests`, every request
    in arrival order, including refused ones; `accepted`, the bodies it answered with a
    MessageID (what Postmark would deliver), a stalled one once released.
    """

    def __init__(
        self, server_token: str = SERVER_TOKEN, port: int = 0, failure_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        """`port` 0 picks a free one; a given port brings a fake back where it was.
        `failure_rate` answers that share of requests, at random (seeded), with a 500 when
        no answer is queued."""
        self.server_token = server_token
        self.requests: list[RecordedRequest] = []
        self.accepted: list[dict[str, Any]] = []
        self.templates: dict[str, dict[str, Any]] = {}
        self.suppressions: dict[str, list[dict[str, Any]]] = {"outbound": [], "broadcast": []}
        self.port = port
        self.failure_rate = failure_rate
        self._random = random.Random(seed)
        self._answers: deque[_Answer] = deque()
        self._released = asyncio.Event()
        self._message_numbers = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    def answer_next(self, status: int, body: dict[str, Any] | str) -> None:
        """Answer the next request with `status` and `body` instead of the usual answer."""
        self._answers.append(_Answer(status=status, body=body))

    def stall_next(self) -> None:
        """Hold the next request (already recorded) until `release()` or the fake closes,
        then answer it as usual: Postmark took the message but its answer came late."""
        self._answers.append(_Answer(stall=True))

    def release(self) -> None:
        self._released.set()

    def add_template(
        self,
        template_id: int,
        *,
        alias: str | None = None,
        subject: str = "",
        html_body: str | None = None,
        text_body: str | None = None,
        layout: str | None = None,
        template_type: str = "Standard",
    ) -> dict[str, Any]:
        """Store a template under its id and its alias, as GET /templates/{idOrAlias} shows it."""
        document = {
            "TemplateId": template_id,
            "Name": alias or f"Template {template_id}",
            "Alias": alias,
            "Subject": subject,
            "HtmlBody": html_body,
            "TextBody": text_body,
            "AssociatedServerId": 1,
            "Active": True,
            "TemplateType": template_type,
            "LayoutTemplate": layout,
        }
        self.templates[str(template_id)] = document
        if alias:
            self.templates[alias] = document
        return document

    async def __aenter__(self) -> FakePostmark:
        app = web.Application(middlewares=[self._front_door])
        app.router.add_post("/email", self._email)
        app.router.add_post("/email/withTemplate", self._email_with_template)
        app.router.add_get("/templates/{id_or_alias}", self._template)
        app.router.add_get("/message-streams/{stream}/suppressions/dump", self._dump)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        self.release()
        await self._runner.cleanup()

    @web.middleware
    async def _front_door(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record, check the token, then a queued answer or stall, then the route."""
        raw = await request.read()
        valid_json = True
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload, valid_json = raw.decode("utf-8", "replace"), False
        self.requests.append(
            RecordedRequest(request.method, request.path, request.headers.copy(), payload)
        )
        if request.headers.get("X-Postmark-Server-Token") != self.server_token:
            return web.json_response(
                error_document(
                    INVALID_TOKEN,
                    "The Server Token you provided in the X-Postmark-Server-Token request "
                    "header was invalid. Please verify that you are using a valid token.",
                ),
                status=401,
            )
        if not self._answers and self._random.random() < self.failure_rate:
            return web.json_response(error_document(0, "injected failure"), status=500)
        if self._answers:
            answer = self._answers.popleft()
            if not answer.stall:
                if isinstance(answer.body, str):
                    return web.Response(
                        status=answer.status, text=answer.body, content_type="text/html"
                    )
                return web.json_response(answer.body, status=answer.status)
            await self._released.wait()
        if not valid_json:
            return web.json_response(
                error_document(INVALID_JSON, "Received invalid JSON input."), status=422
            )
        return await handler(request)

    async def _email(self, request: web.Request) -> web.Response:
        message = await _payload(request)
        problem = self._addressing_problem(message)
        if problem is None and not (message.get("TextBody") or message.get("HtmlBody")):
            problem = "Provide either email TextBody or HtmlBody or both."
        if problem is not None:
            return web.json_response(error_document(INVALID_REQUEST, problem), status=422)
        return self._accepted(message)

    async def _email_with_template(self, request: web.Request) -> web.Response:
        message = await _payload(request)
        problem = self._addressing_problem(message)
        if problem is not None:
            return web.json_response(error_document(INVALID_REQUEST, problem), status=422)
        reference = message.get("TemplateId") or message.get("TemplateAlias")
        if str(reference) not in self.templates:
            return web.json_response(
                error_document(
                    TEMPLATE_NOT_FOUND,
                    "The Template's 'TemplateId' associated with this request is not valid "
                    "or was not found.",
                ),
                status=422,
            )
        return self._accepted(message)

    async def _template(self, request: web.Request) -> web.Response:
        document = self.templates.get(request.match_info["id_or_alias"])
        if document is None:
            return web.json_response(
                error_document(TEMPLATE_NOT_FOUND, "The template was not found."), status=422
            )
        return web.json_response(document)

    async def _dump(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if stream not in self.suppressions:
            return web.json_response(
                error_document(
                    STREAM_NOT_FOUND, "The message stream for the provided 'ID' was not found."
                ),
                status=422,
            )
        return web.json_response({"Suppressions": self.suppressions[stream]})

    @staticmethod
    def _addressing_problem(message: Any) -> str | None:
        if not isinstance(message, dict):
            return "The request body must be a JSON object."
        if not message.get("From"):
            return "Invalid 'From' address: ''."
        if not message.get("To"):
            return "Zero recipients specified."
        return None

    def _accepted(self, message: dict[str, Any]) -> web.Response:
        number = next(self._message_numbers)
        self.accepted.append(message)
        return web.json_response(
            {
                "To": message["To"],
                "SubmittedAt": SUBMITTED_AT,
                "MessageID": f"00000000-0000-4000-8000-{number:012d}",
                "ErrorCode": 0,
                "Message": "OK",
            }
        )


async def _payload(request: web.Request) -> Any:
    """The JSON body the front door already checked (aiohttp keeps the bytes it read)."""
    raw = await request.read()
    return json.loads(raw) if raw else None
