"""Table tests for the pure call/text policy with the shipped rule data.

Each row is a real area code (with a 555-01xx line number, which libphonenumber accepts as
valid), a moment written in the callee's local time, and the reason codes expected. Facts
are built with `gateway.policy.callee.locate`, as the pipeline does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import (
    Account,
    CalleeLocation,
    CapClaim,
    Channel,
    Consent,
    ConsentKind,
    Facts,
    KnownLocation,
    OutboundMessage,
    Purpose,
    Role,
    TelephonyContent,
)
from gateway.policy.callee import locate
from gateway.policy.calling import SMS_OPT_OUT_NOTICE, decide_telephony
from gateway.rules.calling_loader import load_calling_rules

CALL, SMS = Channel.CALL, Channel.SMS
DEFAULT_RULES = load_calling_rules(PACKAGE_RULES_DIR)
# The table runs with consent required on both channels ([policy] require_consent), the
# strictest configuration; cases that expect an allow carry their consent.
RULES = replace(DEFAULT_RULES, require_consent=frozenset({CALL, SMS}))
MARKETING, TRANSACTIONAL = Purpose.MARKETING, Purpose.TRANSACTIONAL
EARLY = datetime(2025, 1, 1, tzinfo=UTC)
NOTICE_NOW = datetime(2026, 6, 2, 16, tzinfo=UTC)  # noon in New York, a Tuesday

# One number per state row (area code's state), plus federal-only, Canadian and split ones.
AL, CT, FL, GA, KY = "+12055550123", "+12035550123", "+13055550123", "+14045550123", "+15025550123"
LA, MA, MD, ME, MS = "+15045550123", "+16175550123", "+14105550123", "+12075550123", "+16015550123"
NJ, NV, NY, OK, OR = "+12015550123", "+17025550123", "+12125550123", "+14055550123", "+15035550123"
PA, RI, SD, TN, TX = "+12155550123", "+14015550123", "+16055550123", "+16155550123", "+12145550123"
UT, VA, WA, WI = "+18015550123", "+17035550123", "+12065550123", "+14145550123"
IL, CAL, AZ, HI = "+13125550123", "+14155550123", "+16025550123", "+18085550123"
MO = "+13145550123"  # Missouri: no rule stricter than the TCPA
NAVAJO = "+19285550123"
ON, FL_850, KY_270, MI_906 = "+14165550123", "+18505550123", "+12705550123", "+19065550123"
ID_208, TX_915, UK, TOLL_FREE = "+12085550123", "+19155550123", "+442079460123", "+18005550123"


@dataclass(frozen=True)
class Case:
    to: str
    at: str  # local time at the callee, with its UTC offset
    expect: tuple[str, ...]  # reason codes, sorted
    channel: Channel = CALL
    purpose: Purpose = MARKETING
    known: KnownLocation | None = None
    count: int = 0
    consents: tuple[Consent, ...] | None = None  # None: a current consent for the channel
    suppressed: bool = False
    rule: str = ""  # a rule id that must be among the reasons


def consent(
    to: str, channel: Channel, obtained: datetime = EARLY, expires: datetime | None = None
) -> Consent:
    return Consent(to, channel, ConsentKind.EXPRESS_WRITTEN, obtained, expires, "test")


def message(
    to: tuple[str, ...], channel: Channel = CALL, purpose: Purpose = MARKETING
) -> OutboundMessage:
    account = Account("agent", "x" * 16, Role.REP, ("*",), purpose)
    return OutboundMessage(
        id="t",
        channel=channel,
        ingress="test",
        account=account,
        envelope_sender="+14155550100",
        recipients=to,
        received_at=EARLY,
        telephony=TelephonyContent("+14155550100", "Hi"),
    )


def facts_for(case: Case) -> Facts:
    consents = case.consents
    if consents is None:
        consents = (consent(case.to, case.channel),)
    return Facts(
        suppressed=frozenset({case.to}) if case.suppressed else frozenset(),
        callees={case.to: locate(case.to, case.known, RULES.area_codes)},
        consents={case.to: consents},
        recent_contacts={case.to: dict.fromkeys(RULES.cap_windows_s, case.count)},
    )


def decide_case(case: Case, rules=RULES):
    now = datetime.fromisoformat(case.at).astimezone(UTC)
    return decide_telephony(
        message((case.to,), case.channel, case.purpose), facts_for(case), rules, now, "v-test"
    )


def c(name: str, to: str, at: str, *expect: str, **kw) -> object:
    return pytest.param(Case(to, at, tuple(sorted(set(expect))), **kw), id=name)


QH, RD, CAP, NC = "QUIET_HOURS", "RESTRICTED_DAY", "FREQUENCY_CAP", "NO_CONSENT"
TUE = "2026-06-02"  # an ordinary Tuesday
SAT, SUN = "2026-06-06", "2026-06-07"
EDT, CDT, MDT, PDT, MST, HST = "-04:00", "-05:00", "-06:00", "-07:00", "-07:00", "-10:00"

CASES = [
    # TCPA alone (Missouri has no stricter rule): 08:00 inclusive, 21:00 exclusive
    c("TCPA start minute is open", MO, f"{TUE}T08:00{CDT}"),
    c("TCPA before 08:00", MO, f"{TUE}T07:59{CDT}", QH, rule="tcpa.quiet_hours"),
    c("TCPA last minute", MO, f"{TUE}T20:59{CDT}"),
    c("TCPA 21:00 is outside", MO, f"{TUE}T21:00{CDT}", QH, rule="tcpa.quiet_hours"),
    c("TCPA applies to texts", MO, f"{TUE}T21:30{CDT}", QH, channel=SMS),
    c("California evening", CAL, f"{TUE}T20:30{PDT}"),
    # Alabama: 08-20 Mon-Sat, no Sunday, no state or federal holidays
    c("AL evening open", AL, f"{TUE}T19:30{CDT}"),
    c("AL 20:00", AL, f"{TUE}T20:00{CDT}", QH, rule="state.AL.window"),
    c("AL Sunday", AL, f"{SUN}T12:00{CDT}", RD, rule="state.AL.restricted_days"),
    c("AL Confederate Memorial Day", AL, f"2026-04-27T12:00{CDT}", RD),
    c("AL federal Columbus Day", AL, f"2026-10-12T12:00{CDT}", RD),
    # Connecticut 09-20, texts included
    c("CT 08:30", CT, f"{TUE}T08:30{EDT}", QH, rule="state.CT.window"),
    c("CT 19:59", CT, f"{TUE}T19:59{EDT}"),
    c("CT text at 20:00", CT, f"{TUE}T20:00{EDT}", QH, channel=SMS),
    # Florida 08-20, 3 per 24 h
    c("FL 20:00", FL, f"{TUE}T20:00{EDT}", QH, rule="state.FL.window"),
    c("FL 19:00", FL, f"{TUE}T19:00{EDT}"),
    c("FL third contact allowed", FL, f"{TUE}T12:00{EDT}", count=2),
    c("FL fourth contact", FL, f"{TUE}T12:00{EDT}", CAP, count=3, rule="state.FL.frequency_cap"),
    # Georgia 08-21
    c("GA 20:30", GA, f"{TUE}T20:30{EDT}"),
    c("GA 21:00", GA, f"{TUE}T21:00{EDT}", QH, rule="state.GA.window"),
    # Kentucky 10-21
    c("KY 09:30", KY, f"{TUE}T09:30{EDT}", QH, rule="state.KY.window"),
    c("KY 10:00", KY, f"{TUE}T10:00{EDT}"),
    # Louisiana 08-20 Mon-Sat, no Sunday, state holidays incl. Mardi Gras, Good Friday,
    # the day after Thanksgiving, plus federal holidays
    c("LA 20:00", LA, f"{TUE}T20:00{CDT}", QH, rule="state.LA.window"),
    c("LA ordinary noon", LA, f"{TUE}T12:00{CDT}"),
    c("LA Sunday", LA, f"{SUN}T12:00{CDT}", RD, rule="state.LA.restricted_days"),
    c("LA Mardi Gras", LA, "2026-02-17T12:00-06:00", RD),
    c("LA Good Friday", LA, f"2026-04-03T12:00{CDT}", RD),
    c("LA day after Thanksgiving", LA, "2026-11-27T12:00-06:00", RD),
    c("LA federal Columbus Day", LA, f"2026-10-12T12:00{CDT}", RD),
    # Massachusetts 08-20
    c("MA 20:00", MA, f"{TUE}T20:00{EDT}", QH, rule="state.MA.window"),
    c("MA 19:00", MA, f"{TUE}T19:00{EDT}"),
    # Maryland 08-20, 3 per 24 h
    c("MD 20:15", MD, f"{TUE}T20:15{EDT}", QH, rule="state.MD.window"),
    c("MD below cap", MD, f"{TUE}T12:00{EDT}", count=2),
    c("MD at cap", MD, f"{TUE}T12:00{EDT}", CAP, count=3, rule="state.MD.frequency_cap"),
    # Maine automated calls 09-17 Mon-Fri, no weekends, 1 per 8 h (all gateway calls are AI)
    c("ME 16:59", ME, f"{TUE}T16:59{EDT}"),
    c("ME 17:00", ME, f"{TUE}T17:00{EDT}", QH, rule="state.ME.window"),
    c("ME Saturday", ME, f"{SAT}T12:00{EDT}", RD, rule="state.ME.restricted_days"),
    c("ME text on Saturday", ME, f"{SAT}T12:00{EDT}", RD, channel=SMS),
    c(
        "ME second call in 8 h",
        ME,
        f"{TUE}T12:00{EDT}",
        CAP,
        count=1,
        rule="state.ME.frequency_cap",
    ),
    # Mississippi 08-20 Mon-Sat, no Sunday
    c("MS 20:00", MS, f"{TUE}T20:00{CDT}", QH, rule="state.MS.window"),
    c("MS Sunday", MS, f"{SUN}T12:00{CDT}", RD, rule="state.MS.restricted_days"),
    # New Jersey 08-21
    c("NJ 20:30", NJ, f"{TUE}T20:30{EDT}"),
    c("NJ 21:00", NJ, f"{TUE}T21:00{EDT}", QH, rule="state.NJ.window"),
    # Nevada 09-20
    c("NV 08:30", NV, f"{TUE}T08:30{PDT}", QH, rule="state.NV.window"),
    c("NV 19:30", NV, f"{TUE}T19:30{PDT}"),
    # New York 08-21, texts included
    c("NY 20:59", NY, f"{TUE}T20:59{EDT}"),
    c("NY text 21:05", NY, f"{TUE}T21:05{EDT}", QH, channel=SMS, rule="state.NY.window"),
    # Oklahoma 08-20, 3 per 24 h
    c("OK 20:00", OK, f"{TUE}T20:00{CDT}", QH, rule="state.OK.window"),
    c("OK at cap", OK, f"{TUE}T12:00{CDT}", CAP, count=3, rule="state.OK.frequency_cap"),
    # Oregon 08-20, 3 per 24 h
    c("OR 20:00", OR, f"{TUE}T20:00{PDT}", QH, rule="state.OR.window"),
    c("OR below cap", OR, f"{TUE}T12:00{PDT}", count=2),
    c("OR at cap", OR, f"{TUE}T12:00{PDT}", CAP, count=3, rule="state.OR.frequency_cap"),
    # Pennsylvania 08-21, no legal holidays
    c("PA 20:30", PA, f"{TUE}T20:30{EDT}"),
    # 44 P.S. 11 lists Good Friday and Election Day, not the day after Thanksgiving or
    # Juneteenth; a Sunday holiday is kept on the Monday too.
    c("PA day after Thanksgiving is no legal holiday", PA, "2026-11-27T12:00-05:00"),
    c("PA Juneteenth is no legal holiday", PA, f"2026-06-19T12:00{EDT}"),
    c("PA Good Friday", PA, f"2026-04-03T12:00{EDT}", RD, rule="state.PA.restricted_days"),
    c("PA Good Friday 2027", PA, f"2027-03-26T12:00{EDT}", RD),
    c("PA Election Day", PA, "2026-11-03T12:00-05:00", RD, rule="state.PA.restricted_days"),
    c("PA the day after Election Day", PA, "2026-11-04T12:00-05:00"),
    c("PA Flag Day on a Sunday", PA, f"2026-06-14T12:00{EDT}", RD),
    c("PA Flag Day kept on Monday", PA, f"2026-06-15T12:00{EDT}", RD),
    c("PA Flag Day 2027, a Monday", PA, f"2027-06-14T12:00{EDT}", RD),
    c("PA Tuesday after Flag Day 2027", PA, f"2027-06-15T12:00{EDT}"),
    # Rhode Island 09-18 Mon-Fri, 10-17 Sat, no Sunday, state and federal holidays
    c("RI weekday 18:00", RI, f"{TUE}T18:00{EDT}", QH, rule="state.RI.window"),
    c("RI Saturday 16:30", RI, f"{SAT}T16:30{EDT}"),
    c("RI Saturday 17:00", RI, f"{SAT}T17:00{EDT}", QH, rule="state.RI.window"),
    c("RI Saturday 09:30", RI, f"{SAT}T09:30{EDT}", QH),
    c("RI Sunday", RI, f"{SUN}T12:00{EDT}", RD, rule="state.RI.restricted_days"),
    c("RI Victory Day", RI, f"2026-08-10T12:00{EDT}", RD),
    # South Dakota automated 09-21 Mon-Fri, no weekends; 605 spans Central and Mountain
    c("SD 20:30 Central / 19:30 Mountain", SD, f"{TUE}T20:30{CDT}"),
    c("SD 09:30 Central is 08:30 Mountain", SD, f"{TUE}T09:30{CDT}", QH, rule="state.SD.window"),
    c("SD Saturday", SD, f"{SAT}T12:00{CDT}", RD, rule="state.SD.restricted_days"),
    # Tennessee: encoded 08-20 (conservative of 20/21)
    c("TN 19:30", TN, f"{TUE}T19:30{CDT}"),
    c("TN 20:00", TN, f"{TUE}T20:00{CDT}", QH, rule="state.TN.window"),
    # Texas 09-21 Mon-Sat, 12-21 Sunday
    c("TX Saturday 08:30", TX, f"{SAT}T08:30{CDT}", QH, rule="state.TX.window"),
    c("TX Sunday 11:30", TX, f"{SUN}T11:30{CDT}", QH, rule="state.TX.sunday_window"),
    c("TX Sunday 12:00", TX, f"{SUN}T12:00{CDT}"),
    c("TX Monday 21:00", TX, f"2026-06-08T21:00{CDT}", QH),
    # Utah 08-21, no Sunday, no legal holidays
    c("UT 20:30", UT, f"{TUE}T20:30{MDT}"),
    c("UT Sunday", UT, f"{SUN}T12:00{MDT}", RD, NC, rule="state.UT.restricted_days", consents=()),
    c("UT Pioneer Day", UT, f"2026-07-24T12:00{MDT}", RD, NC, consents=()),
    c("UT Christmas", UT, "2026-12-25T12:00-07:00", RD, NC, consents=()),
    # Virginia 08-21, Washington 08-20, Wisconsin 08-21
    c("VA 21:00", VA, f"{TUE}T21:00{EDT}", QH, NC, rule="state.VA.window", consents=()),
    c("WA 20:00", WA, f"{TUE}T20:00{PDT}", QH, rule="state.WA.window"),
    c("WI 20:59", WI, f"{TUE}T20:59{CDT}"),
    c("WI 21:00", WI, f"{TUE}T21:00{CDT}", QH, rule="state.WI.window"),
    # CRTC: 09:00-21:30 weekdays, 10:00-18:00 weekends
    c("CRTC weekday 21:29", ON, f"{TUE}T21:29{EDT}"),
    c("CRTC weekday 21:30", ON, f"{TUE}T21:30{EDT}", QH, rule="crtc.weekday_window"),
    c("CRTC weekday 08:59", ON, f"{TUE}T08:59{EDT}", QH, rule="crtc.weekday_window"),
    c("CRTC Saturday 09:59", ON, f"{SAT}T09:59{EDT}", QH, rule="crtc.weekend_window"),
    c("CRTC Saturday 17:59", ON, f"{SAT}T17:59{EDT}"),
    c("CRTC Sunday 18:00", ON, f"{SUN}T18:00{EDT}", QH, rule="crtc.weekend_window"),
    c(
        "CASL text without consent",
        ON,
        f"{TUE}T12:00{EDT}",
        "NO_CONSENT",
        channel=SMS,
        consents=(),
        rule="casl.consent",
    ),
    # Area codes spanning zones: allowed only if every zone is open
    c("850 at 20:30 Eastern / 19:30 Central", FL_850, f"{TUE}T20:30{EDT}", QH),
    c("850 at 08:30 Eastern / 07:30 Central", FL_850, f"{TUE}T08:30{EDT}", QH),
    c("850 at 09:00 Eastern / 08:00 Central", FL_850, f"{TUE}T09:00{EDT}"),
    c("270 at 21:30 Eastern / 20:30 Central", KY_270, f"{TUE}T21:30{EDT}", QH),
    c("270 at 10:30 Eastern / 09:30 Central", KY_270, f"{TUE}T10:30{EDT}", QH),
    c("270 at 11:00 Eastern / 10:00 Central", KY_270, f"{TUE}T11:00{EDT}"),
    c("906 at 21:30 Eastern / 20:30 Central", MI_906, f"{TUE}T21:30{EDT}", QH),
    c("208 at 21:30 Mountain / 20:30 Pacific", ID_208, f"{TUE}T21:30{MDT}", QH),
    c("915 at 20:30 Mountain / 21:30 Central", TX_915, f"{TUE}T20:30{MDT}", QH),
    # Arizona keeps no DST (except the Navajo Nation, in 928); Hawaii neither
    c("Phoenix 20:30 in June", AZ, f"{TUE}T20:30{MST}"),
    c("Phoenix 21:05 in June", AZ, f"{TUE}T21:05{MST}", QH),
    c("928 at 20:30 Phoenix / 21:30 Navajo Nation", NAVAJO, f"{TUE}T20:30{MST}", QH),
    c("Honolulu 20:59", HI, f"{TUE}T20:59{HST}"),
    c("Honolulu 21:00", HI, f"{TUE}T21:00{HST}", QH),
    # DST transition days (both Sundays): the local clock, not a fixed offset, decides
    c("2026-03-08 12:30Z is 08:30 EDT", NY, "2026-03-08T12:30+00:00"),
    c("2026-03-08 12:30Z is 07:30 CDT", IL, "2026-03-08T12:30+00:00", QH),
    c("2026-03-08 Phoenix stays MST", AZ, "2026-03-08T14:59+00:00", QH),
    c("2026-11-01 12:30Z is 07:30 EST", NY, "2026-11-01T12:30+00:00", QH),
    c("2026-11-01 13:00Z is 08:00 EST", NY, "2026-11-01T13:00+00:00"),
    c("2026-11-01 Phoenix 08:00", AZ, "2026-11-01T15:00+00:00"),
    # Midnight crossings: the callee's date decides the weekday and the holiday
    c("UTC Monday, Sunday evening in Utah", UT, "2026-06-08T01:30+00:00", RD, NC, consents=()),
    c("UTC Sunday, Saturday evening in Utah", UT, "2026-06-07T01:30+00:00"),
    c("UTC July 25, Pioneer Day evening in Utah", UT, "2026-07-25T02:00+00:00", RD, NC,
      consents=()),
    c("UTC Wednesday 03:59, 20:59 Tuesday in LA", CAL, "2026-06-03T03:59+00:00"),
    c("UTC Wednesday 04:00, 21:00 Tuesday in LA", CAL, "2026-06-03T04:00+00:00", QH),
    # Transactional: exempt from windows, days, caps, consent; never from suppression
    c("transactional at 03:00", IL, f"{TUE}T03:00{CDT}", purpose=TRANSACTIONAL),
    c("transactional on Utah Sunday", UT, f"{SUN}T07:00{MDT}", purpose=TRANSACTIONAL),
    c("transactional over FL cap", FL, f"{TUE}T12:00{EDT}", purpose=TRANSACTIONAL, count=9),
    c("transactional text without consent", NY, f"{TUE}T12:00{EDT}", purpose=TRANSACTIONAL,
      channel=SMS, consents=()),
    c("transactional AI call without consent", NY, f"{TUE}T12:00{EDT}", NC,
      purpose=TRANSACTIONAL, consents=(), rule="tcpa.consent.artificial_voice.informational"),
    c("transactional abroad", UK, "2026-06-02T12:00+01:00", purpose=TRANSACTIONAL),
    c(
        "transactional suppressed",
        NY,
        f"{TUE}T12:00{EDT}",
        "SUPPRESSED",
        purpose=TRANSACTIONAL,
        suppressed=True,
        rule="telephony.suppression",
    ),
    c(
        "marketing suppressed, only that reason",
        NY,
        f"{TUE}T23:00{EDT}",
        "SUPPRESSED",
        suppressed=True,
    ),
    # A known location adds candidates and rules; it never removes the number's
    c(
        "known zone same as number's",
        NY,
        f"{TUE}T08:30{EDT}",
        known=KnownLocation(timezone="America/New_York"),
    ),
    c(
        "known zone in the west",
        NY,
        f"{TUE}T08:30{EDT}",
        QH,
        known=KnownLocation(timezone="America/Los_Angeles"),
    ),
    c(
        "known coordinates in Phoenix",
        NY,
        f"{TUE}T08:30{EDT}",
        QH,
        known=KnownLocation(latitude=33.45, longitude=-112.07),
    ),
    c(
        "known region Texas on Sunday",
        NY,
        f"{SUN}T11:30{EDT}",
        QH,
        known=KnownLocation(region="US-TX"),
        rule="state.TX.sunday_window",
    ),
    c(
        "known region Utah on Sunday",
        IL,
        f"{SUN}T12:00{CDT}",
        RD,
        NC,
        known=KnownLocation(region="Utah"),
        consents=(),
    ),
    c(
        "known region Ontario brings CRTC",
        NY,
        f"{SAT}T09:30{EDT}",
        QH,
        known=KnownLocation(region="CA-ON"),
        rule="crtc.weekend_window",
    ),
    c(
        "unreadable known zone",
        NY,
        f"{TUE}T12:00{EDT}",
        "TIMEZONE_UNKNOWN",
        known=KnownLocation(timezone="Mars/Olympus_Mons"),
    ),
    c(
        "unreadable known region",
        NY,
        f"{TUE}T12:00{EDT}",
        "TIMEZONE_UNKNOWN",
        known=KnownLocation(region="Atlantis"),
    ),
    # Consent (required on calls and texts by the shipped data)
    c(
        "no consent for a call",
        NY,
        f"{TUE}T12:00{EDT}",
        "NO_CONSENT",
        consents=(),
        rule="tcpa.consent.artificial_voice",
    ),
    c(
        "expired consent",
        NY,
        f"{TUE}T12:00{EDT}",
        "NO_CONSENT",
        consents=(consent(NY, CALL, expires=datetime(2026, 6, 1, tzinfo=UTC)),),
    ),
    c(
        "consent obtained later",
        NY,
        f"{TUE}T12:00{EDT}",
        "NO_CONSENT",
        consents=(consent(NY, CALL, obtained=datetime(2026, 6, 3, tzinfo=UTC)),),
    ),
    c(
        "consent for texts only",
        NY,
        f"{TUE}T12:00{EDT}",
        "NO_CONSENT",
        consents=(consent(NY, SMS),),
    ),
    c(
        "consent not yet expired",
        NY,
        f"{TUE}T12:00{EDT}",
        consents=(consent(NY, CALL, expires=datetime(2026, 6, 3, tzinfo=UTC)),),
    ),
    # Numbers
    c(
        "spaces are not E.164",
        "+1 212 555 0123",
        f"{TUE}T12:00{EDT}",
        "INVALID_RECIPIENT",
        rule="telephony.number.valid",
    ),
    c("national format", "2125550123", f"{TUE}T12:00{EDT}", "INVALID_RECIPIENT"),
    c("no area code begins with 1", "+11235550123", f"{TUE}T12:00{EDT}", "INVALID_RECIPIENT"),
    c("too short", "+1212555012", f"{TUE}T12:00{EDT}", "INVALID_RECIPIENT"),
    c("country without rules", UK, "2026-06-02T12:00+01:00", "DESTINATION_NOT_COVERED"),
    c("toll-free spans every NANP zone, no state", TOLL_FREE, f"{TUE}T12:00{EDT}", QH,
      "TIMEZONE_UNKNOWN"),
]


@pytest.mark.parametrize("case", CASES)
def test_decision(case: Case) -> None:
    decision = decide_case(case)
    [recipient] = decision.recipients
    codes = tuple(sorted({r.code for r in recipient.reasons}))
    assert codes == case.expect, [r.message for r in recipient.reasons]
    if case.rule:
        assert case.rule in {r.rule for r in recipient.reasons}
        assert case.rule in decision.rules_applied
    assert decision.rules_version == "v-test"
    assert not decision.message_reasons


def test_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60


def test_reason_reads_like_the_law() -> None:
    decision = decide_case(Case(MO, f"{TUE}T21:14{CDT}", (QH,)))
    [reason] = decision.all_reasons()
    assert reason.message == (
        "21:14 in America/Chicago is outside the TCPA window 08:00-21:00 (47 CFR 64.1200(c)(1))"
    )
    assert reason.rule == "tcpa.quiet_hours"


def test_split_area_code_names_the_closed_zone_only() -> None:
    decision = decide_case(Case(FL_850, f"{TUE}T20:30{EDT}", (QH,)))
    [reason] = decision.all_reasons()
    assert reason.message.startswith("20:30 in America/New_York is outside the Florida window")
    evidence = decision.evidence[FL_850]
    assert evidence["zones"] == ["America/Chicago", "America/New_York"]
    assert evidence["local_times"]["America/Chicago"].startswith(f"{TUE}T19:30")
    assert evidence["regions"] == ["US-FL"]


def test_holiday_reason_names_the_holiday() -> None:
    decision = decide_case(Case(LA, f"2026-04-03T12:00{CDT}", (RD,)))
    [reason] = decision.all_reasons()
    assert "Good Friday (Louisiana state holiday)" in reason.message
    assert "La. R.S. 45:844.31" in reason.message


def test_per_day_window_names_the_day() -> None:
    decision = decide_case(Case(RI, f"{SAT}T17:30{EDT}", (QH,)))
    [reason] = decision.all_reasons()
    assert "outside the Rhode Island window 10:00-17:00 on Saturdays" in reason.message


def test_cap_claims_for_every_cap_that_applies() -> None:
    known = KnownLocation(region="US-MD")
    decision = decide_case(Case(FL, f"{TUE}T12:00{EDT}", (), count=2, known=known))
    assert decision.allowed
    assert set(decision.caps) == {
        CapClaim(FL, "state.FL.frequency_cap", 3, 86400),
        CapClaim(FL, "state.MD.frequency_cap", 3, 86400),
    }


def test_no_cap_claims_without_caps_or_for_blocked_recipients() -> None:
    assert decide_case(Case(NY, f"{TUE}T12:00{EDT}", ())).caps == ()
    assert decide_case(Case(FL, f"{TUE}T21:00{EDT}", (QH,), count=1)).caps == ()
    assert decide_case(Case(FL, f"{TUE}T12:00{EDT}", (), purpose=TRANSACTIONAL)).caps == ()


def test_marketing_call_needs_written_consent_by_default() -> None:
    """FCC 24-17: an AI voice is an artificial voice, so every marketing call of this gateway
    needs prior express written consent, with no configuration."""
    call = Case(NY, f"{TUE}T12:00{EDT}", (), consents=())
    [reason] = decide_case(call, DEFAULT_RULES).all_reasons()
    assert (reason.code, reason.rule) == (NC, "tcpa.consent.artificial_voice")
    express_only = Case(NY, f"{TUE}T12:00{EDT}", (), consents=(
        Consent(NY, CALL, ConsentKind.EXPRESS, EARLY, None, "web form"),
    ))
    assert not decide_case(express_only, DEFAULT_RULES).allowed
    assert decide_case(Case(NY, f"{TUE}T12:00{EDT}", ()), DEFAULT_RULES).allowed
    transactional = Case(NY, f"{TUE}T12:00{EDT}", (), consents=(), purpose=TRANSACTIONAL,
                         channel=SMS)
    assert decide_case(transactional, DEFAULT_RULES).allowed


def test_operator_can_require_consent_where_no_law_does() -> None:
    """[policy] require_consent: any kind of consent, on the listed channels, everywhere."""
    ebr = (Consent(MO, SMS, ConsentKind.EBR, EARLY, None, "purchase"),)
    text = Case(MO, f"{TUE}T12:00{CDT}", (), channel=SMS, consents=ebr)
    assert "tcpa.consent.marketing_text" in {r.rule for r in decide_case(text).all_reasons()}
    canada = "+14165550123"
    implied = (Consent(canada, SMS, ConsentKind.IMPLIED_INQUIRY, EARLY, None, "inquiry"),)
    relaxed = replace(DEFAULT_RULES, require_consent=frozenset())
    text_ca = Case(canada, f"{TUE}T12:00{EDT}", (), channel=SMS, consents=implied)
    assert decide_case(text_ca, relaxed).allowed
    strict = replace(DEFAULT_RULES, require_consent=frozenset({SMS}))
    none = Case(canada, f"{TUE}T12:00{EDT}", (), channel=SMS, consents=())
    rules = {r.rule for r in decide_case(none, strict).all_reasons()}
    assert rules == {"casl.consent", "operator.consent.required"}


def test_missing_location_fact_blocks() -> None:
    decision = decide_telephony(message((NY,)), Facts(), RULES, NOTICE_NOW, "v")
    [reason] = decision.all_reasons()
    assert (reason.code, reason.rule) == ("TIMEZONE_UNKNOWN", "telephony.callee.located")


def test_location_without_zone_blocks_marketing_only() -> None:
    location = CalleeLocation(NY, "US", (), ("US-NY",))
    facts = Facts(callees={NY: location}, consents={NY: (consent(NY, CALL),)})
    now = datetime(2026, 6, 2, 16, tzinfo=UTC)
    blocked = decide_telephony(message((NY,)), facts, RULES, now, "v")
    assert [r.code for r in blocked.all_reasons()] == ["TIMEZONE_UNKNOWN"]
    allowed = decide_telephony(message((NY,), purpose=TRANSACTIONAL), facts, RULES, now, "v")
    assert allowed.allowed


def test_unknown_zone_name_blocks() -> None:
    location = CalleeLocation(NY, "US", ("America/New_York", "Nowhere/Atlantis"), ("US-NY",))
    facts = Facts(callees={NY: location}, consents={NY: (consent(NY, CALL),)})
    now = datetime(2026, 6, 2, 16, tzinfo=UTC)
    [reason] = decide_telephony(message((NY,)), facts, RULES, now, "v").all_reasons()
    assert reason.code == "TIMEZONE_UNKNOWN"
    assert "Nowhere/Atlantis" in reason.message


def test_several_recipients_are_decided_separately() -> None:
    now = datetime.fromisoformat(f"{TUE}T20:30{EDT}")
    facts = Facts(
        callees={n: locate(n, None, RULES.area_codes) for n in (NY, FL)},
        consents={n: (consent(n, CALL),) for n in (NY, FL)},
    )
    decision = decide_telephony(message((NY, FL)), facts, RULES, now, "v")
    assert decision.allowed_recipients == (NY,)
    assert [r.recipient for r in decision.blocked_recipients] == [FL]
    assert set(decision.evidence) == {NY, FL}
    assert "state.FL.window" in decision.rules_applied
    assert "state.NY.window" in decision.rules_applied


@pytest.mark.parametrize(
    ("name", "to", "channel", "purpose", "last_notice", "expected"),
    [
        ("first marketing text", NY, SMS, MARKETING, None, True),
        ("notice 10 days ago", NY, SMS, MARKETING, timedelta(days=10), False),
        ("notice 29 days ago", NY, SMS, MARKETING, timedelta(days=29, hours=23), False),
        ("notice 30 days ago", NY, SMS, MARKETING, timedelta(days=30), True),
        ("notice 45 days ago", NY, SMS, MARKETING, timedelta(days=45), True),
        ("Canada: every marketing text", ON, SMS, MARKETING, timedelta(days=1), True),
        ("calls carry no text notice", NY, CALL, MARKETING, None, False),
        ("transactional text", NY, SMS, TRANSACTIONAL, None, False),
    ],
)
def test_sms_opt_out_notice(name, to, channel, purpose, last_notice, expected) -> None:
    facts = Facts(
        callees={to: locate(to, None, RULES.area_codes)},
        consents={to: (consent(to, channel),)},
        notice_sent_at={} if last_notice is None else {to: NOTICE_NOW - last_notice},
    )
    decision = decide_telephony(message((to,), channel, purpose), facts, RULES, NOTICE_NOW, "v")
    assert decision.allowed
    assert (SMS_OPT_OUT_NOTICE in decision.obligations) is expected


def test_no_notice_for_a_blocked_text() -> None:
    facts = Facts(callees={NY: locate(NY, None, RULES.area_codes)}, consents={})
    decision = decide_telephony(message((NY,), SMS), facts, RULES, NOTICE_NOW, "v")
    assert not decision.allowed
    assert decision.obligations == ()


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_telephony(message((NY,)), Facts(), RULES, datetime(2026, 6, 2, 12), "v")


def test_email_is_not_a_telephony_channel() -> None:
    email = replace(message((NY,)), channel=Channel.EMAIL)
    with pytest.raises(ValueError, match="not a call or text"):
        decide_telephony(email, Facts(), RULES, NOTICE_NOW, "v")
