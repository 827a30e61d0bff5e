"""Inbound SMS from Twilio: STOP-family replies opt the sender out, START-family back in.

The request must carry a valid `X-Twilio-Signature` for the configured auth token; anything
else is refused before it can touch the suppression list.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import Callable

from aiohttp import web

from gateway.addresses import e164
from gateway.auth.webhook_signatures import signature_matches
from gateway.model import SenderIdentity
from gateway.rewrite.footer import contact_parts
from gateway.rules.keywords import classify_inbound_text
from gateway.rules.ruleset import RuleSet
from gateway.runtime.logs import log_event
from gateway.services.suppressions import Suppressions
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.twilio_webhook")

KEYWORD_SOURCE = "sms-keyword"
PROVIDER_OPT_OUT_SOURCE = "twilio-21610"
MAX_WEBHOOK_BYTES = 64 * 1024


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
    ) -> None:
        self.auth_token = auth_token
        self.public_url = public_url
        self.suppressions = suppressions
        self.store = store
        self.rules = rules
        self.identity = identity

    def register(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/twilio", self.inbound)

    async def inbound(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            return web.Response(status=413, text="request too large")
        try:
            posted = await request.post()
        except ValueError:
            return web.Response(status=400, text="malformed form body")
        params = [(k, v) for k, v in posted.items() if isinstance(v, str)]
        urls = [self.public_url + request.path_qs]
        with contextlib.suppress(ValueError):  # a Host header with a bad port
            urls.append(str(request.url))
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature_matches(self.auth_token, urls, params, signature):
            log_event(log, "webhook-signature-invalid", logging.WARNING, peer=request.remote)
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        try:
            return await self._handle(dict(params))
        except StoreUnavailable as exc:
            log_event(log, "webhook-store-unavailable", logging.ERROR, error=str(exc))
            return web.Response(status=503, text="store unavailable; opt-out not recorded")

    async def _handle(self, fields: dict[str, str]) -> web.Response:
        if fields.get("ErrorCode") == "21610" and fields.get("To"):
            await self.suppressions.add(
                [e164(fields["To"])], source=PROVIDER_OPT_OUT_SOURCE,
                reason="Twilio reported the recipient unsubscribed (21610)", actor="provider",
            )
            return twiml(None)
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
            lifted = await self.suppressions.remove_from_source(
                [sender], KEYWORD_SOURCE, actor="recipient"
            )
            still = await self.store.suppressed([sender])
            log_event(log, "opted-in", source="sms", recipient=sender, lifted=lifted,
                      still_suppressed=bool(still))
            resubscribed = lifted and not still
            return twiml(f"You are resubscribed to {name}. Reply STOP to opt out."
                         if resubscribed else None)
        contacts = " or ".join(contact_parts(self.identity)) or "the sender"
        return twiml(f"{name}: for help contact {contacts}. Reply STOP to opt out.")
