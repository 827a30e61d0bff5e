"""The one pipeline every outbound message goes through, whatever its channel or ingress.

gather facts -> decide (pure) -> record blocks -> render per recipient -> forward -> record
decisions -> count. Ingress adapters build an `OutboundMessage` and translate the result or
the exception into their protocol's reply; egress adapters render and send one recipient's
copy.

Every decision is in the decision log before the agent is answered: a blocked recipient's
with its block, an allowed one's once the upstream has answered (its id is known only then),
all of a message's in one write. A copy the upstream refused for good is recorded as
allowed with the refusal as its upstream answer, and so is one handed over whose answer never
came (it may be out); a copy that certainly did not go out (a temporary failure before the
provider had it) is not recorded: the agent retries, and the retry is decided and recorded.
A copy the delivery ledger says went out under an earlier attempt is not recorded again.
If the log cannot be written (once copies are out: for about a second), the agent gets a
temporary failure, saying whether copies may be out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn, Protocol

from gateway.model import (
    BlockRecord,
    Decision,
    DecisionOutcome,
    DecisionRecord,
    Facts,
    KnownLocation,
    OutboundMessage,
    Reason,
    Receipt,
    RecipientDecision,
    UpstreamPermanentError,
    UpstreamTemporaryError,
)
from gateway.pipeline.evidence import (
    UpstreamAnswer,
    accepted,
    decision_record,
    loggable,
    refused,
    unanswered,
)
from gateway.pipeline.facts import TemplateCheck, gather_facts
from gateway.policy import SMS_OPT_OUT_NOTICE, decide
from gateway.rules.calling import period_text
from gateway.rules.ruleset import RuleSet
from gateway.runtime.background import BackgroundWrites
from gateway.runtime.clock import Clock
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.services.suppressions import Suppressions
from gateway.store.base import DeliveryClaim, Store, StoreUnavailable

log = logging.getLogger("gateway.pipeline.process")

STALE_DELIVERY_CLAIM_S = 600.0
# The receipt of a copy the delivery ledger says went out already: not sent again.
ALREADY_DELIVERED = "already-delivered"
INLINE_RENDER_BYTES = 256 * 1024
INLINE_MIME_BYTES = 64 * 1024
INLINE_MIME_PARTS = 16
# Pauses between attempts to record the decisions of copies already out (about a second).
DECISION_RETRIES_S = (0.1, 0.3, 0.6)


class TemporaryFailure(Exception):
    """Nothing unchecked was sent; the agent should retry (SMTP 451, HTTP 503).

    `maybe_delivered`: the provider may have accepted the copy after all (a timeout after
    handing it over), so it still counts towards caps; from `process`, some copy of the
    message may be out (or is: other recipients'), so the agent must check before resending.
    """

    def __init__(self, reason: str, text: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text
        self.maybe_delivered = maybe_delivered


class CopyRefused(Exception):
    """An egress refuses one recipient's copy as rendered (a MIME copy over the size the
    gateway forwards): recorded as a block for that recipient before any of it is sent."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"{reason.code}: {reason.message}")
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    recipient: str
    receipt: Receipt


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
    decision_ids: tuple[int, ...] = ()


class Egress(Protocol):
    """One channel's last mile: render one recipient's copy, hand it to the provider."""

    name: str

    def render(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> bytes:
        """Runs in a worker thread unless `renders_inline`: it may be CPU-heavy (MIME)."""

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> Receipt: ...

    def rewrites(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> list[dict[str, str]]:
        """What `render` adds to the copy (footer, headers, notice), for the decision log."""


def delivery_key(account: str, sender: str, content: bytes) -> str:
    """Identifies 'the same message' across agent retries, for the delivery ledger."""
    digest = hashlib.sha256()
    for part in (account.encode(), sender.encode(), content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def renders_inline(message: OutboundMessage) -> bool:
    """Filling in fields, a template model or a form, or rewriting a small, simple MIME
    message, costs less than the hop to a thread and back; other MIME work runs in a worker
    thread, so that it cannot stall the event loop."""
    email = message.email
    if email is None:
        return True
    if email.mime is None:
        return email.size <= INLINE_RENDER_BYTES
    return is_small_mime(email.size, sum(1 for _ in email.mime.walk()))


def is_small_mime(size: int, parts: int) -> bool:
    """MIME work grows with size and with the number of parts: a CPU-bound worker thread
    also makes every other thread (the store's, the spool's) wait for the GIL, so the work
    of an ordinary message is cheaper done in place."""
    return size <= INLINE_MIME_BYTES and parts <= INLINE_MIME_PARTS


def _recipient_evidence(decision: Decision, recipient: str) -> Mapping[str, object]:
    evidence = decision.evidence.get(recipient)
    return evidence if isinstance(evidence, Mapping) else {}


def blocked_by_cap(decision: Decision, recipient: str) -> Decision:
    """The decision with `recipient` blocked by the cap the store just enforced."""
    claims = [c for c in decision.caps if c.recipient == recipient]
    reason = Reason(
        "FREQUENCY_CAP",
        "; ".join(
            f"{c.limit} contacts per {period_text(c.window_s)} reached ({c.rule})"
            for c in claims
        ),
        claims[0].rule,
    )
    return blocked_for(decision, recipient, reason)


def blocked_for(decision: Decision, recipient: str, reason: Reason) -> Decision:
    """The decision with `recipient` blocked for `reason` as well."""
    return replace(
        decision,
        recipients=tuple(
            replace(r, reasons=(*r.reasons, reason)) if r.recipient == recipient else r
            for r in decision.recipients
        ),
    )


class Pipeline:
    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleSet],
        egress: dict[str, Egress],
        clock: Clock,
        metrics: Metrics,
        suppressions: Suppressions,
        template_check: TemplateCheck | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.egress = egress
        self.clock = clock
        self.metrics = metrics
        self.suppressions = suppressions
        self.template_check = template_check
        self.background = BackgroundWrites()
        # Recipient -> when a text carrying the opt-out notice went out, until the store
        # has it: the answer does not wait for that write.
        self._notices_being_recorded: dict[str, datetime] = {}

    async def evaluate(
        self,
        message: OutboundMessage,
        *,
        at: datetime | None = None,
        known_locations: Mapping[str, KnownLocation] | None = None,
    ) -> Decision:
        """Facts then decision, with no side effects: used by `check` and before sending.

        `at` and `known_locations` let a dry run ask about another time or a callee whose
        location the registry does not know yet.
        """
        decision, _, _ = await self._decide(message, at, known_locations)
        return decision

    async def _decide(
        self,
        message: OutboundMessage,
        at: datetime | None = None,
        known_locations: Mapping[str, KnownLocation] | None = None,
    ) -> tuple[Decision, Facts, datetime]:
        """The decision, the facts it was made on (for the evidence) and when."""
        started = self.clock.monotonic()
        rules, now = self.rules(), at or self.clock.now()
        try:
            facts = await gather_facts(
                self.store, message, rules, now, known_locations, self.template_check,
                self._notices_being_recorded,
            )
        except StoreUnavailable as exc:
            self._store_failed(message, "facts", exc)
        except UpstreamTemporaryError as exc:
            self._count(message, "failed", "UPSTREAM_UNAVAILABLE")
            raise TemporaryFailure("UPSTREAM_UNAVAILABLE", f"template check: {exc}") from exc
        decision = decide(message, facts, rules, now)
        self.metrics.decision_seconds.labels(message.channel.value).observe(
            self.clock.monotonic() - started
        )
        return decision, facts, now

    async def screen(self, message: OutboundMessage) -> tuple[Decision, tuple[int, ...]]:
        """Decide and record the blocks (and their decisions), without sending (e.g. SMTP's
        RCPT stage: the decisions of the recipients it lets through are made, and
        recorded, again at DATA)."""
        decision, facts, now = await self._decide(message)
        block_ids, records = await self._record_blocks(message, decision, facts, now)
        await self._record_decisions(message, records, sent=False)
        return decision, block_ids

    async def reject(self, message: OutboundMessage, reason: Reason) -> tuple[int, ...]:
        """Record a request refused before any decision (a malformed API call) as a block,
        so the block log shows every refusal, and the decision log too."""
        decision = Decision(
            message_reasons=(reason,),
            recipients=tuple(RecipientDecision(r) for r in message.recipients or ("",)),
            rules_applied=(reason.rule,),
            rules_version=self.rules().version,
        )
        block_ids, records = await self._record_blocks(
            message, decision, None, self.clock.now()
        )
        await self._record_decisions(message, records, sent=False)
        return block_ids

    async def process(self, message: OutboundMessage) -> Outcome:
        decision, facts, now = await self._decide(message)
        block_ids, records = await self._record_blocks(message, decision, facts, now)
        delivered: list[Delivery] = []
        refusals: list[Refusal] = []
        temporary: list[str] = []
        maybe_delivered = False
        for recipient in decision.allowed_recipients:
            if not await self._within_caps(message, decision, recipient):
                decision = blocked_by_cap(decision, recipient)
                ids, blocked = await self._record_blocks(
                    message, decision, facts, now, only=recipient
                )
                block_ids, records = block_ids + ids, records + blocked
                continue
            try:
                delivery = await self._deliver(message, decision, recipient)
            except CopyRefused as exc:
                await self._release_contact(message, recipient)
                decision = blocked_for(decision, recipient, exc.reason)
                ids, blocked = await self._record_blocks(
                    message, decision, facts, now, only=recipient
                )
                block_ids, records = block_ids + ids, records + blocked
            except UpstreamPermanentError as exc:
                refusals.append(Refusal(recipient, exc))
                records.append(self._sent_record(
                    message, decision, facts, now, recipient, refused(self._upstream(message), exc)
                ))
                self._count(message, "failed", "UPSTREAM_REJECTED")
                await self._release_contact(message, recipient)
                await self._suppress_if_inactive(message, recipient, exc)
            except TemporaryFailure as exc:
                temporary.append(f"{recipient}: {exc.text}")
                maybe_delivered = maybe_delivered or exc.maybe_delivered
                self._count(message, "failed", exc.reason)
                if exc.maybe_delivered:
                    records.append(self._sent_record(
                        message, decision, facts, now, recipient,
                        unanswered(self._upstream(message), exc.text),
                    ))
                else:
                    await self._release_contact(message, recipient)
            else:
                delivered.append(delivery)
                if delivery.receipt.upstream_id != ALREADY_DELIVERED:
                    records.append(self._sent_record(
                        message, decision, facts, now, recipient,
                        accepted(self._upstream(message), delivery.receipt),
                        message.id if message.gateway_id_given else delivery.receipt.upstream_id,
                    ))
                self._count(message, "allowed", "")
                self._note_obligations_met(decision, recipient)
        out = maybe_delivered or bool(delivered) or bool(refusals)
        decision_ids = await self._record_decisions(message, records, sent=out)
        if temporary:
            # Some copies may be out: the agent must not be told that nothing was sent.
            if delivered:
                temporary.append("delivered to " + ", ".join(d.recipient for d in delivered))
            raise TemporaryFailure(
                "UPSTREAM_UNAVAILABLE", "; ".join(temporary),
                maybe_delivered=maybe_delivered or bool(delivered),
            )
        return Outcome(
            decision, tuple(delivered), tuple(refusals), block_ids, tuple(decision_ids)
        )

    def _upstream(self, message: OutboundMessage) -> str:
        return self.egress[message.channel.value].name

    def _sent_record(
        self,
        message: OutboundMessage,
        decision: Decision,
        facts: Facts,
        now: datetime,
        recipient: str,
        answer: UpstreamAnswer,
        upstream_id: str | None = None,
    ) -> DecisionRecord:
        """An allowed recipient's decision, once its copy was handed to the upstream."""
        rules = self.rules()
        egress = self.egress[message.channel.value]
        return decision_record(
            message, decision, recipient, (), rules, now, facts,
            rewrites=egress.rewrites(message, recipient, decision, rules),
            upstream=answer, upstream_id=upstream_id,
        )

    async def _record_decisions(
        self, message: OutboundMessage, records: list[DecisionRecord], *, sent: bool
    ) -> list[int]:
        """One write for the message's decisions, before the agent is answered: durable
        when one is a block (as the block is), else without waiting for the disk (the
        copies are out, and their provider keeps its own record). Once a copy
        is out, a failed write is retried for about a second (DECISION_RETRIES_S): the
        agent would otherwise be told the copy may be out, and an agent without an
        idempotency key would send it again. If it still fails, the agent gets a temporary
        failure, and the records go to the log whole (what went out stays known)."""
        if not records:
            return []
        pauses = (*DECISION_RETRIES_S, None) if sent else (None,)
        durable = any(record.outcome is DecisionOutcome.BLOCKED for record in records)
        for pause in pauses:
            try:
                return await self.store.record_decisions(records, durable=durable)
            except StoreUnavailable as exc:
                self.metrics.store_errors.labels("record_decisions").inc()
                failure = exc
            if pause is not None:
                await asyncio.sleep(pause)
        log_event(
            log, "decisions-not-recorded", logging.ERROR, gateway_id=message.id,
            error=str(failure), sent=sent, decisions=[loggable(record) for record in records],
        )
        text = "store unavailable (record_decisions)"
        if sent:
            text += ": copies were handed to the upstream; check before sending again"
        raise TemporaryFailure("STORE_UNAVAILABLE", text, maybe_delivered=sent) from failure

    async def _within_caps(
        self, message: OutboundMessage, decision: Decision, recipient: str
    ) -> bool:
        """Count this contact, atomically checking every cap the decision named for it.

        Calls and texts are always counted (a cap applies to contacts made before it was
        reached too); email is not counted.
        """
        if not message.channel.is_telephony:
            return True
        limits = [(c.limit, c.window_s) for c in decision.caps if c.recipient == recipient]
        try:
            return await self.store.reserve_contact(
                recipient, message.channel, self.clock.now(), message.id, limits
            )
        except StoreUnavailable as exc:
            self._store_failed(message, "reserve_contact", exc)

    async def _best_effort(self, operation: str, write: Awaitable[object]) -> None:
        """A store write whose loss is safe (it can only cause a stricter outcome later):
        counted and logged, never failing the message."""
        try:
            await write
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels(operation).inc()
            log_event(log, "store-write-lost", logging.WARNING, operation=operation,
                      error=str(exc))

    async def _release_contact(self, message: OutboundMessage, recipient: str) -> None:
        """A contact that was not made must not count towards a cap (losing this only
        makes the cap stricter)."""
        if message.channel.is_telephony:
            await self._best_effort(
                "release_contact", self.store.release_contact(recipient, message.id)
            )

    def _note_obligations_met(self, decision: Decision, recipient: str) -> None:
        """Recorded after the answer: until the store has it, this process's decisions see
        it in memory. Losing it, or another process not seeing it yet, only means the next
        text carries the notice again."""
        if SMS_OPT_OUT_NOTICE in decision.obligations:
            at = self.clock.now()
            self._notices_being_recorded[recipient] = at
            self.background.start(self._record_notice(recipient, at))

    async def _record_notice(self, recipient: str, at: datetime) -> None:
        try:
            await self._best_effort(
                "mark_notice_sent", self.store.mark_notice_sent(recipient, at)
            )
        finally:
            if self._notices_being_recorded.get(recipient) == at:
                del self._notices_being_recorded[recipient]

    async def _suppress_if_inactive(
        self, message: OutboundMessage, recipient: str, error: UpstreamPermanentError
    ) -> None:
        """A provider saying the recipient opted out (Twilio 21610) is an opt-out here too."""
        if not error.recipient_inactive:
            return
        try:
            await self.suppressions.add(
                [recipient],
                source=f"{self.egress[message.channel.value].name}-refusal",
                reason=f"provider refused: {error.code} {error.text}"[:200],
                actor="provider",
            )
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("add_suppressions").inc()
            log_event(log, "provider-opt-out-not-recorded", logging.ERROR, error=str(exc))

    async def _record_blocks(
        self,
        message: OutboundMessage,
        decision: Decision,
        facts: Facts | None,
        now: datetime,
        only: str | None = None,
    ) -> tuple[tuple[int, ...], list[DecisionRecord]]:
        """A block is durable before anyone is told about it. Returns the block ids and the
        blocked recipients' decisions, for the caller to record before it answers."""
        ids = []
        records = []
        rules = self.rules()
        for blocked in decision.blocked_recipients:
            if only is not None and blocked.recipient != only:
                continue
            record = self._block_record(message, decision, blocked)
            try:
                ids.append(await self.store.record_block(record))
            except StoreUnavailable as exc:
                self._store_failed(message, "record_block", exc)
            records.append(decision_record(
                message, decision, blocked.recipient, blocked.reasons, rules, now, facts
            ))
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
        return tuple(ids), records

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
            evidence=_recipient_evidence(decision, blocked.recipient),
        )

    async def _deliver(
        self, message: OutboundMessage, decision: Decision, recipient: str
    ) -> Delivery:
        egress = self.egress[message.channel.value]
        claim = await self._claim(message, recipient)
        if claim is DeliveryClaim.ALREADY_DELIVERED:
            log_event(log, "duplicate-skipped", gateway_id=message.id, recipient=recipient)
            return Delivery(recipient, Receipt(ALREADY_DELIVERED))
        if claim is DeliveryClaim.IN_FLIGHT:
            raise TemporaryFailure("IN_FLIGHT", "the same message is being delivered right now")
        # Once claimed, an agent hanging up must not cut the send off between the provider
        # accepting and the ledger recording it: that is how duplicates happen. Shutdown
        # waits for the send too (`background`), so its claim is recorded or released
        # before the store closes.
        receipt = await asyncio.shield(
            self.background.start(self._send_claimed(egress, message, decision, recipient))
        )
        log_event(
            log,
            "delivered",
            gateway_id=message.id,
            channel=message.channel.value,
            account=message.account.name,
            recipient=recipient,
            upstream=egress.name,
            upstream_id=receipt.upstream_id,
        )
        return Delivery(recipient, receipt)

    async def _send_claimed(
        self, egress: Egress, message: OutboundMessage, decision: Decision, recipient: str
    ) -> Receipt:
        """Render and send one claimed copy; the claim is released only when nothing went out
        (a copy the egress refuses as rendered, `CopyRefused`, included)."""
        try:
            if renders_inline(message):
                payload = egress.render(message, recipient, decision, self.rules())
            else:
                payload = await asyncio.to_thread(
                    egress.render, message, recipient, decision, self.rules()
                )
        except BaseException:
            await self._release(message, recipient)
            raise
        started = self.clock.monotonic()
        result = "accepted"
        try:
            receipt = await egress.send(message, recipient, payload)
        except UpstreamPermanentError:
            result = "refused"
            await self._release(message, recipient)
            raise
        except UpstreamTemporaryError as exc:
            result = "unavailable"
            if not exc.maybe_delivered:
                await self._release(message, recipient)
            raise TemporaryFailure(
                "UPSTREAM_UNAVAILABLE", str(exc), maybe_delivered=exc.maybe_delivered
            ) from exc
        finally:
            self.metrics.upstream_seconds.labels(egress.name, result).observe(
                self.clock.monotonic() - started
            )
        await self._complete(message, recipient, receipt.upstream_id)
        return receipt

    async def _complete(self, message: OutboundMessage, recipient: str, upstream_id: str) -> None:
        """The provider has the message: record it, retrying briefly, since a claim left
        pending would let a retry resend once it goes stale."""
        if not message.idempotency_key:
            return
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
        """Messages without an idempotency key (texts and calls: two identical reminders are
        two messages) are not deduplicated."""
        if not message.idempotency_key:
            return DeliveryClaim.CLAIMED
        try:
            return await self.store.claim_delivery(
                message.idempotency_key, recipient, self.clock.now(), STALE_DELIVERY_CLAIM_S
            )
        except StoreUnavailable as exc:
            self._store_failed(message, "claim_delivery", exc)

    async def _release(self, message: OutboundMessage, recipient: str) -> None:
        """Losing this only makes a retry wait until the claim goes stale."""
        if message.idempotency_key:
            await self._best_effort(
                "release_delivery",
                self.store.release_delivery(message.idempotency_key, recipient),
            )

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
