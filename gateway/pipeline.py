"""The one pipeline every outbound message goes through, whatever its channel or ingress.

gather facts -> decide (pure) -> record blocks -> render per recipient -> forward -> count.
Ingress adapters build an `OutboundMessage` and translate the result or the exception into
their protocol's reply; egress adapters render and send one recipient's copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from gateway.addresses import InvalidAddress, email_key
from gateway.clock import Clock
from gateway.logs import log_event
from gateway.metrics import Metrics
from gateway.model import (
    BlockRecord,
    Decision,
    Facts,
    OutboundMessage,
    RecipientDecision,
)
from gateway.policy import decide
from gateway.rules import RuleSet
from gateway.store.base import DeliveryClaim, Store, StoreUnavailable
from gateway.upstream.base import UpstreamPermanentError, UpstreamTemporaryError

log = logging.getLogger("gateway.pipeline")

STALE_DELIVERY_CLAIM_S = 600.0


class TemporaryFailure(Exception):
    """Nothing unchecked was sent; the agent should retry (SMTP 451, HTTP 503)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class Delivery:
    recipient: str
    upstream_id: str


@dataclass(frozen=True)
class Refusal:
    recipient: str
    error: UpstreamPermanentError


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    delivered: tuple[Delivery, ...]
    refused: tuple[Refusal, ...]
    block_ids: tuple[int, ...]


class Egress(Protocol):
    """One channel's last mile: render one recipient's copy, hand it to the provider."""

    name: str

    def render(self, message: OutboundMessage, recipient: str, rules: RuleSet) -> bytes: ...

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> str: ...


def delivery_key(account: str, sender: str, content: bytes) -> str:
    """Identifies 'the same message' across agent retries, for the delivery ledger."""
    digest = hashlib.sha256()
    for part in (account.encode(), sender.encode(), content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class Pipeline:
    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleSet],
        egress: dict[str, Egress],
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.rules = rules
        self.egress = egress
        self.clock = clock
        self.metrics = metrics

    async def evaluate(self, message: OutboundMessage) -> Decision:
        """Facts then decision, with no side effects: used by `check` and before sending."""
        started = self.clock.monotonic()
        facts = await self._facts(message)
        decision = decide(message, facts, self.rules(), self.clock.now())
        self.metrics.decision_seconds.labels(message.channel.value).observe(
            self.clock.monotonic() - started
        )
        return decision

    async def screen(self, message: OutboundMessage) -> tuple[Decision, tuple[int, ...]]:
        """Decide and record the blocks, without sending (e.g. SMTP's RCPT stage)."""
        decision = await self.evaluate(message)
        return decision, await self._record_blocks(message, decision)

    async def process(self, message: OutboundMessage) -> Outcome:
        decision, block_ids = await self.screen(message)
        delivered: list[Delivery] = []
        refused: list[Refusal] = []
        temporary: list[str] = []
        for recipient in decision.allowed_recipients:
            try:
                delivery = await self._deliver(message, recipient)
            except UpstreamPermanentError as exc:
                refused.append(Refusal(recipient, exc))
                self._count(message, "failed", "UPSTREAM_REJECTED")
            except TemporaryFailure as exc:
                temporary.append(f"{recipient}: {exc.text}")
                self._count(message, "failed", exc.reason)
            else:
                delivered.append(delivery)
                self._count(message, "allowed", "")
        if temporary:
            raise TemporaryFailure("UPSTREAM_UNAVAILABLE", "; ".join(temporary))
        return Outcome(decision, tuple(delivered), tuple(refused), block_ids)

    async def _facts(self, message: OutboundMessage) -> Facts:
        keys = []
        for recipient in message.recipients:
            try:
                keys.append(email_key(recipient) if "@" in recipient else recipient)
            except InvalidAddress:
                continue
        try:
            suppressed = await self.store.suppressed(keys)
        except StoreUnavailable as exc:
            self._store_failed(message, "suppressed", exc)
        return Facts(suppressed=suppressed)

    async def _record_blocks(self, message: OutboundMessage, decision: Decision) -> tuple[int, ...]:
        """A block is durable before anyone is told about it."""
        ids = []
        for blocked in decision.blocked_recipients:
            record = self._block_record(message, decision, blocked)
            try:
                ids.append(await self.store.record_block(record))
            except StoreUnavailable as exc:
                self._store_failed(message, "record_block", exc)
            codes = [r.code for r in blocked.reasons]
            self._count(message, "blocked", codes[0])
            for code in dict.fromkeys(codes):
                self.metrics.block_reasons.labels(message.channel.value, code).inc()
            log_event(
                log,
                "blocked",
                gateway_id=message.id,
                channel=message.channel.value,
                account=message.account.name,
                recipient=blocked.recipient,
                reasons=codes,
                rules=[r.rule for r in blocked.reasons],
                rules_version=decision.rules_version,
            )
        return tuple(ids)

    def _block_record(
        self, message: OutboundMessage, decision: Decision, blocked: RecipientDecision
    ) -> BlockRecord:
        email = message.email
        return BlockRecord(
            time=self.clock.now(),
            channel=message.channel,
            account=message.account.name,
            sender=message.envelope_sender,
            recipient=blocked.recipient,
            reasons=blocked.reasons,
            rules_version=decision.rules_version,
            message_id=email.message_id if email else "",
            subject=email.subject if email else "",
            size=email.size if email else 0,
            gateway_id=message.id,
        )

    async def _deliver(self, message: OutboundMessage, recipient: str) -> Delivery:
        egress = self.egress[message.channel.value]
        claim = await self._claim(message, recipient)
        if claim is DeliveryClaim.ALREADY_DELIVERED:
            log_event(log, "duplicate-skipped", gateway_id=message.id, recipient=recipient)
            return Delivery(recipient, "already-delivered")
        if claim is DeliveryClaim.IN_FLIGHT:
            raise TemporaryFailure("IN_FLIGHT", "the same message is being delivered right now")
        # Once claimed, an agent hanging up must not cut the send off between the provider
        # accepting and the ledger recording it: that is how duplicates happen.
        upstream_id = await asyncio.shield(self._send_claimed(egress, message, recipient))
        log_event(
            log,
            "delivered",
            gateway_id=message.id,
            channel=message.channel.value,
            account=message.account.name,
            recipient=recipient,
            upstream=egress.name,
            upstream_id=upstream_id,
        )
        return Delivery(recipient, upstream_id)

    async def _send_claimed(self, egress: Egress, message: OutboundMessage, recipient: str) -> str:
        """Render and send one claimed copy; the claim is released only when nothing went out."""
        try:
            payload = await asyncio.to_thread(egress.render, message, recipient, self.rules())
        except BaseException:
            await self._release(message, recipient)
            raise
        started = self.clock.monotonic()
        result = "accepted"
        try:
            upstream_id = await egress.send(message, recipient, payload)
        except UpstreamPermanentError:
            result = "refused"
            await self._release(message, recipient)
            raise
        except UpstreamTemporaryError as exc:
            result = "unavailable"
            if not exc.maybe_delivered:
                await self._release(message, recipient)
            raise TemporaryFailure("UPSTREAM_UNAVAILABLE", str(exc)) from exc
        finally:
            self.metrics.upstream_seconds.labels(egress.name, result).observe(
                self.clock.monotonic() - started
            )
        await self._complete(message, recipient, upstream_id)
        return upstream_id

    async def _complete(self, message: OutboundMessage, recipient: str, upstream_id: str) -> None:
        """The provider has the message: record it, retrying briefly, since a claim left
        pending would let a retry resend once it goes stale."""
        for attempt in range(3):
            try:
                await self.store.complete_delivery(message.idempotency_key, recipient, upstream_id)
                return
            except StoreUnavailable as exc:
                self.metrics.store_errors.labels("complete_delivery").inc()
                log_event(
                    log, "ledger-write-failed", logging.WARNING, gateway_id=message.id,
                    attempt=attempt + 1, error=str(exc),
                )
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _claim(self, message: OutboundMessage, recipient: str) -> DeliveryClaim:
        try:
            return await self.store.claim_delivery(
                message.idempotency_key, recipient, self.clock.now(), STALE_DELIVERY_CLAIM_S
            )
        except StoreUnavailable as exc:
            self._store_failed(message, "claim_delivery", exc)

    async def _release(self, message: OutboundMessage, recipient: str) -> None:
        try:
            await self.store.release_delivery(message.idempotency_key, recipient)
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("release_delivery").inc()
            log_event(log, "ledger-release-failed", logging.WARNING, error=str(exc))

    def _store_failed(
        self, message: OutboundMessage, operation: str, exc: Exception
    ) -> NoReturn:
        self.metrics.store_errors.labels(operation).inc()
        self._count(message, "failed", "STORE_UNAVAILABLE")
        log_event(
            log, "store-unavailable", logging.ERROR, gateway_id=message.id,
            operation=operation, error=str(exc),
        )
        raise TemporaryFailure("STORE_UNAVAILABLE", f"store unavailable ({operation})") from exc

    def _count(self, message: OutboundMessage, outcome: str, reason: str) -> None:
        self.metrics.messages.labels(message.channel.value, outcome, reason).inc()
