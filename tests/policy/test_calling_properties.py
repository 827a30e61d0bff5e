"""Properties of the calling policy that hold for every input: more candidate zones or
regions, or one more rule, can only make a decision stricter (a block never becomes an
allow), and the decision is a function of its inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import CalleeLocation, Channel, Consent, ConsentKind, Facts, Purpose
from gateway.policy.calling import decide_telephony
from gateway.rules.calling import (
    CallingRules,
    CapRule,
    ConsentRule,
    TimeWindow,
    WindowRule,
)
from gateway.rules.calling_loader import group_by_jurisdiction
from tests.policy.test_calling import RULES, message

NUMBER = "+12125550123"
ZONES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
    "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico",
    "America/Toronto", "America/Regina", "America/Halifax", "America/St_Johns",
)
REGIONS = tuple(sorted({
    rule.jurisdiction for rule in RULES.rules.values()
    if getattr(rule, "jurisdiction", "").count("-")
}))

zones = st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True)
regions = st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True)
instants = st.datetimes(
    min_value=datetime(2023, 6, 1), max_value=datetime(2027, 6, 1), timezones=st.just(UTC)
)
kinds = st.lists(st.sampled_from(list(ConsentKind)), max_size=3, unique=True)
counts = st.integers(min_value=0, max_value=4)


def facts(location: CalleeLocation, channel: Channel, consent_kinds: list[ConsentKind],
          count: int, obtained: datetime) -> Facts:
    return Facts(
        callees={NUMBER: location},
        consents={NUMBER: tuple(
            Consent(NUMBER, channel, kind, obtained, None, "test") for kind in consent_kinds
        )},
        recent_contacts={NUMBER: dict.fromkeys(RULES.cap_windows_s, count)},
    )


def blocked(location: CalleeLocation, channel: Channel, purpose: Purpose, now: datetime,
            consent_kinds: list[ConsentKind], count: int, rules: CallingRules = RULES) -> bool:
    decision = decide_telephony(
        message((NUMBER,), channel, purpose),
        facts(location, channel, consent_kinds, count, now - timedelta(days=400)),
        rules, now, "v",
    )
    return not decision.allowed


@settings(max_examples=400, deadline=None)
@given(zones, zones, regions, regions, instants, st.sampled_from([Channel.CALL, Channel.SMS]),
       st.sampled_from(list(Purpose)), kinds, counts)
def test_more_zones_or_regions_never_allow_what_was_blocked(
    base_zones, extra_zones, base_regions, extra_regions, now, channel, purpose, consent_kinds,
    count,
) -> None:
    country = base_regions[0][:2]
    narrow = CalleeLocation(NUMBER, country, tuple(base_zones), tuple(base_regions))
    wide = CalleeLocation(
        NUMBER, country,
        tuple(dict.fromkeys([*base_zones, *extra_zones])),
        tuple(dict.fromkeys([*base_regions, *extra_regions])),
    )
    if blocked(narrow, channel, purpose, now, consent_kinds, count):
        assert blocked(wide, channel, purpose, now, consent_kinds, count)


def with_rule(rules: CallingRules, rule: WindowRule | CapRule | ConsentRule) -> CallingRules:
    """`rules` plus one jurisdiction rule, grouped by the loader's own grouping."""
    every = {**rules.rules, rule.id: rule}
    return replace(rules, rules=every, by_jurisdiction=group_by_jurisdiction(every))


def extra_rule(kind: str, jurisdiction: str, start_s: int, length_s: int, limit: int,
               effective: date | None, rule_kinds: list[ConsentKind]
               ) -> WindowRule | CapRule | ConsentRule:
    common = {
        "id": f"test.extra.{kind}", "code": "", "name": "Extra", "citation": "test",
        "channels": frozenset({Channel.CALL, Channel.SMS}),
        "purposes": frozenset({Purpose.MARKETING}), "confidence": "high", "verify": False,
        "note": "", "jurisdiction": jurisdiction, "automated_only": False,
        "effective": effective,
    }
    if kind == "window":
        window = TimeWindow(start_s, min(start_s + length_s, 86_400))
        return WindowRule(**{**common, "code": "QUIET_HOURS"}, windows=(window,) * 7)
    if kind == "cap":
        return CapRule(**{**common, "code": "FREQUENCY_CAP"}, limit=limit,
                       window_s=RULES.cap_windows_s[0])
    return ConsentRule(**{**common, "code": "NO_CONSENT"},
                       kinds=frozenset(rule_kinds or [ConsentKind.EXPRESS_WRITTEN]))


@settings(max_examples=400, deadline=None)
@given(zones, regions, instants, st.sampled_from([Channel.CALL, Channel.SMS]), kinds, counts,
       st.sampled_from(["window", "cap", "consent"]),
       st.integers(min_value=0, max_value=86_399), st.integers(min_value=60, max_value=86_400),
       st.integers(min_value=1, max_value=5),
       st.one_of(st.none(), st.dates(min_value=date(2023, 1, 1), max_value=date(2027, 12, 31))),
       kinds)
def test_a_stricter_rule_never_allows_what_was_blocked(
    location_zones, location_regions, now, channel, consent_kinds, count, kind, start_s,
    length_s, limit, effective, rule_kinds,
) -> None:
    country = location_regions[0][:2]
    location = CalleeLocation(NUMBER, country, tuple(location_zones), tuple(location_regions))
    jurisdiction = location_regions[0]
    stricter = with_rule(
        RULES, extra_rule(kind, jurisdiction, start_s, length_s, limit, effective, rule_kinds)
    )
    purpose = Purpose.MARKETING
    if blocked(location, channel, purpose, now, consent_kinds, count):
        assert blocked(location, channel, purpose, now, consent_kinds, count, stricter)
