"""Twilio's REST API for calls and texts, or an outbox of JSON files standing in for it.

Agents never hold the real Twilio credentials: the REST upstream sends with the gateway's
own AccountSid and auth token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from gateway.config.settings import TwilioUpstreamConfig
from gateway.model import (
    TWILIO_API_VERSION,
    Channel,
    Receipt,
    UpstreamPermanentError,
    UpstreamTemporaryError,
)
from gateway.runtime.clock import Clock
from gateway.runtime.ids import unique_hex
from gateway.upstream.spool import Spool

RESOURCES = {Channel.SMS: "Messages", Channel.CALL: "Calls"}
SID_PREFIXES = {"Messages": "SM", "Calls": "CA"}
OPTED_OUT = 21610
Form = Sequence[tuple[str, str]]


class TwilioUpstream(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, resource: str, form: Form) -> Receipt:
        """POST one Messages or Calls resource; the receipt carries Twilio's JSON for it."""


def new_sid(resource: str) -> str:
    return SID_PREFIXES[resource] + unique_hex()


def resource_path(account_sid: str, resource: str, sid: str = "") -> str:
    suffix = f"/{sid}" if sid else ""
    return f"/{TWILIO_API_VERSION}/Accounts/{account_sid}/{resource}{suffix}.json"


def form_as_json(form: Form) -> dict[str, str | list[str]]:
    """Form fields as a JSON object; a repeated field (MediaUrl) becomes a list."""
    result: dict[str, str | list[str]] = {}
    for name, value in form:
        if name in result:
            existing = result[name]
            result[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[name] = value
    return result


class OutboxTwilioUpstream:
    """Writes each accepted text or call as `{sid}.json` (the form as forwarded)."""

    name = "outbox"

    def __init__(self, directory: Path, config: TwilioUpstreamConfig, clock: Clock) -> None:
        self.directory = directory
        self.spool = Spool(directory)
        self.account_sid = config.account_sid
        self.clock = clock

    async def start(self) -> None:
        await self.spool.start()

    async def close(self) -> None:
        await self.spool.close()

    async def create(self, resource: str, form: Form) -> Receipt:
        sid = new_sid(resource)
        content = json.dumps(form_as_json(form), indent=2).encode()
        try:
            await self.spool.write(content, f"{sid}.json")
        except OSError as exc:
            raise UpstreamTemporaryError(f"outbox {self.directory}: {exc}") from exc
        return Receipt(sid, queued_resource(resource, sid, self.account_sid, form, self.clock))


def queued_resource(
    resource: str, sid: str, account_sid: str, form: Form, clock: Clock
) -> dict[str, object]:
    """The JSON Twilio answers for a freshly queued message or call."""
    fields = dict(form)
    now = format_datetime(clock.now(), usegmt=True)
    common: dict[str, object] = {
        "sid": sid,
        "account_sid": account_sid,
        "api_version": TWILIO_API_VERSION,
        "date_created": now,
        "date_updated": now,
        "direction": "outbound-api",
        "from": fields.get("From"),
        "to": fields.get("To"),
        "price": None,
        "price_unit": "USD",
        "status": "queued",
        "uri": resource_path(account_sid, resource, sid),
    }
    if resource == "Calls":
        return common | {
            "annotation": None, "answered_by": None, "caller_name": None, "duration": None,
            "end_time": None, "forwarded_from": None, "parent_call_sid": None,
            "phone_number_sid": None, "start_time": None, "queue_time": "0",
            "subresource_uris": {},
        }
    media = [value for name, value in form if name == "MediaUrl"]
    return common | {
        "body": fields.get("Body", ""),
        "date_sent": None,
        "error_code": None,
        "error_message": None,
        "messaging_service_sid": fields.get("MessagingServiceSid"),
        "num_media": str(len(media)),
        "num_segments": "1",
        "subresource_uris": {"media": resource_path(account_sid, f"Messages/{sid}/Media")},
    }


class RestTwilioUpstream:
    """Twilio's REST API at `base_url`, with the gateway's credentials."""

    name = "twilio"

    def __init__(self, config: TwilioUpstreamConfig) -> None:
        self.config = config
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        credentials = f"{self.config.account_sid}:{self.config.auth_token}".encode()
        self._session = aiohttp.ClientSession(
            headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
            timeout=self.timeout,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def create(self, resource: str, form: Form) -> Receipt:
        assert self._session is not None, "start() first"
        url = self.config.base_url + resource_path(self.config.account_sid, resource)
        try:
            async with self._session.post(url, data=list(form)) as response:
                body = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise UpstreamTemporaryError(
                f"Twilio did not answer within {self.timeout.total:g}s", maybe_delivered=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamTemporaryError(f"Twilio unreachable: {exc}") from exc
        return _receipt_or_error(status, body)


def _receipt_or_error(status: int, body: bytes) -> Receipt:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if 200 <= status < 300:
        if isinstance(document, dict) and "sid" in document:
            return Receipt(str(document["sid"]), document)
        raise UpstreamTemporaryError(
            f"Twilio answered {status} without a resource", maybe_delivered=True
        )
    if status in (401, 403):
        raise UpstreamTemporaryError(
            f"Twilio refused the gateway's own credentials ({status}): check "
            "upstream.twilio.account_sid and auth_token"
        )
    if status >= 500 or status == 429 or not isinstance(document, Mapping):
        raise UpstreamTemporaryError(f"Twilio answered {status}: {body[:200]!r}")
    try:
        code = int(document.get("code") or status)
    except (TypeError, ValueError):
        raise UpstreamTemporaryError(f"Twilio answered {status}: {body[:200]!r}") from None
    raise UpstreamPermanentError(
        code, str(document.get("message", "")), recipient_inactive=code == OPTED_OUT,
        status=status, document=document,
    )
