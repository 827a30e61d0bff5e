"""Where the callee may be: number validation, candidate zones, regions, known locations.

The area-code table's cases are derived from the shipped data and the installed
libphonenumber metadata; the fact cases check what the data must say (docs/compliance.md
3.6); the decisions at the end go through the pure policy with the shipped rules.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import phonenumbers
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from phonenumbers import geocoder
from phonenumbers import timezone as number_timezone
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import (
    Account,
    Channel,
    Facts,
    KnownLocation,
    OutboundMessage,
    Purpose,
    Role,
    TelephonyContent,
)
from gateway.policy.callee import locate, region_code
from gateway.policy.calling import decide_telephony
from gateway.rules.calling_loader import load_calling_rules
from gateway.rules.geography import SUBDIVISIONS, US_TERRITORIES

RULES = load_calling_rules(PACKAGE_RULES_DIR)
AREA_CODES = RULES.area_codes
NANP_REGIONS = phonenumbers.region_codes_for_country_code(1)


@pytest.mark.parametrize(
    ("number", "country", "zones", "regions"),
    [
        ("+12125550123", "US", {"America/New_York"}, ("US-NY",)),
        ("+18505550123", "US", {"America/New_York", "America/Chicago"}, ("US-FL",)),
        ("+12705550123", "US", {"America/New_York", "America/Chicago"}, ("US-KY",)),
        ("+19065550123", "US", {"America/Detroit", "America/Menominee"}, ("US-MI",)),
        ("+12085550123", "US", {"America/Boise", "America/Los_Angeles"}, ("US-ID",)),
        ("+19155550123", "US", {"America/Denver", "America/Chicago"}, ("US-TX",)),
        ("+16025550123", "US", {"America/Phoenix"}, ("US-AZ",)),
        ("+19285550123", "US", {"America/Phoenix", "America/Denver"}, ("US-AZ",)),
        ("+18085550123", "US", {"Pacific/Honolulu"}, ("US-HI",)),
        ("+19075550123", "US", {"America/Anchorage", "America/Adak"}, ("US-AK",)),
        ("+12025550123", "US", {"America/New_York"}, ("US-DC",)),
        ("+13605550123", "US", {"America/Los_Angeles"}, ("US-WA",)),
        ("+14165550123", "CA", {"America/Toronto"}, ("CA-ON",)),
        ("+18075550123", "CA", {"America/Toronto", "America/Winnipeg"}, ("CA-ON",)),
        ("+19025550123", "CA", {"America/Halifax"}, ("CA-NS", "CA-PE")),
        (
            "+18675550123",
            "CA",
            {"America/Iqaluit", "America/Whitehorse"},
            ("CA-NT", "CA-NU", "CA-YT"),
        ),
        ("+17875550123", "PR", {"America/Puerto_Rico"}, ("US-PR",)),
        ("+442079460123", "GB", {"Europe/London"}, ()),
    ],
)
def test_number_location(number, country, zones, regions) -> None:
    location = locate(number, None, AREA_CODES)
    assert location.problem == ""
    assert location.e164 == number
    assert location.country == country
    assert zones <= set(location.zones)
    assert location.regions == regions
    assert list(location.zones) == sorted(location.zones)
    assert "Etc/Unknown" not in location.zones


def test_toll_free_has_no_region_and_every_zone() -> None:
    location = locate("+18005550123", None, AREA_CODES)
    assert location.regions == ()
    assert {"Pacific/Honolulu", "America/New_York", "America/St_Johns"} <= set(location.zones)


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("+1 212 555 0123", "not an E.164 number"),
        ("12125550123", "not an E.164 number"),
        ("2125550123", "not an E.164 number"),
        ("+1-212-555-0123", "not an E.164 number"),
        ("tel:+12125550123", "not an E.164 number"),
        ("", "not an E.164 number"),
        ("+4407911123456", "did you mean +447911123456?"),
        ("+11235550123", "no such number range"),  # an area code never begins with 1
        ("+12121230123", "no such number range"),  # nor an exchange
        ("+12120230123", "no such number range"),  # nor with 0
        ("+1212555012", "too short"),
        ("+121255501234", "too long"),
        ("+99912345678", "country code is not assigned"),
    ],
)
def test_invalid_numbers_say_why(number, problem) -> None:
    location = locate(number, None, AREA_CODES)
    assert problem in location.problem
    assert location.zones == ()
    assert location.regions == ()


def test_every_geographic_nanp_area_code_has_a_region() -> None:
    """The geocoder-name table covers every US and Canadian area code libphonenumber knows."""
    unmapped = []
    for npa in range(200, 1000):
        location = locate(f"+1{npa}5550123", None, AREA_CODES)
        if location.problem or location.country not in ("US", "CA"):
            continue
        parsed = phonenumbers.parse(location.e164)
        description = geocoder.description_for_number(parsed, "en")
        # non-geographic numbers (toll-free, 5XX, 600) describe only their country, if at all
        geographic = description not in ("", "Canada", "United States")
        if geographic and not location.regions:
            unmapped.append(npa)
    assert unmapped == []


def test_area_code_table_zones_are_added() -> None:
    for npa, zones in AREA_CODES.by_npa.items():
        location = locate(f"+1{npa}5550123", None, AREA_CODES)
        assert location.problem == "", npa
        assert set(zones) <= set(location.zones), npa


# --- Area codes whose libphonenumber zones are wrong: replacing entries --------------------


def exchange_prefixes(npa: str) -> list[str]:
    """libphonenumber's zone prefixes longer than "1" + the area code: exchanges it knows."""
    return sorted(k for k in TIMEZONE_DATA if k.startswith(f"1{npa}") and len(k) > 4)


def number_at(prefix: str) -> str:
    """A number under `prefix` whose zones come from `prefix` itself (no longer prefix)."""
    for fill in range(10 ** (11 - len(prefix))):
        digits = f"{prefix}{fill:0{11 - len(prefix)}d}"
        longer = (digits[:n] for n in range(len(prefix) + 1, TIMEZONE_LONGEST_PREFIX + 1))
        if digits[4] not in "01" and not any(k in TIMEZONE_DATA for k in longer):
            return f"+{digits}"
    raise AssertionError(f"no number under {prefix}")


def unknown_exchange(npa: str) -> str:
    """A number of `npa` in an exchange libphonenumber has no zone of its own for."""
    known = exchange_prefixes(npa)
    for nxx in range(200, 1000):
        number = f"+1{npa}{nxx}0123"
        if not any(number[1:].startswith(prefix) for prefix in known):
            return number
    raise AssertionError(f"libphonenumber knows every exchange of {npa}")


REPLACING = sorted(AREA_CODES.replacing)
PRECISE = [(npa, prefix) for npa in REPLACING for prefix in exchange_prefixes(npa)]


def test_replacing_area_codes_are_the_ones_whose_default_is_wrong() -> None:
    assert set(REPLACING) == {"689", "407", "321", "867", "306", "639", "474"}


@pytest.mark.parametrize("npa", REPLACING)
def test_replacing_entry_is_the_whole_answer_for_an_exchange_libphonenumber_lacks(npa) -> None:
    location = locate(unknown_exchange(npa), None, AREA_CODES)
    assert location.problem == ""
    assert set(location.zones) == set(AREA_CODES.by_npa[npa])


@pytest.mark.parametrize(("npa", "prefix"), PRECISE)
def test_replacing_entry_keeps_a_zone_libphonenumber_knows_for_the_exchange(npa, prefix) -> None:
    number = number_at(prefix)
    exchange_zones = set(TIMEZONE_DATA[prefix])
    location = locate(number, None, AREA_CODES)
    assert set(location.zones) == set(AREA_CODES.by_npa[npa]) | exchange_zones


def test_every_area_code_entry_adds_to_what_libphonenumber_knows() -> None:
    for npa, zones in AREA_CODES.by_npa.items():
        if npa in AREA_CODES.replacing:
            continue
        for number in [f"+1{npa}5550123", *map(number_at, exchange_prefixes(npa))]:
            parsed = phonenumbers.parse(number)
            library = set(number_timezone.time_zones_for_number(parsed)) - {"Etc/Unknown"}
            assert set(locate(number, None, AREA_CODES).zones) == library | set(zones), number


NORTH = {
    "America/Whitehorse", "America/Dawson", "America/Edmonton", "America/Inuvik",
    "America/Cambridge_Bay", "America/Rankin_Inlet", "America/Resolute", "America/Iqaluit",
}
SASKATCHEWAN = {"America/Regina", "America/Swift_Current", "America/Edmonton"}


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        # Orlando: libphonenumber says Chicago for 689; Central Florida keeps Eastern time
        ("+16895550123", {"America/New_York"}),
        ("+16892120123", {"America/New_York"}),
        ("+14075550123", {"America/New_York"}),
        ("+13215550123", {"America/New_York"}),
        # Saskatchewan keeps Central Standard time all year; libphonenumber says Winnipeg for 474
        ("+14745550123", SASKATCHEWAN),
        ("+14742120123", SASKATCHEWAN),
        ("+13065550123", SASKATCHEWAN),
        ("+16395550123", SASKATCHEWAN),
        # 867 exchanges libphonenumber does not know: its default Fort Nelson is dropped
        ("+18675550123", NORTH),
        ("+18672000123", NORTH),
        # Yukon exchanges: libphonenumber's Vancouver stays (stricter), Yukon's own zone is in
        ("+18674560123", NORTH | {"America/Vancouver"}),  # Whitehorse
        ("+18679930123", NORTH | {"America/Vancouver"}),  # Dawson
        ("+18676690123", NORTH),  # Yellowknife: libphonenumber's Edmonton is right
        # Kenton, OK keeps Mountain time; libphonenumber gives all of 580 Central
        ("+15805550123", {"America/Chicago", "America/Denver"}),
        ("+15806680123", {"America/Chicago", "America/Denver"}),
    ],
)
def test_area_code_corrections(number, zones) -> None:
    assert set(locate(number, None, AREA_CODES).zones) == zones


@pytest.mark.parametrize(
    ("known", "zones", "regions"),
    [
        (KnownLocation(timezone="America/New_York"), {"America/New_York"}, {"US-NY"}),
        (
            KnownLocation(timezone="America/Los_Angeles"),
            {"America/New_York", "America/Los_Angeles"},
            {"US-NY"},
        ),
        (
            KnownLocation(latitude=33.45, longitude=-112.07),
            {"America/New_York", "America/Phoenix"},
            {"US-NY"},
        ),
        (
            KnownLocation(region="TX"),
            {"America/New_York", "America/Chicago", "America/Denver"},
            {"US-NY", "US-TX"},
        ),
        (
            KnownLocation(region="Florida"),
            {"America/New_York", "America/Chicago"},
            {"US-NY", "US-FL"},
        ),
        (
            KnownLocation(region="ON"),
            {"America/New_York", "America/Toronto", "America/Winnipeg", "America/Atikokan"},
            {"US-NY", "CA-ON"},
        ),
        # an explicit zone wins over the region's zones; the region still adds its rules
        (
            KnownLocation(timezone="America/Chicago", region="US-FL"),
            {"America/New_York", "America/Chicago"},
            {"US-NY", "US-FL"},
        ),
        (KnownLocation(postal_code="10001"), {"America/New_York"}, {"US-NY"}),
        (KnownLocation(), {"America/New_York"}, {"US-NY"}),
    ],
)
def test_known_location_adds_candidates(known, zones, regions) -> None:
    location = locate("+12125550123", known, AREA_CODES)
    assert set(location.zones) == zones
    assert set(location.regions) == regions


PANHANDLE = "+18505550123"  # Florida 850: Eastern, and Central west of the Apalachicola
EASTERN, CENTRAL = "America/New_York", "America/Chicago"


@pytest.mark.parametrize(
    ("number", "known", "zones", "regions"),
    [
        # narrowing: an address in the number's own state, on one side of its split
        (PANHANDLE, KnownLocation(region="FL", timezone=CENTRAL), {CENTRAL}, {"US-FL"}),
        (PANHANDLE, KnownLocation(region="US-FL", timezone=EASTERN), {EASTERN}, {"US-FL"}),
        (  # Pensacola
            PANHANDLE,
            KnownLocation(region="Florida", latitude=30.42, longitude=-87.22),
            {CENTRAL},
            {"US-FL"},
        ),
        ("+12705550123", KnownLocation(region="KY", timezone=CENTRAL), {CENTRAL}, {"US-KY"}),
        (  # 867 spans three territories: a Yukon address leaves Yukon's zones, every region
            "+18675550123",
            KnownLocation(region="YT"),
            {"America/Whitehorse", "America/Dawson"},
            {"CA-NT", "CA-NU", "CA-YT"},
        ),
        (  # Whitehorse, by its coordinates
            "+18675550123",
            KnownLocation(region="Yukon", latitude=60.72, longitude=-135.05),
            {"America/Whitehorse"},
            {"CA-NT", "CA-NU", "CA-YT"},
        ),
        # the state's own zones are all the number's: nothing to narrow
        (PANHANDLE, KnownLocation(region="FL"), {EASTERN, CENTRAL}, {"US-FL"}),
        # widening: another state (the number may have moved) adds its zones and its rules
        (
            PANHANDLE,
            KnownLocation(region="AL", timezone=CENTRAL),
            {EASTERN, CENTRAL},
            {"US-FL", "US-AL"},
        ),
        (
            PANHANDLE,
            KnownLocation(region="CA", timezone="America/Los_Angeles"),
            {EASTERN, CENTRAL, "America/Los_Angeles"},
            {"US-FL", "US-CA"},
        ),
        # no region: the address cannot be placed in the number's state
        (PANHANDLE, KnownLocation(timezone=CENTRAL), {EASTERN, CENTRAL}, {"US-FL"}),
        (
            PANHANDLE,
            KnownLocation(latitude=30.42, longitude=-87.22),
            {EASTERN, CENTRAL},
            {"US-FL"},
        ),
        # the number's state but a zone the number does not span: adds
        (
            PANHANDLE,
            KnownLocation(region="FL", timezone="America/Denver"),
            {EASTERN, CENTRAL, "America/Denver"},
            {"US-FL"},
        ),
        # a zone its own region does not have is a contradiction, not a side: adds
        (
            "+18675550123",
            KnownLocation(region="NT", timezone="America/Iqaluit"),
            NORTH,
            {"CA-NT", "CA-NU", "CA-YT"},
        ),
    ],
)
def test_known_location_narrows_only_within_the_numbers_own_span(
    number, known, zones, regions
) -> None:
    location = locate(number, known, AREA_CODES)
    assert set(location.zones) == zones
    assert set(location.regions) == regions


@pytest.mark.parametrize(
    "known",
    [
        KnownLocation(timezone="Mars/Olympus_Mons"),
        KnownLocation(timezone="EST+5"),
        KnownLocation(latitude=33.45),
        KnownLocation(latitude=95.0, longitude=-112.0),
        KnownLocation(latitude=33.45, longitude=500.0),
        KnownLocation(region="Atlantis"),
    ],
)
def test_unreadable_known_location_leaves_zone_unknown(known) -> None:
    location = locate("+12125550123", known, AREA_CODES)
    assert location.problem == ""
    assert location.zones == ()
    assert location.regions == ("US-NY",)


@pytest.mark.parametrize(
    ("text", "country", "code"),
    [
        ("US-FL", "", "US-FL"),
        ("us-fl", "", "US-FL"),
        (" FL ", "US", "US-FL"),
        ("Florida", "", "US-FL"),
        ("new york", "", "US-NY"),
        ("Washington State", "", "US-WA"),
        ("Washington D.C.", "", "US-DC"),
        ("ON", "US", "CA-ON"),
        ("QC", "CA", "CA-QC"),
        ("Québec", "", "CA-QC"),
        ("CA", "US", "US-CA"),
        ("CA", "CA", "US-CA"),
        ("CA-ON", "US", "CA-ON"),
        ("PR", "PR", "US-PR"),
        ("ZZ", "US", None),
        ("Atlantis", "", None),
        ("", "", None),
    ],
)
def test_region_code(text, country, code) -> None:
    assert region_code(text, country) == code


# --- US territories ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "country", "zone", "region"),
    [
        ("+17875550123", "PR", "America/Puerto_Rico", "US-PR"),
        ("+19395550123", "PR", "America/Puerto_Rico", "US-PR"),
        ("+13406421234", "VI", "America/St_Thomas", "US-VI"),
        ("+16713001234", "GU", "Pacific/Guam", "US-GU"),
        ("+16702345678", "MP", "Pacific/Saipan", "US-MP"),
        ("+16846221234", "AS", "Pacific/Pago_Pago", "US-AS"),
    ],
)
def test_territory_numbers_have_their_zone_and_region(number, country, zone, region) -> None:
    location = locate(number, None, AREA_CODES)
    assert (location.country, location.zones, location.regions) == (country, (zone,), (region,))
    assert location.zones == AREA_CODES.region_zones[region]


def test_territories_are_the_countries_under_the_tcpa() -> None:
    """Every country the rules put under the US jurisdiction, other than the US, is a
    territory with its own region, and no other country is."""
    under_us = {country for country, national in RULES.national.items() if national == "US"}
    assert set(US_TERRITORIES) == under_us - {"US"}
    assert set(US_TERRITORIES.values()) <= set(SUBDIVISIONS)


# --- NANP countries outside the US and Canada ---------------------------------------------


def example_numbers(region: str) -> list[str]:
    kinds = (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
    numbers = (phonenumbers.example_number_for_type(region, kind) for kind in kinds)
    return sorted(
        {phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) for n in numbers if n}
    )


NANP_EXAMPLES = [(region, n) for region in NANP_REGIONS for n in example_numbers(region)]


@pytest.mark.parametrize(("region", "number"), NANP_EXAMPLES)
def test_every_nanp_number_keeps_its_own_country(region, number) -> None:
    """Only US and Canadian numbers get a state or province, territories their own region;
    a number of another NANP country is never read as a US one."""
    location = locate(number, None, AREA_CODES)
    assert location.problem == ""
    assert location.country == region
    if region in ("US", "CA"):
        assert all(r.startswith(f"{region}-") for r in location.regions)
    elif region in US_TERRITORIES:
        assert location.regions == (US_TERRITORIES[region],)
    else:
        assert location.regions == ()
        assert region not in RULES.national


# --- NANP numbers libphonenumber does not know ---------------------------------------------


def parsed_example(npa: int) -> phonenumbers.PhoneNumber:
    return phonenumbers.parse(f"+1{npa}5550123")


# Area codes libphonenumber knows nothing of (not even the country), and area codes of
# countries whose exchanges it lists one by one, where 555 is not among them.
UNKNOWN_NPAS = [
    str(npa)
    for npa in range(200, 1000)
    if phonenumbers.region_code_for_number(parsed_example(npa)) is None
]
UNLISTED_EXCHANGES = [
    (str(npa), region)
    for npa in range(200, 1000)
    if not phonenumbers.is_valid_number(parsed_example(npa))
    and (region := phonenumbers.region_code_for_number(parsed_example(npa))) is not None
]


def test_some_area_codes_are_unknown_to_libphonenumber() -> None:
    # N9X codes are reserved for expanding the plan: no metadata will ever list one
    assert {"290", "555"} <= set(UNKNOWN_NPAS)
    assert ("242", "BS") in UNLISTED_EXCHANGES


@pytest.mark.parametrize("npa", UNKNOWN_NPAS)
def test_an_area_code_libphonenumber_lacks_is_a_nanp_number_of_unknown_country(npa) -> None:
    location = locate(f"+1{npa}5550123", None, AREA_CODES)
    assert location.problem == ""
    assert (location.country, location.regions) == ("", ())
    assert set(location.zones) == set(AREA_CODES.by_npa.get(npa, ()))


@pytest.mark.parametrize(("npa", "region"), UNLISTED_EXCHANGES)
def test_an_exchange_libphonenumber_lacks_keeps_the_country_of_its_area_code(npa, region) -> None:
    """A territory's new exchange is checked in the territory's zone (so that a known address
    elsewhere only adds to it); elsewhere no zone can be told."""
    location = locate(f"+1{npa}5550123", None, AREA_CODES)
    territory = US_TERRITORIES.get(region)
    zones = AREA_CODES.region_zones[territory] if territory else ()
    assert (location.problem, location.country, location.zones) == ("", region, tuple(zones))
    assert location.regions == ((territory,) if territory else ())


@pytest.mark.parametrize("npa", ["624", "861", "357", "483"])
def test_new_area_codes_are_never_invalid(npa) -> None:
    """Valid or unknown, whichever the installed metadata says: never INVALID_RECIPIENT."""
    location = locate(f"+1{npa}5550123", None, AREA_CODES)
    assert location.problem == ""
    assert (location.country == "") == (npa in UNKNOWN_NPAS)


def test_a_known_address_does_not_make_an_unknown_nanp_number_american() -> None:
    location = locate("+12905550123", KnownLocation(region="NY"), AREA_CODES)
    assert location.country == ""
    assert location.regions == ("US-NY",)


# --- Decisions through the policy with the shipped rules -----------------------------------

NOON_UTC = datetime.fromisoformat("2026-06-02T16:00:00+00:00")  # a Tuesday


def decide(
    to: str,
    now: datetime = NOON_UTC,
    purpose: Purpose = Purpose.MARKETING,
    known: KnownLocation | None = None,
    suppressed: bool = False,
) -> tuple[set[str], list[str]]:
    """The reason codes and texts for one text message to `to`."""
    account = Account("agent", "x" * 16, Role.REP, ("*",), purpose)
    message = OutboundMessage(
        id="t",
        channel=Channel.SMS,
        ingress="test",
        account=account,
        envelope_sender="+14155550100",
        recipients=(to,),
        received_at=now,
        telephony=TelephonyContent("+14155550100", "Hi"),
    )
    facts = Facts(
        suppressed=frozenset({to}) if suppressed else frozenset(),
        callees={to: locate(to, known, AREA_CODES)},
    )
    [recipient] = decide_telephony(message, facts, RULES, now, "v-test").recipients
    return {r.code for r in recipient.reasons}, [r.message for r in recipient.reasons]


@pytest.mark.parametrize(
    "number", ["+17875550123", "+13406421234", "+16713001234", "+16702345678", "+16846221234"]
)
def test_territory_numbers_are_decided_under_the_tcpa(number) -> None:
    zone = AREA_CODES.region_zones[US_TERRITORIES[locate(number, None, AREA_CODES).country]][0]
    noon = datetime.fromisoformat("2026-06-02T12:00:00").replace(tzinfo=RULES.zones[zone])
    codes, texts = decide(number, noon)
    assert not codes & {"TIMEZONE_UNKNOWN", "DESTINATION_NOT_COVERED", "QUIET_HOURS"}, texts
    night = noon.replace(hour=22)
    assert "QUIET_HOURS" in decide(number, night)[0]


def test_puerto_rico_keeps_its_own_hours() -> None:
    # 08:30 Atlantic time: the TCPA allows it, Puerto Rico's 09:00-21:00 does not
    morning = datetime.fromisoformat("2026-06-02T08:30:00-04:00")
    codes, texts = decide("+17875550123", morning)
    assert "QUIET_HOURS" in codes
    assert any("Puerto Rico" in text for text in texts), texts


@pytest.mark.parametrize(
    ("region", "number"), [(r, n) for r, n in NANP_EXAMPLES if r not in RULES.national]
)
def test_marketing_to_other_nanp_countries_is_refused(region, number) -> None:
    codes, texts = decide(number)
    assert "DESTINATION_NOT_COVERED" in codes, texts
    # a known US address adds US rules, but the number's country is not covered
    codes, texts = decide(number, known=KnownLocation(region="FL", timezone="America/New_York"))
    assert "DESTINATION_NOT_COVERED" in codes, texts
    assert decide(number, purpose=Purpose.TRANSACTIONAL) == (set(), [])


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+12905550123", "DESTINATION_NOT_COVERED"),  # an area code of no known country
        ("+15555550123", "DESTINATION_NOT_COVERED"),
        ("+12422345678", "DESTINATION_NOT_COVERED"),  # a new exchange in the Bahamas
        ("+16842345678", "QUIET_HOURS"),  # a new exchange in American Samoa, at 05:00 there
    ],
)
def test_unknown_nanp_numbers_go_transactional_and_not_marketing(number, code) -> None:
    assert decide(number, purpose=Purpose.TRANSACTIONAL) == (set(), [])
    assert "SUPPRESSED" in decide(number, purpose=Purpose.TRANSACTIONAL, suppressed=True)[0]
    codes, texts = decide(number)
    assert code in codes, texts
    assert "INVALID_RECIPIENT" not in codes


def test_invalid_form_is_still_invalid_for_transactional_messages() -> None:
    assert "INVALID_RECIPIENT" in decide("+11235550123", purpose=Purpose.TRANSACTIONAL)[0]


def test_kenton_morning_is_quiet_hours() -> None:
    # 07:30 Mountain time is 08:30 Central: Oklahoma's 08:00 start must hold in Kenton too
    morning = datetime.fromisoformat("2026-06-02T07:30:00-06:00")
    assert "QUIET_HOURS" in decide("+15805550123", morning)[0]


def test_orlando_is_decided_on_eastern_time_alone() -> None:
    # 08:30 Eastern is 07:30 in Chicago, libphonenumber's zone for 689: open all the same
    morning = datetime.fromisoformat("2026-06-02T08:30:00-04:00")
    assert "QUIET_HOURS" not in decide("+16895550123", morning)[0]
    evening = datetime.fromisoformat("2026-06-02T20:00:00-04:00")
    assert "QUIET_HOURS" in decide("+16895550123", evening)[0]


# --- Properties: widening is monotone, narrowing stays within the number's span -------------

ALL_ZONES = sorted(
    {z for zones in AREA_CODES.region_zones.values() for z in zones}
    | {z for zones in AREA_CODES.by_npa.values() for z in zones}
)
SAMPLE_NPAS = sorted(
    {*AREA_CODES.by_npa, "212", "305", "406", "416", "787", "340", "876", "800", "290", "624"}
)
numbers = st.builds(
    lambda npa, nxx, line: f"+1{npa}{nxx}{line:04d}",
    st.sampled_from(SAMPLE_NPAS),
    st.integers(200, 999),
    st.integers(0, 9999),
)
regions = st.sampled_from(sorted(SUBDIVISIONS))
known_locations = st.builds(
    KnownLocation,
    timezone=st.sampled_from(["", *ALL_ZONES]),
    region=st.sampled_from(["", *sorted(SUBDIVISIONS)]),
)


def own_regions(number: str) -> tuple[str, ...]:
    return locate(number, None, AREA_CODES).regions


def known_zones(known: KnownLocation) -> set[str]:
    return {known.timezone} if known.timezone else set(AREA_CODES.region_zones[known.region])


@settings(max_examples=300, deadline=None)
@given(numbers, st.sampled_from(ALL_ZONES), st.one_of(st.none(), known_locations))
def test_adding_a_zone_to_an_area_code_never_removes_one(number, zone, known) -> None:
    """With no known address, or one outside the number's own state, a wider entry only
    widens (an address in the number's own state may narrow: the last property)."""
    before = locate(number, known, AREA_CODES)
    assume(not before.problem)
    assume(known is None or region_code(known.region, before.country) not in own_regions(number))
    npa = number[2:5]
    wider = replace(
        AREA_CODES,
        by_npa={**AREA_CODES.by_npa, npa: (*AREA_CODES.by_npa.get(npa, ()), zone)},
    )
    after = locate(number, known, wider)
    assert set(before.zones) <= set(after.zones)
    assert before.regions == after.regions
    assert zone in after.zones


@settings(max_examples=300, deadline=None)
@given(numbers, regions, st.sampled_from(["", *ALL_ZONES]))
def test_a_known_address_in_another_state_never_removes_a_zone_or_region(
    number, region, zone
) -> None:
    alone = locate(number, None, AREA_CODES)
    assume(not alone.problem and region not in alone.regions)
    location = locate(number, KnownLocation(timezone=zone, region=region), AREA_CODES)
    assert set(alone.zones) <= set(location.zones)
    assert {*alone.regions, region} == set(location.regions)


def near(own: tuple[str, ...], every: list[str]) -> st.SearchStrategy[str]:
    """None, one of the number's own (when it has any), or any at all, a third each."""
    return st.one_of(st.just(""), st.sampled_from(every), *([st.sampled_from(own)] if own else []))


@settings(max_examples=500, deadline=None)
@given(numbers, st.data())
def test_narrowing_only_keeps_zones_the_number_spans(number, data) -> None:
    own = locate(number, None, AREA_CODES)
    assume(not own.problem)
    known = KnownLocation(
        timezone=data.draw(near(own.zones, ALL_ZONES)),
        region=data.draw(near(own.regions, sorted(SUBDIVISIONS))),
    )
    assume(known.region or known.timezone)
    own_zones, own_regions = set(own.zones), set(own.regions)
    location = locate(number, known, AREA_CODES)
    region = region_code(known.region, own.country) if known.region else None
    assert set(location.regions) == own_regions | ({region} if region else set())
    zones = set(location.zones)
    if own_zones <= zones:  # widened (or unchanged): the number's and the address's zones
        assert zones == own_zones | known_zones(known)
    else:  # narrowed: the address is in the number's own state, within the number's span
        event("narrowed")
        assert region in own_regions
        assert zones
        assert zones == known_zones(known)
        assert zones <= own_zones
        assert zones <= set(AREA_CODES.region_zones[region])
