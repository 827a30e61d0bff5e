"""Call and text rules (TCPA, CRTC, state laws), as a pure function of message, facts, rules
and the time.

The callee's location arrives in the facts (`gateway.policy.callee.locate` ran before), with every
candidate zone and region; a marketing contact is allowed only if every applicable window,
day, cap and consent rule allows it in every candidate zone. A rule applies where it is in
force on the callee's local date (in any candidate zone: the stricter reading) and is not
lifted by an exemption the callee's recorded consents meet. Transactional messages are bound
only by the rules whose `purposes` name them (validity, suppression). Nothing here does I/O
or reads the clock: zones are preloaded in the rules, holiday calendars are memoised per
rule and year.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gateway.model import (
    CalleeLocation,
    CapClaim,
    Channel,
    Consent,
    ConsentKind,
    Decision,
    Facts,
    OutboundMessage,
    Purpose,
    Reason,
    RecipientDecision,
)
from gateway.rules.calling import (
    NOTICE_RULE,
    WEEKDAY_NAMES,
    CallingRule,
    CallingRules,
    CapRule,
    ConsentRule,
    JurisdictionRule,
    JurisdictionRules,
    NoticeRule,
)

OPERATOR_CONSENT = "operator.consent.required"

# The obligation id the egress looks for: append the SMS opt-out notice to the body.
SMS_OPT_OUT_NOTICE = NOTICE_RULE


def decide_telephony(
    message: OutboundMessage, facts: Facts, rules: CallingRules, now: datetime, rules_version: str
) -> Decision:
    """Decide a call or text.

    A decision names every rule it evaluated in `rules_applied`; `caps` are the frequency
    limits the store must enforce atomically for the allowed recipients; `obligations` holds
    SMS_OPT_OUT_NOTICE when an allowed recipient of a marketing text is due the notice;
    `evidence` has, per recipient, the country, regions, zones and local time in each zone,
    the jurisdiction rules in force with their dates and citations, and the consent records
    the decision relied on.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if message.channel not in (Channel.CALL, Channel.SMS):
        raise ValueError(f"not a call or text: {message.channel}")
    check = _Check(message.channel, message.account.purpose, facts, rules, now)
    recipients = tuple(check.recipient(r) for r in message.recipients)
    return Decision(
        message_reasons=(),
        recipients=recipients,
        rules_applied=tuple(check.applied),
        rules_version=rules_version,
        caps=tuple(check.caps),
        obligations=(SMS_OPT_OUT_NOTICE,) if check.notice_due else (),
        evidence=check.evidence,
    )


@dataclass
class _Check:
    """One decision's working state; `recipient` is called once per recipient."""

    channel: Channel
    purpose: Purpose
    facts: Facts
    rules: CallingRules
    now: datetime
    applied: dict[str, None] = field(default_factory=dict)
    caps: list[CapClaim] = field(default_factory=list)
    evidence: dict[str, object] = field(default_factory=dict)
    notice_due: bool = False

    def active(self, rule_id: str, days: tuple[date, ...] = ()) -> bool:
        """Whether the rule binds this channel and purpose and is in force on one of `days`
        (the callee's possible local dates; none given: in force on the decision's date
        anywhere on earth); records it as applied if so."""
        rule = self.rules.rule(rule_id)
        if not rule.binds(self.channel, self.purpose):
            return False
        dated = rule.effective is not None or rule.until is not None
        if dated and not any(rule.in_force(day) for day in days or self.any_local_date):
            return False
        self.applied[rule_id] = None
        return True

    @functools.cached_property
    def any_local_date(self) -> tuple[date, ...]:
        """Every date it may be somewhere at `now` (UTC-12 to UTC+14)."""
        today = self.now.astimezone(UTC).date()
        return (today - timedelta(days=1), today, today + timedelta(days=1))

    def in_force_here(self, rule: JurisdictionRule, recipient: str, days: tuple[date, ...]) -> bool:
        """Active, and not lifted for this callee by one of its exemptions."""
        if not self.active(rule.id, days):
            return False
        for exemption in rule.exemptions:
            consent = self.matching_consent(recipient, exemption.kinds, exemption.within_days)
            if consent is not None:
                self.note_rule(recipient, rule, exempted_by=exemption.citation, consent=consent)
                return False
        self.note_rule(recipient, rule)
        return True

    def matching_consent(
        self, recipient: str, kinds: frozenset[ConsentKind], within_days: int | None = None
    ) -> Consent | None:
        for consent in self.facts.consents.get(recipient, ()):
            if (
                consent.subject == recipient
                and consent.channel is self.channel
                and consent.kind in kinds
                and consent.obtained_at <= self.now
                and (consent.expires_at is None or consent.expires_at > self.now)
                and (within_days is None
                     or self.now - consent.obtained_at <= timedelta(days=within_days))
            ):
                return consent
        return None

    def note_rule(
        self, recipient: str, rule: CallingRule, *, exempted_by: str = "",
        consent: Consent | None = None,
    ) -> None:
        """The evidence a reviewer needs: the rule in force, its dates and source, and the
        consent record that satisfied or lifted it."""
        evidence = self.evidence[recipient]
        assert isinstance(evidence, dict)
        if not exempted_by and consent is None:
            evidence.setdefault("rules", {})[rule.id] = rule.evidence
            return
        entry = dict(rule.evidence)
        if exempted_by:
            entry["exempted_by"] = exempted_by
        if consent is not None:
            entry["consent"] = {
                "kind": consent.kind.value, "channel": consent.channel.value,
                "obtained_at": consent.obtained_at.isoformat(),
                "expires_at": consent.expires_at.isoformat() if consent.expires_at else None,
                "source": consent.source,
            }
        evidence.setdefault("rules", {})[rule.id] = entry

    def reason(self, rule_id: str, text: str) -> Reason:
        return Reason(self.rules.rule(rule_id).code, text, rule_id)

    def only(self, recipient: str, rule_id: str, text: str) -> RecipientDecision:
        """The recipient blocked by this one rule, if it binds (nothing else matters then)."""
        if not self.active(rule_id):
            return RecipientDecision(recipient)
        return RecipientDecision(recipient, (self.reason(rule_id, text),))

    def recipient(self, recipient: str) -> RecipientDecision:
        location = self.facts.callees.get(recipient)
        if location is None:
            self.evidence[recipient] = {"problem": "no location facts"}
            text = f"{recipient} was not looked up (no location facts); it cannot be checked"
            return self.only(recipient, "telephony.callee.located", text)
        if location.problem:
            self.evidence[recipient] = {"problem": location.problem}
            text = f"{recipient} is {location.problem}"
            return self.only(recipient, "telephony.number.valid", text)
        self.active("telephony.number.valid")
        zones = self.rules.zones
        local = [(z, self.now.astimezone(zones[z])) for z in location.zones if z in zones]
        self.evidence[recipient] = {
            "country": location.country,
            "regions": list(location.regions),
            "zones": list(location.zones),
            "local_times": {zone: time.isoformat() for zone, time in local},
        }
        if recipient in self.facts.suppressed:
            text = f"{recipient} opted out or is on the suppression list"
            return self.only(recipient, "telephony.suppression", text)
        self.active("telephony.suppression")
        national = self.rules.national.get(location.country)
        if national is None:
            country = location.country_name or location.country or "an unknown country"
            text = f"{recipient} is in {country}, whose calling rules the gateway does not carry"
            return self.only(recipient, "telephony.destination.covered", text)
        self.active("telephony.destination.covered")
        # The country's rules, every region's, and the national rules of every region's
        # country (a known address abroad brings them).
        jurisdictions = (national, *(r[:2] for r in location.regions), *location.regions)
        sets = [self.rules.for_jurisdiction(j, self.channel) for j in dict.fromkeys(jurisdictions)]
        days = tuple(dict.fromkeys(time.date() for _, time in local))
        reasons = self.consent(recipient, [rule for s in sets for rule in s.consents], days)
        if any(s.windows or s.restricted_days for s in sets):
            reasons += self.zone_problems(recipient, location, local)
        for rules in sets:
            reasons += self.windows(recipient, rules, local)
            reasons += self.restricted_days(recipient, rules, local)
        caps = [cap for s in sets for cap in s.caps if self.in_force_here(cap, recipient, days)]
        counts = self.facts.recent_contacts.get(recipient, {})
        reasons += [
            self.cap_reason(recipient, cap, counts.get(cap.window_s))
            for cap in caps
            if counts.get(cap.window_s, cap.limit) >= cap.limit
        ]
        if not reasons:
            self.caps += [CapClaim(recipient, cap.id, cap.limit, cap.window_s) for cap in caps]
            countries = {national, *(r[:2] for r in location.regions)}
            self.notice_due = self.notice_due or self.notice_needed(recipient, countries)
        return RecipientDecision(recipient, tuple(reasons))

    def consent(
        self, recipient: str, consent_rules: list[ConsentRule], days: tuple[date, ...]
    ) -> list[Reason]:
        """Every consent rule in force needs a recorded consent of one of its kinds; the
        operator's own requirement takes a consent of any kind."""
        reasons = []
        for rule in consent_rules:
            if not self.in_force_here(rule, recipient, days):
                continue
            consent = self.matching_consent(recipient, rule.kinds)
            if consent is not None:
                self.note_rule(recipient, rule, consent=consent)
                continue
            kinds = " or ".join(sorted(k.value for k in rule.kinds))
            reasons.append(self.reason(
                rule.id,
                f"no current {kinds} {self.channel} consent recorded for {recipient}: "
                f"{rule.name} ({rule.citation})",
            ))
        if (
            self.channel in self.rules.require_consent
            and self.active(OPERATOR_CONSENT, days)
            and self.matching_consent(recipient, frozenset(ConsentKind)) is None
        ):
            reasons.append(self.reason(
                OPERATOR_CONSENT,
                f"no current {self.channel} consent recorded for {recipient}: the operator "
                "requires one for every marketing contact on this channel",
            ))
        return reasons

    def zone_problems(
        self, recipient: str, location: CalleeLocation, local: list[tuple[str, datetime]]
    ) -> list[Reason]:
        """Windows and days need every candidate zone; without them, block."""
        rule_id = "telephony.callee.timezone"
        if not self.active(rule_id):
            return []
        if not location.zones:
            text = (
                f"no time zone could be determined for {recipient} (neither the number nor a "
                "known address gives one); calling hours cannot be checked"
            )
            return [self.reason(rule_id, text)]
        unknown = sorted(set(location.zones) - {zone for zone, _ in local})
        if unknown:
            text = f"{', '.join(unknown)}: not a known IANA time zone; hours cannot be checked"
            return [self.reason(rule_id, text)]
        if not location.regions:
            text = (
                f"no state or province could be determined for {recipient} (a non-geographic "
                "number such as toll-free, and no known address), so state and provincial "
                "rules cannot be checked"
            )
            return [self.reason(rule_id, text)]
        return []

    def windows(
        self, recipient: str, rules: JurisdictionRules, local: list[tuple[str, datetime]]
    ) -> list[Reason]:
        reasons = []
        for rule in rules.windows:
            days = tuple(time.date() for _, time in local)
            if not self.in_force_here(rule, recipient, days):
                continue
            for zone, time in local:
                weekday = time.weekday()
                window = rule.windows[weekday]
                # A day without a window is closed by a restricted-day rule (checked at load).
                if window is None or time.hour * 3600 + time.minute * 60 + time.second in window:
                    continue
                text = (
                    f"{time:%H:%M} in {zone} is outside the {rule.name} window "
                    f"{rule.label(weekday)} ({rule.citation})"
                )
                reasons.append(self.reason(rule.id, text))
        return reasons

    def restricted_days(
        self, recipient: str, rules: JurisdictionRules, local: list[tuple[str, datetime]]
    ) -> list[Reason]:
        reasons = []
        for rule in rules.restricted_days:
            days = tuple(time.date() for _, time in local)
            if not self.in_force_here(rule, recipient, days):
                continue
            for zone, time in local:
                day = time.date()
                weekday = time.weekday()
                if weekday in rule.weekdays:
                    what = f"{rule.name} allows no {rule.activity} on {WEEKDAY_NAMES[weekday]}s"
                elif holiday := rule.holidays_in(day.year).get(day):
                    what = f"{holiday}: {rule.name} allows no {rule.activity} on this holiday"
                else:
                    continue
                text = f"{time:%A %Y-%m-%d} in {zone}: {what} ({rule.citation})"
                reasons.append(self.reason(rule.id, text))
        return reasons

    def cap_reason(self, recipient: str, cap: CapRule, count: int | None) -> Reason:
        """`count` None: the contacts of the cap's window were not counted, so the cap
        cannot be checked (fail closed)."""
        per = " per offer (all offers counted together)" if cap.per == "offer" else ""
        if count is None:
            done = f"the contacts to {recipient} in the last {cap.period} were not counted"
        else:
            done = f"{count} contacts to {recipient} already counted"
        text = (
            f"{done}; {cap.name} allows at most {cap.limit} per {cap.period}{per} "
            f"({cap.citation})"
        )
        return self.reason(cap.id, text)

    def notice_needed(self, recipient: str, countries: set[str]) -> bool:
        """Every text where any country the callee may be in asks for it (a US number known
        to live in Canada gets Canada's every-message notice)."""
        notice: NoticeRule = self.rules.notice
        if not self.active(notice.id):
            return False
        if countries & set(notice.every_message_in):
            return True
        last = self.facts.notice_sent_at.get(recipient)
        return last is None or self.now - last >= notice.repeat_after
