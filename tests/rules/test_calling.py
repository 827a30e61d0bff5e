"""The calling rule data: what the shipped files say, how bad data is reported, and how
inbound texts are classified."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import Channel, Purpose
from gateway.rules.calling import (
    CapRule,
    ConsentRule,
    JurisdictionRule,
    RestrictedDayRule,
    WindowRule,
)
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.errors import RulesError
from gateway.rules.keywords import classify_inbound_text

RULES = load_calling_rules(PACKAGE_RULES_DIR)

# Every state row of COMPLIANCE.md "Calls and texts — states stricter than federal".
STATE_WINDOWS = {
    "AL": "08:00-20:00",
    "CT": "09:00-20:00",
    "FL": "08:00-20:00",
    "GA": "08:00-21:00",
    "KY": "10:00-21:00",
    "LA": "08:00-20:00",
    "MA": "08:00-20:00",
    "MD": "08:00-20:00",
    "ME": "09:00-17:00",
    "MS": "08:00-20:00",
    "NJ": "08:00-21:00",
    "NV": "09:00-20:00",
    "NY": "08:00-21:00",
    "OK": "08:00-20:00",
    "OR": "08:00-20:00",
    "PA": "08:00-21:00",
    "RI": "09:00-18:00",
    "SD": "09:00-21:00",
    "TN": "08:00-20:00",
    "TX": "09:00-21:00",
    "UT": "08:00-21:00",
    "VA": "08:00-21:00",
    "WA": "08:00-20:00",
    "WI": "08:00-21:00",
    "NM": "09:00-21:00",
    "IL": "09:00-21:00",
    "MN": "09:00-21:00",
}


def window_rule(rule_id: str) -> WindowRule:
    rule = RULES.rule(rule_id)
    assert isinstance(rule, WindowRule)
    return rule


def test_every_state_row_has_a_window() -> None:
    for state, monday in STATE_WINDOWS.items():
        rule = window_rule(f"state.{state}.window")
        assert rule.jurisdiction == f"US-{state}"
        assert str(rule.windows[0]) == monday, state
        if state != "TX":
            assert rule.channels == {Channel.CALL, Channel.SMS}
    # Texas SB 140: texts are telephone solicitations from 2025-09-01, with the same hours.
    call, text = window_rule("state.TX.window"), window_rule("state.TX.text_window")
    assert call.channels == {Channel.CALL} and text.channels == {Channel.SMS}
    assert call.windows == text.windows and call.effective is None
    assert text.effective == date(2025, 9, 1)
    assert window_rule("territory.PR.window").jurisdiction == "US-PR"


def test_restricted_days_and_caps_of_the_table() -> None:
    sundays = {"AL", "LA", "MS", "RI", "UT"}
    weekends = {"ME", "SD"}
    for state in sundays | weekends:
        rule = RULES.rule(f"state.{state}.restricted_days")
        assert isinstance(rule, RestrictedDayRule)
        assert 6 in rule.weekdays
        assert (5 in rule.weekdays) is (state in weekends)
    for state in ("AL", "LA", "RI", "UT"):
        rule = RULES.rule(f"state.{state}.restricted_days")
        assert isinstance(rule, RestrictedDayRule)
        assert {c.subdiv for c in rule.calendars} == {state, ""}, "state and federal holidays"
    caps = {
        r.jurisdiction: (r.limit, r.window_s)
        for r in RULES.rules.values()
        if isinstance(r, CapRule)
    }
    assert caps == {
        "US-FL": (3, 86400),
        "US-MD": (3, 86400),
        "US-OK": (3, 86400),
        "US-OR": (3, 86400),
        "US-ME": (1, 8 * 3600),
        "CA-BC": (1, 30 * 86400),
    }
    assert RULES.cap_windows_s == (8 * 3600, 86400, 30 * 86400)
    assert RULES.rule("province.BC.frequency_cap").per == "offer"
    assert RULES.rule("state.MD.frequency_cap").effective == date(2024, 1, 1)
    assert RULES.rule("state.OR.frequency_cap").effective == date(2026, 1, 1)


def test_federal_and_canadian_windows() -> None:
    assert {str(w) for w in window_rule("tcpa.quiet_hours").windows} == {"08:00-21:00"}
    weekday, weekend = window_rule("crtc.weekday_window"), window_rule("crtc.weekend_window")
    assert [str(w) for w in weekday.windows[:5]] == ["09:00-21:30"] * 5
    assert weekday.windows[5:] == (None, None)
    assert [str(w) for w in weekend.windows[5:]] == ["10:00-18:00"] * 2
    texas = window_rule("state.TX.sunday_window")
    assert str(texas.windows[6]) == "12:00-21:00"
    rhode_island = window_rule("state.RI.window")
    assert str(rhode_island.windows[5]) == "10:00-17:00"
    assert rhode_island.windows[6] is None


def test_louisiana_holidays() -> None:
    rule = RULES.rule("state.LA.restricted_days")
    assert isinstance(rule, RestrictedDayRule)
    days = rule.holidays_in(2026)
    assert "Mardi Gras" in days[date(2026, 2, 17)]
    assert "Good Friday" in days[date(2026, 4, 3)]
    assert days[date(2026, 11, 27)] == "Day after Thanksgiving"
    assert "federal holiday" in days[date(2026, 10, 12)]
    assert date(2026, 6, 2) not in days
    assert rule.holidays_in(2026) is days, "memoised"


def test_pennsylvania_legal_holidays_are_the_statute_s() -> None:
    """44 P.S. 11: Good Friday (Easter - 2) and Election Day (the Tuesday after the first
    Monday of November) are legal holidays; the day after Thanksgiving and Juneteenth are
    not; a holiday on a Sunday is kept on the Monday too."""
    rule = RULES.rule("state.PA.restricted_days")
    assert isinstance(rule, RestrictedDayRule)
    assert rule.calendars == (), "the holidays package's Pennsylvania list differs"
    good_fridays = {2026: date(2026, 4, 3), 2027: date(2027, 3, 26), 2030: date(2030, 4, 19)}
    election_days = {2026: date(2026, 11, 3), 2027: date(2027, 11, 2), 2030: date(2030, 11, 5)}
    for year in (2026, 2027, 2030):
        days = rule.holidays_in(year)
        assert days[good_fridays[year]] == "Good Friday"
        assert days[election_days[year]] == "Election Day"
        assert days[date(year, 6, 14)] == "Flag Day"
        thanksgiving = max(d for d, name in days.items() if name == "Thanksgiving Day")
        assert thanksgiving.weekday() == 3 and 22 <= thanksgiving.day <= 28
        assert thanksgiving + timedelta(days=1) not in days
        assert date(year, 6, 19) not in days or date(year, 6, 19).weekday() == 0
    assert date(2026, 6, 15) in rule.holidays_in(2026), "Flag Day 2026 is a Sunday"
    assert date(2027, 6, 15) not in rule.holidays_in(2027)


def test_rhode_island_holidays_restrict_only_monday_to_friday() -> None:
    rule = RULES.rule("state.RI.restricted_days")
    assert isinstance(rule, RestrictedDayRule)
    for year in (2026, 2027, 2028):
        assert all(day.weekday() < 5 for day in rule.holidays_in(year))
    # 2026-07-04 is a Saturday: the Saturday keeps its window, the observed Friday does not.
    assert date(2026, 7, 4) not in rule.holidays_in(2026)
    assert date(2026, 7, 3) in rule.holidays_in(2026)


def test_every_rule_is_cited_and_med_rows_are_flagged() -> None:
    for rule in RULES.rules.values():
        assert rule.citation.strip(), rule.id
        assert rule.verify is (rule.confidence == "med"), rule.id
    assert RULES.rule("state.TN.window").verify
    assert not RULES.rule("tcpa.quiet_hours").verify


def test_automated_only_rows() -> None:
    automated = {
        r.id for r in RULES.rules.values() if isinstance(r, JurisdictionRule) and r.automated_only
    }
    assert automated == {
        "state.ME.window",
        "state.ME.restricted_days",
        "state.ME.frequency_cap",
        "state.SD.window",
        "state.SD.restricted_days",
        "state.IL.window",
    }


def test_consent_and_notice() -> None:
    assert RULES.require_consent == frozenset(), "the operator may add channels, the law is in"
    kinds = {
        (r.jurisdiction, c): {k.value for k in r.kinds}
        for r in RULES.rules.values()
        if isinstance(r, ConsentRule) and Purpose.MARKETING in r.purposes
        for c in r.channels
    }
    written = {"express-written"}
    for place in ("US", "US-CT", "US-FL", "US-OK", "US-MD"):
        assert kinds[(place, Channel.CALL)] == written, place
        assert kinds[(place, Channel.SMS)] == written, place
    assert kinds[("CA", Channel.SMS)] == {
        "express-written", "express", "implied-purchase", "implied-inquiry"
    }
    for place in ("US-WA", "US-UT", "US-MN", "US-NM", "CA"):
        assert kinds[(place, Channel.CALL)] == {"express-written", "express"}, place
    assert RULES.rule("state.CT.consent").effective == date(2023, 10, 1)
    assert RULES.rule("tcpa.consent.artificial_voice").effective == date(2024, 2, 8)
    assert RULES.notice.repeat_after.days == 30
    assert RULES.notice.every_message_in == {"CA"}
    assert RULES.sms_opt_out_notice == "$sender_name: Reply STOP to opt out."


def test_territories_fall_under_the_tcpa() -> None:
    assert RULES.national["PR"] == "US"
    assert RULES.national["CA"] == "CA"
    assert "GB" not in RULES.national


def test_area_code_table() -> None:
    assert set(RULES.area_codes.by_npa["850"]) == {"America/New_York", "America/Chicago"}
    for npa in (
        "208",
        "541",
        "458",
        "270",
        "364",
        "606",
        "423",
        "219",
        "574",
        "812",
        "930",
        "850",
        "906",
        "308",
        "605",
        "701",
        "620",
        "785",
        "915",
        "432",
        "907",
    ):
        assert len(RULES.area_codes.by_npa[npa]) >= 2, npa
    assert "America/Adak" in RULES.area_codes.by_npa["907"]
    assert RULES.area_codes.region_zones["US-HI"] == ("Pacific/Honolulu",)


# --- loader errors ---------------------------------------------------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(PACKAGE_RULES_DIR, target)
    return target


def edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


TCPA = '''citation = "47 CFR 64.1200(c)(1)"'''
FL_WINDOW = 'window = { mon-sun = "08:00-20:00" }\ncitation = "Fla. Stat. 501.616(6)"'


# The window rule's exemption, ending where its note begins (the cap's has no note after it).
OREGON_EXEMPTION = (
    'within_days = 546, citation = "Or. HB 3865 (2025): a purchase within the last 18 months"'
    ' },\n]\ncitation = "Or. HB 3865 (signed 2025-07-24, in force 2026-01-01)"\n'
    'confidence = "high"'
)


@pytest.mark.parametrize(
    ("name", "file", "old", "new", "message"),
    [
        (
            "empty citation",
            "calling.toml",
            TCPA,
            'citation = "  "',
            "(tcpa.quiet_hours).citation must not be empty",
        ),
        (
            "missing citation",
            "calling.toml",
            TCPA,
            "",
            "(tcpa.quiet_hours).citation is required",
        ),
        (
            "med without verify",
            "calling.toml",
            'confidence = "med"\nverify = true\n\n# Kentucky',
            'confidence = "med"\n\n# Kentucky',
            "(state.GA.window).verify must be true",
        ),
        (
            "bad confidence",
            "calling.toml",
            TCPA + '\nconfidence = "high"',
            TCPA + '\nconfidence = "certain"',
            "(tcpa.quiet_hours).confidence must be one of",
        ),
        (
            "bad time",
            "calling.toml",
            FL_WINDOW,
            FL_WINDOW.replace("08:00-20:00", "8-20"),
            "(state.FL.window).window.mon-sun '8-20' must be HH:MM-HH:MM",
        ),
        (
            "end before start",
            "calling.toml",
            FL_WINDOW,
            FL_WINDOW.replace("08:00-20:00", "20:00-08:00"),
            "window.mon-sun",
        ),
        (
            "bad day",
            "calling.toml",
            FL_WINDOW,
            FL_WINDOW.replace("mon-sun", "mon-xyz"),
            "(state.FL.window).window.mon-xyz is not a weekday",
        ),
        (
            "day twice",
            "calling.toml",
            FL_WINDOW,
            FL_WINDOW.replace("mon-sun", 'sun = "09:00-17:00", mon-sun'),
            "(state.FL.window).window.mon-sun repeats sun",
        ),
        (
            "uncovered day",
            "calling.toml",
            'weekdays = ["sun"]\ncitation = "Miss. Code',
            'weekdays = ["sat"]\ncitation = "Miss. Code',
            "rule state.MS.window.window does not list sun",
        ),
        (
            "unknown jurisdiction",
            "calling.toml",
            'jurisdiction = "US-WI"',
            'jurisdiction = "US-XX"',
            "(state.WI.window).jurisdiction must be",
        ),
        (
            "unknown key",
            "calling.toml",
            FL_WINDOW,
            FL_WINDOW + "\nwindows = 1",
            "(state.FL.window).windows is not a known key",
        ),
        (
            "unknown channel",
            "calling.toml",
            'channels = ["call"]\npurposes',
            'channels = ["fax"]\npurposes',
            "channels has 'fax'",
        ),
        (
            "unknown purpose",
            "calling.toml",
            'purposes = ["marketing"]\nwindow = { mon-sun = "09:00',
            'purposes = ["spam"]\nwindow = { mon-sun = "09:00',
            "(state.CT.window).purposes",
        ),
        (
            "duplicate id",
            "calling.toml",
            'id = "state.WI.window"',
            'id = "state.WA.window"',
            "id duplicates 'state.WA.window'",
        ),
        (
            "check rule with wrong code",
            "calling.toml",
            'code = "SUPPRESSED"',
            'code = "QUIET_HOURS"',
            "(telephony.suppression).code must be 'SUPPRESSED'",
        ),
        (
            "unknown code",
            "calling.toml",
            'code = "FREQUENCY_CAP"',
            'code = "TOO_MANY"',
            "(state.FL.frequency_cap).code must be",
        ),
        (
            "zero cap",
            "calling.toml",
            "limit = 3",
            "limit = 0",
            "(state.FL.frequency_cap).cap.limit must be an integer >= 1",
        ),
        (
            "bad holiday calendar",
            "calling.toml",
            'subdiv = "AL"',
            'subdiv = "ZZ"',
            "(state.AL.restricted_days).holidays[0] is not a calendar",
        ),
        (
            "unknown anchor holiday",
            "calling.toml",
            'after = "Thanksgiving Day"',
            'after = "Thanksgiving"',
            "no holiday named 'Thanksgiving'",
        ),
        (
            "notice for an unknown country",
            "calling.toml",
            'every_message_in = ["CA"]',
            'every_message_in = ["MX"]',
            "every_message_in must name",
        ),
        (
            "unknown consent kind",
            "calling.toml",
            'consent_kinds = ["express-written"]\neffective = 2023-10-01',
            'consent_kinds = ["written"]\neffective = 2023-10-01',
            "(state.CT.consent).consent_kinds has 'written'",
        ),
        (
            "effective date that does not parse",
            "calling.toml",
            "effective = 2023-10-01",
            'effective = "October 2023"',
            "(state.CT.consent).effective must be a date",
        ),
        (
            "until before effective",
            "calling.toml",
            "effective = 2023-10-01",
            "effective = 2023-10-01\nuntil = 2023-01-01",
            "(state.CT.consent).until must be after effective",
        ),
        (
            "cap without a period",
            "calling.toml",
            'cap = { limit = 1, period = "30d", per = "offer" }',
            "cap = { limit = 1 }",
            "(province.BC.frequency_cap).cap.period is required",
        ),
        (
            "cap per something unknown",
            "calling.toml",
            'per = "offer" }',
            'per = "brand" }',
            "(province.BC.frequency_cap).cap.per must be one of recipient, offer",
        ),
        (
            "exemption without citation",
            "calling.toml",
            OREGON_EXEMPTION + "\nnote",
            OREGON_EXEMPTION.replace(', citation = "Or. HB 3865 (2025): a purchase within the '
                                     'last 18 months"', "", 1) + "\nnote",
            "(state.OR.window).exemptions[0].citation is required",
        ),
        (
            "defined holiday on no day",
            "calling.toml",
            '{ name = "Flag Day", month = 6, day = 14, sunday_to_monday = true }',
            '{ name = "Flag Day", month = 6, day = 31 }',
            "defined_holidays[5].day 31 is not a day of month 6",
        ),
        (
            "unknown field",
            "calling.toml",
            "effective = 2023-10-01",
            "effective = 2023-10-01\nefective_until = 2030-01-01",
            "(state.CT.consent).efective_until is not a known key",
        ),
        (
            "country twice",
            "calling.toml",
            'CA = ["CA"]',
            'CA = ["CA", "PR"]',
            "countries.CA repeats 'PR'",
        ),
        ("not TOML", "calling.toml", "\n[countries]\n", "\n[countries\n", "not valid TOML"),
        (
            "unknown zone",
            "area_codes.toml",
            'zones = ["America/Boise", "America/Los_Angeles"]',
            'zones = ["America/Boise", "America/Nowhere"]',
            "area_code[0].zones has 'America/Nowhere', not an IANA zone",
        ),
        (
            "bad area code",
            "area_codes.toml",
            'npas = ["208", "986"]',
            'npas = ["108"]',
            "area_code[0].npas has '108'",
        ),
        (
            "area code twice",
            "area_codes.toml",
            'npas = ["606"]',
            'npas = ["270"]',
            "npas repeats '270'",
        ),
        (
            "area code without citation",
            "area_codes.toml",
            'citation = "Overlay of 850 (NANPA, 2021); same geography as 850"',
            'citation = ""',
            "area_code[9].citation must not be empty",
        ),
        (
            "region missing",
            "area_codes.toml",
            'US-FL = ["America/New_York", "America/Chicago"]\n',
            "",
            "region_zones.zones lacks US-FL",
        ),
        (
            "keyword in two groups",
            "keywords.toml",
            '["START", "YES", "UNSTOP"]',
            '["START", "YES", "UNSTOP", "STOP"]',
            "opt_in.keywords has 'STOP', already in",
        ),
        (
            "keyword without letters",
            "keywords.toml",
            '["HELP", "INFO"]',
            '["HELP", "?!"]',
            "help.keywords has '?!'",
        ),
        (
            "keyword group without citation",
            "keywords.toml",
            'citation = "Twilio default opt-in keywords"\n',
            "",
            "opt_in.citation is required",
        ),
    ],
)
def test_loader_names_file_and_key(rules_dir, name, file, old, new, message) -> None:
    edit(rules_dir, file, old, new)
    with pytest.raises(RulesError) as error:
        load_calling_rules(rules_dir)
    assert message in str(error.value)
    assert str(rules_dir / file) in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$sender_name: Reply STOP to opt out. $link", "placeholders"),
        ("$sender_name: Reply NO to opt out.", "must name an opt-out keyword"),
        ("$sender_name: 100$ off", "placeholders"),
    ],
)
def test_sms_notice_template_is_checked(rules_dir, text, message) -> None:
    (rules_dir / "footers" / "sms_opt_out.txt").write_text(text + "\n", encoding="utf-8")
    with pytest.raises(RulesError, match=message):
        load_calling_rules(rules_dir)


def test_missing_required_rule(rules_dir) -> None:
    path = rules_dir / "calling.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index('[[rule]]\nid = "telephony.suppression"')
    path.write_text(text[:start] + text[text.index("[[rule]]", start + 1) :], encoding="utf-8")
    with pytest.raises(RulesError, match=r"rule 'telephony\.suppression' is missing"):
        load_calling_rules(rules_dir)


def test_missing_file(rules_dir) -> None:
    (rules_dir / "keywords.toml").unlink()
    with pytest.raises(RulesError, match=r"keywords\.toml: cannot read"):
        load_calling_rules(rules_dir)


# --- inbound text classification --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", "opt_out"),
        ("stop", "opt_out"),
        ("  Stop!! ", "opt_out"),
        ("STOPALL", "opt_out"),
        ("Unsubscribe.", "opt_out"),
        ("cancel", "opt_out"),
        ("END", "opt_out"),
        ("quit", "opt_out"),
        ("REVOKE", "opt_out"),
        ("OptOut", "opt_out"),
        ("opt out", "opt_out"),
        ("Opt-Out", "opt_out"),
        ("ARRÊT", "opt_out"),
        ("Please STOP texting me!!", "opt_out"),
        ("stop please", "opt_out"),
        ("remove me from your list", "opt_out"),
        ("Do not contact me again.", "opt_out"),
        ("Don\u2019t text me", "opt_out"),
        ("dont call me", "opt_out"),
        ("Leave me alone", "opt_out"),
        ("wrong number", "opt_out"),
        ("I want to unsubscribe", "opt_out"),
        ("yes stop", "opt_out"),
        ("START STOP", "opt_out"),
        ("Help me stop these", "opt_out"),
        ("stopall now", "opt_out"),
        ("START", "opt_in"),
        ("yes", "opt_in"),
        ("Yes!", "opt_in"),
        ("unstop", "opt_in"),
        ("HELP", "help"),
        ("info?", "help"),
        ("yes please", None),
        ("help me with my order", None),
        ("stopwatch arrived", None),
        ("Thanks, see you Tuesday", None),
        ("", None),
        ("!!!", None),
    ],
)
def test_classify_inbound_text(body, expected) -> None:
    assert classify_inbound_text(body, RULES.keywords) == expected


def test_cap_periods_read_as_statutes_say_them() -> None:
    periods = {r.id: r.period for r in RULES.rules.values() if isinstance(r, CapRule)}
    assert periods["state.FL.frequency_cap"] == "24 h"
    assert periods["state.ME.frequency_cap"] == "8 h"
    assert periods["province.BC.frequency_cap"] == "30 days"


@pytest.mark.parametrize(
    "change",
    [
        'weekdays = ["sun"]\neffective = 2027-01-01',
        'weekdays = ["sun"]\nuntil = 2027-01-01',
        'weekdays = ["sun"]\nexemptions = [{ consent_kinds = ["express"], citation = "x" }]',
    ],
)
def test_a_window_gap_must_be_closed_whenever_the_window_applies(rules_dir, change) -> None:
    """Alabama's window leaves Sunday out because its restricted-day rule closes Sunday; a
    closing rule that starts later, ends sooner or is lifted by a consent the window rule is
    not lifted by would leave Sunday open."""
    edit(rules_dir, "calling.toml", 'weekdays = ["sun"]\nholidays = [\n  { country = "US", '
         'subdiv = "AL"', change + '\nholidays = [\n  { country = "US", subdiv = "AL"')
    with pytest.raises(RulesError, match=r"state\.AL\.window\.window does not list sun"):
        load_calling_rules(rules_dir)
