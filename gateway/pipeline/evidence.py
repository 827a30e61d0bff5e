"""What the decision log keeps of one recipient's decision: the record and its evidence.

The evidence is what made the decision lawful or not, as it stood when it was made: the
callee's candidate zones with their local times, every rule applied with its citation (from
the rules in force, whose version the record names), the consent record relied on, the
suppression entries found, what the gateway added to the copy, and the upstream's answer.
Never a body: the footer and the SMS notice are the gateway's own text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.model import (
    Consent,
    Decision,
    DecisionOutcome,
    DecisionRecord,
    Facts,
    OutboundMessage,
    Reason,
    Receipt,
    UpstreamPermanentError,
)
from gateway.pipeline.facts import recipient_keys
from gateway.rules.ruleset import RuleSet

UpstreamAnswer = Mapping[str, object]

_CITATIONS: dict[tuple[str, str], dict[str, object]] = {}
"""(rules version, rule id) -> the rule's citation entry: a version's rules never change."""


def rule_citation(rules: RuleSet, rule_id: str) -> dict[str, object]:
    """The rule's id, citation and confidence (and dates, for calling rules), from the rules
    `rules` holds; nulls for an id they do not have (a request refused before any rule)."""
    cached = _CITATIONS.get((rules.version, rule_id))
    if cached is not None:
        return cached
    entry: dict[str, object] = {"id": rule_id, "citation": None, "confidence": None}
    for lookup in (rules.rule, rules.calling.rule):
        try:
            rule: Any = lookup(rule_id)
        except KeyError:
            continue
        entry = {"id": rule_id, "citation": rule.citation, "confidence": rule.confidence}
        effective, until = getattr(rule, "effective", None), getattr(rule, "until", None)
        if effective is not None or until is not None:
            entry["effective"] = effective.isoformat() if effective else None
            entry["until"] = until.isoformat() if until else None
        break
    if len(_CITATIONS) > 10_000:  # a long-running gateway reloading its rules many times
        _CITATIONS.clear()
    _CITATIONS[rules.version, rule_id] = entry
    return entry


def accepted(upstream: str, receipt: Receipt) -> dict[str, object]:
    """The provider's answer for a copy it accepted: its id and, where it says one, its
    status (never its whole document, which may repeat the body)."""
    answer: dict[str, object] = {"upstream": upstream, "accepted": True, "id": receipt.upstream_id}
    status = (receipt.document or {}).get("status")
    if isinstance(status, str):
        answer["status"] = status
    return answer


def refused(upstream: str, error: UpstreamPermanentError) -> dict[str, object]:
    return {"upstream": upstream, "accepted": False, "code": error.code, "error": error.text}


def unanswered(upstream: str, text: str) -> dict[str, object]:
    """A copy handed over whose answer never came: it may have been delivered."""
    return {"upstream": upstream, "accepted": None, "maybe_delivered": True, "error": text}


def decision_record(
    message: OutboundMessage,
    decision: Decision,
    recipient: str,
    reasons: Sequence[Reason],
    rules: RuleSet,
    now: datetime,
    facts: Facts | None,
    *,
    rewrites: Sequence[Mapping[str, object]] = (),
    upstream: UpstreamAnswer | None = None,
    upstream_id: str | None = None,
) -> DecisionRecord:
    """`reasons` empty: allowed. `facts` None: decided before any fact was read (a request
    refused as malformed)."""
    seen = decision.evidence.get(recipient)
    seen = seen if isinstance(seen, Mapping) else {}
    evidence: dict[str, object] = {
        "ingress": message.ingress,
        "zones": _zones(seen),
        "rules": _rules(rules, decision.rules_applied, reasons, seen),
        "consent": _consent(recipient, seen, facts),
        "suppression": _suppression_hits(message, recipient, rules, facts),
        "rewrites": [dict(rewrite) for rewrite in rewrites],
        "upstream": dict(upstream) if upstream is not None else None,
    }
    for key in ("country", "regions", "problem", "mime_repairs"):
        if key in seen:
            evidence[key] = seen[key]
    email = message.email
    return DecisionRecord(
        time=now,
        channel=message.channel,
        account=message.account.name,
        sender=message.envelope_sender,
        recipient=recipient,
        purpose=message.account.purpose,
        outcome=DecisionOutcome.BLOCKED if reasons else DecisionOutcome.ALLOWED,
        reasons=tuple(reasons),
        rules_version=decision.rules_version,
        key_id=message.account.key_id,
        upstream_id=upstream_id,
        subject=email.subject if email else "",
        gateway_id=message.id,
        evidence=evidence,
    )


def _zones(seen: Mapping[str, object]) -> list[dict[str, str]]:
    local_times = seen.get("local_times")
    if not isinstance(local_times, Mapping):
        return []
    return [{"zone": zone, "local_time": str(time)} for zone, time in local_times.items()]


def _rules(
    rules: RuleSet,
    applied: Iterable[str],
    reasons: Sequence[Reason],
    seen: Mapping[str, object],
) -> list[dict[str, object]]:
    """Every rule the decision applied (and any a reason names), each with its citation;
    what the decision noted of a rule for this recipient (the consent that met it, the
    exemption that lifted it) is added to its entry."""
    noted = seen.get("rules")
    noted = noted if isinstance(noted, Mapping) else {}
    ids = dict.fromkeys([*applied, *(r.rule for r in reasons), *noted])
    entries = []
    for rule_id in ids:
        entry = rule_citation(rules, rule_id)
        extra = noted.get(rule_id)
        if isinstance(extra, Mapping):
            entry = {**entry, **{k: v for k, v in extra.items() if k not in entry}}
        entries.append(entry)
    return entries


def _consent(
    recipient: str, seen: Mapping[str, object], facts: Facts | None
) -> dict[str, object] | None:
    """The consent record the decision relied on (the first rule it met or lifted), with
    its proof as the registry holds it."""
    noted = seen.get("rules")
    if not isinstance(noted, Mapping):
        return None
    for rule_id, entry in noted.items():
        used = entry.get("consent") if isinstance(entry, Mapping) else None
        if not isinstance(used, Mapping):
            continue
        record: dict[str, object] = {"subject": recipient, **used, "rule": rule_id}
        found = _matching(facts.consents.get(recipient, ()) if facts else (), used)
        if found is not None:
            record["evidence"] = found.evidence
        return record
    return None


def _matching(consents: Iterable[Consent], used: Mapping[str, object]) -> Consent | None:
    for consent in consents:
        if (
            consent.kind.value == used.get("kind")
            and consent.channel.value == used.get("channel")
            and consent.obtained_at.isoformat() == used.get("obtained_at")
            and consent.source == used.get("source")
        ):
            return consent
    return None


def _suppression_hits(
    message: OutboundMessage, recipient: str, rules: RuleSet, facts: Facts | None
) -> list[str]:
    """The suppression keys of the recipient found on the list (its spelling's, its
    mailbox's); empty when none was, or when no fact was read."""
    if facts is None or not facts.suppressed:
        return []
    if message.channel.is_telephony:
        return [recipient] if recipient in facts.suppressed else []
    return [key for key in recipient_keys(recipient, rules.mailboxes) if key in facts.suppressed]


def loggable(record: DecisionRecord) -> dict[str, object]:
    """A decision as the log line says it when the store could not take it."""
    return {
        "time": record.time.isoformat(),
        "channel": record.channel.value,
        "account": record.account,
        "recipient": record.recipient,
        "outcome": record.outcome.value,
        "reasons": [r.code for r in record.reasons],
        "rules_version": record.rules_version,
        "upstream_id": record.upstream_id,
        "upstream": record.evidence.get("upstream"),
    }
