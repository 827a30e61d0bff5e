"""Inbound SMS from Twilio: STOP-family replies opt the sender out, START-family back in.

The request must carry a valid `X-Twilio-Signature` for the configured auth token; anything
else is refused before it can touch the suppression list, and counted
(`gateway_webhook_signature_failures_total{provider="twilio"}`): Twilio does not redeliver a
refused inbound message, so a wrong auth token or public_url loses every STOP it carries.

The signature covers the URL and the parameters, never a time, so a signed request can be
sent again at any later moment and still verifies. Every processed `MessageSid` is kept in
the store (every replica sees it): a request whose sid was processed is answered 200 with
nothing done. Twilio's inbound-message parameters carry no timestamp, so the order of an
opt-out and an opt-in is the order the gateway received them, with a margin for the
deliveries that can arrive out of order: a START lifts only a STOP written at least
`OPT_IN_REORDER_WINDOW` before the START arrived, and an opt-out always applies. The check
of the sid, the change and the sid's record are each a store call; a failure of any answers
503 (Twilio retries) and leaves the sid unrecorded, so the retry is processed in full.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web

from gateway.addresses import e164
from gateway.auth.webhook_signatures import signature_matches
from gateway.model import SenderIdentity
from gateway.rewrite.footer import contact_parts
from gateway.rules.keywords import classify_inbound_text
from gateway.rules.ruleset import RuleSet
from gateway.runtime.client_address import client_address
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.services.suppressions import Suppressions
from gateway.store.base import Store, StoreUnavailable
from gateway.web.pages import read_form

log = logging.getLogger("gateway.twilio_webhook")

KEYWORD_SOURCE = "sms-keyword"
PROVIDER_OPT_OUT_SOURCE = "twilio-21610"
MAX_WEBHOOK_BYTES = 64 * 1024
# Twilio ends its retries of one webhook within 15 s of the first attempt (the connection
# override `tt`, "the total time allowed for all timeouts including retries", is at most
# 15000 ms), so a START sent before a STOP arrives at most 15 s after the STOP, however
# Twilio retried it; the other 15 s cover clocks of replicas that disagree and a slow store.
OPT_IN_REORDER_WINDOW = timedelta(seconds=30)
# What a Twilio message id may look like (SM/MM and 32 hex digits today); anything longer is
# not one, and is not stored.
MAX_MESSAGE_SID_CHARS = 64


def twiml(reply: str | None) -> web.Response:
    """At most one confirmation text, as the FCC allows after a revocation."""
    inner = f"<Message>{html.escape(reply)}</Message>" if reply else ""
    return web.Response(
        text=f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>',
        content_type="application/xml",
    )


class TwilioWebhookRoutes:
    def __init__(
        self,
        auth_token: str,
        public_url: str,
        suppressions: Suppressions,
        store: Store,
        rules: Callable[[], RuleSet],
        identity: SenderIdentity,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.auth_token = auth_token
        self.public_url = public_url
        self.suppressions = suppressions
        self.store = store
        self.rules = rules
        self.identity = identity
        self.clock = clock
        self.signature_failures = metrics.webhook_signature_failures.labels("twilio")

    def register(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/twilio", self.inbound)

    async def inbound(self, request: web.Request) -> web.Response:
        received_at = self.clock.now()  # the order of arrival, before any slow store call
        try:
            posted = await read_form(request, MAX_WEBHOOK_BYTES)
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="request too large")
        except ValueError:
            return web.Response(status=400, text="malformed form body")
        params = [(k, v) for k, v in posted.items() if isinstance(v, str)]
        urls = [self.public_url + request.path_qs]
        with contextlib.suppress(ValueError):  # a Host header with a bad port
            urls.append(str(request.url))
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature_matches(self.auth_token, urls, params, signature):
            self.signature_failures.inc()
            log_event(log, "webhook-signature-invalid", logging.WARNING,
                      peer=client_address(request))
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        try:
            return await self._handle(dict(params), received_at)
        except StoreUnavailable as exc:
            log_event(log, "webhook-store-unavailable", logging.ERROR, error=str(exc))
            return web.Response(status=503, text="store unavailable; opt-out not recorded")

    async def _handle(self, fields: dict[str, str], received_at: datetime) -> web.Response:
        if fields.get("ErrorCode") == "21610" and fields.get("To"):
            # A status callback for an outbound message: Twilio sends one per status with
            # the same MessageSid, so it is not a replay; adding the opt-out again is a no-op.
            await self.suppressions.add(
                [e164(fields["To"])], source=PROVIDER_OPT_OUT_SOURCE,
                reason="Twilio reported the recipient unsubscribed (21610)", actor="provider",
            )
            return twiml(None)
        sid = message_sid(fields)
        if sid and await self.store.inbound_seen(sid):
            log_event(log, "webhook-replayed", message_sid=sid)
            return twiml(None)
        answer = await self._act(fields, sid, received_at)
        # Recorded after the change: a failure in between answers 503 and the retry makes
        # the same change again (an opt-out twice is one opt-out; a START finds nothing left
        # to lift), where recording first could lose an opt-out for good.
        if sid:
            await self.store.record_inbound(sid, received_at)
        return answer

    async def _act(self, fields: dict[str, str], sid: str, received_at: datetime) -> web.Response:
        sender = e164(fields.get("From", ""))
        intent = classify_inbound_text(fields.get("Body", ""), self.rules().calling.keywords)
        if not sender or intent is None:
            return twiml(None)
        name = self.identity.name or "us"
        if intent == "opt_out":
            newly = await self.suppressions.add(
                [sender], source=KEYWORD_SOURCE,
                reason=f"replied {fields.get('Body', '')[:60]!r}", actor="recipient",
            )
            log_event(log, "opted-out", source="sms", recipient=sender, new=bool(newly))
            # One confirmation per opt-out: a repeated STOP gets none (FCC 24-24 allows one).
            return twiml(
                f"You are unsubscribed from {name} and will receive no more messages. "
                "Reply START to resubscribe." if newly else None
            )
        if intent == "opt_in":
            if not sid:
                # Without its id a START cannot be told from a replay: it lifts nothing.
                log_event(log, "opt-in-without-message-sid", logging.WARNING, recipient=sender)
                return twiml(None)
            lifted = await self.suppressions.remove_from_source(
                [sender], KEYWORD_SOURCE, actor="recipient",
                recorded_before=received_at - OPT_IN_REORDER_WINDOW,
            )
            still = await self.store.suppressed([sender])
            log_event(log, "opted-in", source="sms", recipient=sender, lifted=lifted,
                      still_suppressed=bool(still), message_sid=sid)
            resubscribed = lifted and not still
            return twiml(f"You are resubscribed to {name}. Reply STOP to opt out."
                         if resubscribed else None)
        contacts = " or ".join(contact_parts(self.identity)) or "the sender"
        return twiml(f"{name}: for help contact {contacts}. Reply STOP to opt out.")


def message_sid(fields: dict[str, str]) -> str:
    """The inbound message's id: `MessageSid` (`SmsSid` and `SmsMessageSid` are the same
    value under older names), or "" when there is none fit to keep."""
    sid = fields.get("MessageSid") or fields.get("SmsMessageSid") or fields.get("SmsSid") or ""
    sid = sid.strip()
    return sid if 0 < len(sid) <= MAX_MESSAGE_SID_CHARS and sid.isprintable() else ""
