"""Postmark's webhooks: hard bounces, spam complaints and subscription changes.

Postmark sends Basic-auth credentials placed in the webhook URL; requests without the
configured ones are refused, so nobody else can suppress (or unsuppress) addresses, and
counted (`gateway_webhook_signature_failures_total{provider="postmark"}`): a refused
complaint or unsubscribe is one the gateway never learns until Postmark's retries succeed.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.addresses import InvalidAddress, suppression_key
from gateway.auth.credentials import basic_credentials, same_secret
from gateway.config.settings import PostmarkWebhookConfig
from gateway.runtime.input_limits import read_json
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.services.suppressions import Suppressions
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.postmark_webhook")

SOURCE_PREFIX = "postmark:"
HARD_BOUNCE_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
MAX_WEBHOOK_BYTES = 256 * 1024


class PostmarkWebhookRoutes:
    def __init__(
        self, credentials: PostmarkWebhookConfig, suppressions: Suppressions, store: Store,
        metrics: Metrics,
    ) -> None:
        self.credentials = credentials
        self.suppressions = suppressions
        self.store = store
        self.credential_failures = metrics.webhook_signature_failures.labels("postmark")

    def register(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/postmark", self.receive)

    def _authorized(self, request: web.Request) -> bool:
        credentials = basic_credentials(request.headers.get("Authorization", ""))
        if not self.credentials.password or credentials is None:
            return False
        user, password = credentials
        return same_secret(user, self.credentials.username) & same_secret(
            password, self.credentials.password
        )

    async def receive(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.credential_failures.inc()
            return web.json_response({"error": "webhook credentials required"}, status=401)
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            return web.json_response({"error": "payload too large"}, status=413)
        try:
            event = read_json(await request.read())
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "invalid JSON"}, status=400)
        if not isinstance(event, dict) or not isinstance(event.get("RecordType"), str):
            return web.json_response({"error": "not a Postmark webhook event"}, status=400)
        try:
            outcome = await self._apply(event)
        except InvalidAddress as exc:
            return web.json_response({"error": f"invalid address: {exc}"}, status=400)
        except StoreUnavailable as exc:
            log_event(log, "webhook-store-unavailable", logging.ERROR, error=str(exc))
            return web.json_response({"error": "store unavailable; retry"}, status=503)
        return web.json_response({"status": outcome})

    async def _apply(self, event: dict[str, Any]) -> str:
        """Postmark retries a webhook that fails, so every branch is idempotent."""
        record_type = event["RecordType"]
        if record_type == "Bounce":
            if event.get("Type") not in HARD_BOUNCE_TYPES:
                return "ignored: not a hard bounce"
            return await self._suppress(event.get("Email"), f"{SOURCE_PREFIX}hard-bounce",
                                        f"hard bounce: {event.get('Description', '')}"[:200])
        if record_type == "SpamComplaint":
            return await self._suppress(event.get("Email"), f"{SOURCE_PREFIX}spam-complaint",
                                        "spam complaint")
        if record_type == "SubscriptionChange":
            address = event.get("Recipient")
            if event.get("SuppressSending") is True:
                reason = str(event.get("SuppressionReason") or "subscription change")
                return await self._suppress(address, f"{SOURCE_PREFIX}{reason}", reason)
            if event.get("SuppressSending") is False:
                return await self._reactivate(address)
        return f"ignored: {record_type}"

    async def _suppress(self, address: object, source: str, reason: str) -> str:
        if not isinstance(address, str):
            raise InvalidAddress("the event names no address")
        await self.suppressions.add([address], source=source, reason=reason, actor="postmark")
        log_event(log, "suppressed", source=source, recipient=suppression_key(address))
        return "suppressed"

    async def _reactivate(self, address: object) -> str:
        """Only suppressions Postmark caused are lifted: an opt-out taken through the gateway
        or an operator's suppression stays."""
        if not isinstance(address, str):
            raise InvalidAddress("the event names no address")
        key = suppression_key(address)
        lifted = await self.suppressions.remove_with_source_prefix(
            [key], SOURCE_PREFIX, actor="postmark"
        )
        log_event(log, "reactivated", recipient=key, lifted=lifted)
        return f"reactivated ({lifted} Postmark suppression lifted)"
