"""The law as it stands, case by case from the statutes (docs/compliance.md section 3): effective
dates, exemptions, consent by jurisdiction and kind, caps over their own periods, holidays a
statute defines, and the jurisdictions added in 2026. The cases read the expected outcome
from the statute, and the dates and numbers from the rule data where the data carries them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.model import Channel, Consent, ConsentKind, Facts, Purpose
from gateway.policy.callee import locate
from gateway.policy.calling import decide_telephony
from gateway.rules.calling import CapRule, JurisdictionRule
from gateway.rules.calling_loader import group_by_jurisdiction
from tests.policy.test_calling import (
    CDT,
    EDT,
    MDT,
    PDT,
    RULES,
    Case,
    decide_case,
    message,
)

CALL, SMS = Channel.CALL, Channel.SMS
QH, RD, CAP, NC = "QUIET_HOURS", "RESTRICTED_DAY", "FREQUENCY_CAP", "NO_CONSENT"
EARLY = datetime(2020, 1, 1, tzinfo=UTC)
OR, TX, MD, VA, UT = "+15035550123", "+12145550123", "+14105550123", "+17035550123", "+18015550123"
CT, FL, OK, NM, MN = "+12035550123", "+13055550123", "+14055550123", "+15055550123", "+16125550123"
IL, WA, BC, RI = "+13125550123", "+12065550123", "+16045550123", "+14015550123"


def consent(to: str, channel: Channel, kind: ConsentKind, obtained: datetime = EARLY) -> Consent:
    return Consent(to, channel, kind, obtained, None, "test")


def written(to: str, channel: Channel = CALL) -> tuple[Consent, ...]:
    return (consent(to, channel, ConsentKind.EXPRESS_WRITTEN),)


def codes(case: Case) -> tuple[str, ...]:
    return tuple(sorted({r.code for r in decide_case(case).all_reasons()}))


def effective(rule_id: str) -> date:
    rule = RULES.rule(rule_id)
    assert rule.effective is not None, rule_id
    return rule.effective


def day_before(day: date) -> date:
    return day - timedelta(days=1)


# --- Effective dates -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rule_id", "to", "offset", "hour", "channel"),
    [
        # Oregon HB 3865: 08:00-20:00 from 2026-01-01 (federal 21:00 before)
        ("state.OR.window", OR, "-08:00", "20:30", CALL),
        # Texas SB 140: texts are telephone solicitations from 2025-09-01 (09:00 start)
        ("state.TX.text_window", TX, CDT, "08:30", SMS),
    ],
)
def test_a_window_applies_from_its_effective_date(rule_id, to, offset, hour, channel) -> None:
    start = effective(rule_id)
    before = Case(to, f"{day_before(start)}T{hour}{offset}", (), channel=channel)
    after = Case(to, f"{start}T{hour}{offset}", (), channel=channel)
    assert codes(before) == (), "not yet in force"
    assert codes(after) == (QH,)
    assert rule_id in {r.rule for r in decide_case(after).all_reasons()}


def test_texas_texts_before_sb_140_follow_federal_hours_only() -> None:
    assert codes(Case(TX, f"2025-08-29T08:30{CDT}", (), channel=SMS)) == ()
    assert codes(Case(TX, f"2025-08-29T08:30{CDT}", ())) == (QH,), "calls were always covered"
    assert codes(Case(TX, f"2025-09-02T08:30{CDT}", (), channel=SMS)) == (QH,)


def test_maryland_cap_counts_from_2024() -> None:
    start = effective("state.MD.frequency_cap")
    before = Case(MD, f"{day_before(start)}T12:00-05:00", (), count=3, consents=written(MD))
    assert codes(before) == ()
    after = replace(before, at=f"{start + timedelta(days=1)}T12:00-05:00")
    assert codes(after) == (CAP,)


def test_a_rule_before_its_date_is_not_named_in_the_decision() -> None:
    decision = decide_case(Case(OR, "2025-06-02T12:00-07:00", ()))
    assert "state.OR.window" not in decision.rules_applied
    decision = decide_case(Case(OR, "2026-06-02T12:00-07:00", ()))
    assert "state.OR.window" in decision.rules_applied


def test_until_ends_a_rule() -> None:
    rule = RULES.rule("state.OR.window")
    assert isinstance(rule, JurisdictionRule)
    every = {**RULES.rules, rule.id: replace(rule, until=date(2026, 6, 1))}
    rules = replace(RULES, rules=every, by_jurisdiction=group_by_jurisdiction(every))
    late = Case(OR, "2026-06-02T20:30-07:00", ())
    assert {r.code for r in decide_case(late, rules).all_reasons()} == set()
    assert {r.code for r in decide_case(replace(late, at="2026-05-29T20:30-07:00"),
                                        rules).all_reasons()} == {QH}


# --- Exemptions ----------------------------------------------------------------------------

def test_oregon_purchase_within_18_months_lifts_hours_and_cap() -> None:
    [exemption] = RULES.rule("state.OR.window").exemptions
    assert exemption.within_days is not None
    at = datetime(2026, 6, 2, 20, 30, tzinfo=UTC) + timedelta(hours=7)  # 20:30 PDT
    recent = at - timedelta(days=exemption.within_days - 1)
    stale = at - timedelta(days=exemption.within_days + 1)
    for kind in exemption.kinds:
        lifted = (*written(OR), consent(OR, CALL, kind, recent))
        assert codes(Case(OR, f"2026-06-02T20:30{PDT}", (), consents=lifted)) == ()
        assert codes(Case(OR, f"2026-06-02T12:00{PDT}", (), consents=lifted, count=3)) == ()
        old = (*written(OR), consent(OR, CALL, kind, stale))
        assert codes(Case(OR, f"2026-06-02T20:30{PDT}", (), consents=old)) == (QH,)
    # A purchase recorded for texts does not lift the rule for a call.
    texts = (*written(OR), consent(OR, SMS, ConsentKind.EBR, recent))
    assert codes(Case(OR, f"2026-06-02T20:30{PDT}", (), consents=texts)) == (QH,)


@pytest.mark.parametrize(("to", "at", "rule_id"), [
    (VA, f"2026-06-02T21:30{EDT}", "state.VA.window"),
    (UT, f"2026-06-07T12:00{MDT}", "state.UT.restricted_days"),
    (UT, f"2026-06-02T21:30{MDT}", "state.UT.window"),
])
def test_prior_express_consent_lifts_virginia_and_utah_hours(to, at, rule_id) -> None:
    """Va. Code 59.1-511 and Utah Code 13-25a-103(3): the state's own hours and days do not
    apply with the callee's prior express consent (the TCPA's 08:00-21:00 still does)."""
    for kind in (ConsentKind.EXPRESS, ConsentKind.EXPRESS_WRITTEN):
        lifted = Case(to, at, (), channel=SMS, consents=(consent(to, SMS, kind),))
        assert rule_id not in {r.rule for r in decide_case(lifted).all_reasons()}
    purchase = Case(to, at, (), channel=SMS, consents=(consent(to, SMS, ConsentKind.EBR),))
    assert rule_id in {r.rule for r in decide_case(purchase).all_reasons()}
    federal = Case(VA, f"2026-06-02T21:30{EDT}", (), consents=written(VA))
    assert {r.rule for r in decide_case(federal).all_reasons()} == {"tcpa.quiet_hours"}


def test_evidence_names_the_rules_their_dates_and_the_consent_used() -> None:
    bought = consent(OR, CALL, ConsentKind.EBR, datetime(2026, 1, 10, tzinfo=UTC))
    case = Case(OR, f"2026-06-02T20:30{PDT}", (), consents=(*written(OR), bought))
    decision = decide_case(case)
    assert decision.allowed
    evidence = decision.evidence[OR]
    rules = evidence["rules"]
    assert rules["state.OR.window"]["effective"] == "2026-01-01"
    assert rules["state.OR.window"]["consent"]["kind"] == "ebr"
    assert "18 months" in rules["state.OR.window"]["exempted_by"]
    assert rules["tcpa.consent.artificial_voice"]["consent"]["kind"] == "express-written"
    assert evidence["zones"] and evidence["local_times"]


# --- Consent by jurisdiction and kind ------------------------------------------------------

@pytest.mark.parametrize("to", [CT, FL, OK, MD])
def test_written_consent_states_need_it_for_texts_too(to: str) -> None:
    express = (consent(to, SMS, ConsentKind.EXPRESS),)
    case = Case(to, f"2026-06-02T12:00{EDT if to != OK else CDT}", (), channel=SMS,
                consents=express)
    reasons = decide_case(case).all_reasons()
    assert NC in {r.code for r in reasons}
    assert any(r.rule.startswith("state.") for r in reasons if r.code == NC)
    ok = replace(case, consents=written(to, SMS))
    assert decide_case(ok).allowed


def test_connecticut_consent_is_dated() -> None:
    start = effective("state.CT.consent")
    before = Case(CT, f"{day_before(start)}T12:00{EDT}", (), channel=SMS, consents=())
    rules = {r.rule for r in decide_case(before).all_reasons()}
    assert "state.CT.consent" not in rules
    after = replace(before, at=f"{start}T12:00{EDT}")
    assert "state.CT.consent" in {r.rule for r in decide_case(after).all_reasons()}


@pytest.mark.parametrize("to", [WA, UT, MN, NM])
def test_automated_call_states_take_express_consent(to: str) -> None:
    rule_id = f"state.{ {WA: 'WA', UT: 'UT', MN: 'MN', NM: 'NM'}[to] }.consent".replace(" ", "")
    at = "2026-06-02T18:00+00:00"
    no_state_consent = Case(to, at, (), consents=())
    assert rule_id in {r.rule for r in decide_case(no_state_consent).all_reasons()}
    assert rule_id not in {r.rule for r in decide_case(Case(to, at, ())).all_reasons()}


def test_expired_or_future_consent_does_not_count() -> None:
    now = datetime(2026, 6, 2, 16, tzinfo=UTC)
    later = Consent(CT, CALL, ConsentKind.EXPRESS_WRITTEN, now + timedelta(days=1), None, "t")
    gone = Consent(CT, CALL, ConsentKind.EXPRESS_WRITTEN, EARLY, now - timedelta(days=1), "t")
    for record in (later, gone):
        case = Case(CT, f"2026-06-02T12:00{EDT}", (), consents=(record,))
        assert not decide_case(case).allowed


def test_transactional_texts_need_no_consent_anywhere() -> None:
    for to in (CT, FL, OK, MD, WA, UT, MN, NM, BC):
        case = Case(to, "2026-06-02T18:00+00:00", (), consents=(),
                    purpose=Purpose.TRANSACTIONAL, channel=SMS)
        assert decide_case(case).allowed, to


def test_a_transactional_ai_call_needs_prior_express_consent() -> None:
    """47 U.S.C. 227(b)(1)(A)(iii): an artificial-voice call to a wireless number needs prior
    express consent even when it sells nothing; a number given in a purchase or an inquiry
    counts, as any recorded consent does."""
    at = f"2026-06-02T12:00{EDT}"
    bare = Case(CT, at, (), consents=(), purpose=Purpose.TRANSACTIONAL)
    [reason] = decide_case(bare).all_reasons()
    assert reason.rule == "tcpa.consent.artificial_voice.informational"
    for kind in ConsentKind:
        given = replace(bare, consents=(consent(CT, CALL, kind),))
        assert decide_case(given).allowed, kind
    texts_only = replace(bare, consents=(consent(CT, SMS, ConsentKind.EXPRESS),))
    assert not decide_case(texts_only).allowed
    before = replace(bare, at=f"{day_before(effective(reason.rule))}T12:00-05:00")
    assert decide_case(before).allowed


# --- Caps over their own periods -----------------------------------------------------------

def test_each_cap_counts_its_own_window() -> None:
    """British Columbia's 30-day cap must not make Florida's 24-hour cap count 30 days."""
    at = "2026-06-02T12:00-07:00"
    bc_caps = [r for r in RULES.rules.values()
               if isinstance(r, CapRule) and r.jurisdiction == "CA-BC"]
    [bc_cap] = bc_caps
    now = datetime.fromisoformat(at).astimezone(UTC)
    implied = (consent(BC, CALL, ConsentKind.EXPRESS_WRITTEN),)

    def decide(counts: dict[int, int], to: str = BC) -> set[str]:
        facts = Facts(
            callees={to: locate(to, None, RULES.area_codes)},
            consents={to: implied if to == BC else written(to)},
            recent_contacts={to: counts},
        )
        return {r.code for r in decide_telephony(message((to,)), facts, RULES, now,
                                                  "v").all_reasons()}

    month = bc_cap.window_s
    assert decide({w: 0 for w in RULES.cap_windows_s}) == set()
    assert decide({**dict.fromkeys(RULES.cap_windows_s, 0), month: bc_cap.limit}) == {CAP}
    many_this_month = {**dict.fromkeys(RULES.cap_windows_s, 0), month: 10}
    assert decide(many_this_month, FL) == set(), "Florida counts 24 h, not 30 days"
    assert decide({**many_this_month, 86_400: 3}, FL) == {CAP}


def test_a_cap_whose_count_is_missing_blocks() -> None:
    now = datetime(2026, 6, 2, 16, tzinfo=UTC)
    facts = Facts(
        callees={FL: locate(FL, None, RULES.area_codes)},
        consents={FL: written(FL)},
        recent_contacts={FL: {}},
    )
    [reason] = decide_telephony(message((FL,)), facts, RULES, now, "v").all_reasons()
    assert reason.code == CAP and "were not counted" in reason.message


# --- Jurisdictions added -------------------------------------------------------------------

@pytest.mark.parametrize(("to", "early", "offset"), [
    (NM, "08:30", "-06:00"),
    (IL, "08:30", CDT),
    (MN, "08:30", CDT),
])
def test_nine_o_clock_states(to: str, early: str, offset: str) -> None:
    assert codes(Case(to, f"2026-06-02T{early}{offset}", ())) == (QH,)
    assert codes(Case(to, f"2026-06-02T09:00{offset}", ())) == ()
    assert codes(Case(to, f"2026-06-02T20:59{offset}", ())) == ()


def test_british_columbia_statutory_holidays() -> None:
    # 2026-08-03 is British Columbia Day, a Monday; 2026-08-04 an ordinary Tuesday.
    assert codes(Case(BC, "2026-08-03T12:00-07:00", ())) == (RD,)
    assert codes(Case(BC, "2026-08-04T12:00-07:00", ())) == ()


def test_rhode_island_saturday_holiday_keeps_the_saturday_window() -> None:
    # 2026-07-04, Independence Day, is a Saturday: 10:00-17:00 stays open.
    assert codes(Case(RI, f"2026-07-04T12:00{EDT}", ())) == ()
    assert codes(Case(RI, f"2026-07-03T12:00{EDT}", ())) == (RD,), "observed on Friday"
    # Christmas 2026 is a Friday.
    assert codes(Case(RI, "2026-12-25T12:00-05:00", ())) == (RD,)


@pytest.mark.parametrize(("to", "name"), [
    ("+18765550123", "Jamaica"),
    ("+12425550123", "Bahamas"),
    ("+18095550123", "Dominican Republic"),
    ("+16245550123", "unknown NANP country"),
])
def test_nanp_outside_the_us_and_canada_is_not_covered_and_named(to: str, name: str) -> None:
    at = "2026-06-02T16:00+00:00"
    [reason] = decide_case(Case(to, at, (), consents=())).all_reasons()
    assert reason.code == "DESTINATION_NOT_COVERED"
    assert name in reason.message
    assert decide_case(Case(to, at, (), consents=(), purpose=Purpose.TRANSACTIONAL)).allowed


@pytest.mark.parametrize(("to", "zone"), [
    ("+17875550123", "America/Puerto_Rico"),
    ("+13405550123", "America/St_Thomas"),
    ("+16715550123", "Pacific/Guam"),
])
def test_territories_are_checked_under_the_tcpa(to: str, zone: str) -> None:
    noon = datetime(2026, 6, 2, 12, tzinfo=ZoneInfo(zone))
    assert codes(Case(to, noon.isoformat(), ())) == ()
    late = noon.replace(hour=21, minute=30)
    assert codes(Case(to, late.isoformat(), ())) == (QH,)


def test_a_new_territory_exchange_keeps_its_zone_beside_a_known_address() -> None:
    """Guam at 02:00 while New York, where an address is known, is at noon: blocked."""
    from gateway.model import KnownLocation

    guam_new_exchange = "+16713011234"
    known = KnownLocation(region="NY", timezone="America/New_York")
    location = locate(guam_new_exchange, known, RULES.area_codes)
    assert {"Pacific/Guam", "America/New_York"} <= set(location.zones)
    case = Case(guam_new_exchange, f"2026-06-02T12:00{EDT}", (), known=known)
    assert QH in codes(case)


def test_an_effective_date_in_any_zone_applies_the_whole_window() -> None:
    """20:30 on Oregon's last day before HB 3865 is already 1 January in Guam, where the
    callee is also known to be: the rule is in force, and its window is checked in
    Portland's zone too (the stricter reading)."""
    from gateway.model import KnownLocation

    known = KnownLocation(region="US-OR", timezone="Pacific/Guam")
    start = effective("state.OR.window")
    case = Case(OR, f"{day_before(start)}T20:30-08:00", (), known=known)
    reasons = decide_case(case).all_reasons()
    assert any(r.rule == "state.OR.window" and "America/Los_Angeles" in r.message
               for r in reasons)
