"""Where the callee may be: number validation, candidate zones, regions, known locations."""

from __future__ import annotations

import phonenumbers
import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import KnownLocation
from gateway.policy.callee import locate, region_code
from gateway.rules.calling_loader import load_calling_rules

AREA_CODES = load_calling_rules(PACKAGE_RULES_DIR).area_codes


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
        ("+17875550123", "PR", {"America/Puerto_Rico"}, ()),
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
        ("+15555550123", "no such number range"),
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
        description = phonenumbers.geocoder.description_for_number(parsed, "en")
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
