"""Where a called party may be: candidate time zones and the states/provinces whose rules apply.

The law speaks of the called party's location, which the gateway can only infer: from the
number (libphonenumber's zones for the exchange, widened by the area-code table where an
area code spans zones) and from what the contact registry knows about the callee. Every
source adds candidates and none removes one, because a contact is allowed only if it is
allowed in every candidate zone: a mobile number that moved, or a registry entry that
disagrees with the area code, makes the check stricter, never looser.

This runs while facts are gathered, before the pure decision; the decision never parses a
number.
"""

from __future__ import annotations

import functools
import re
import zoneinfo

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as number_timezone
from timezonefinder import TimezoneFinder

from gateway.model import CalleeLocation, KnownLocation
from gateway.rules.geography import SUBDIVISIONS, AreaCodeTable

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_UNKNOWN_ZONE = "Etc/Unknown"
_NAMES = {name.casefold(): code for code, names in SUBDIVISIONS.items() for name in names}
_POSSIBILITY = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "the country code is not assigned",
    phonenumbers.ValidationResult.TOO_SHORT: "too short for its country",
    phonenumbers.ValidationResult.TOO_LONG: "too long for its country",
    phonenumbers.ValidationResult.INVALID_LENGTH: "the wrong length for its country",
}


def locate(number: str, known: KnownLocation | None, area_codes: AreaCodeTable) -> CalleeLocation:
    """Validate `number` (strict E.164: "+" and digits only) and collect every candidate zone
    and region: the number's own, the area-code table's, and the known location's.

    A known location adds its zone (its `timezone`, else the zone at its coordinates, else
    every zone of its region) and its region. A known location that is present but cannot
    be read (unknown zone name, coordinates outside the map, unknown region) leaves the
    callee's zone undetermined: zones come back empty and marketing contacts are blocked
    with TIMEZONE_UNKNOWN rather than checked against a guess. The postal code is not used.
    """
    if not _E164.match(number):
        return CalleeLocation(
            number, problem="not an E.164 number (expected + and the digits, e.g. +12125550123)"
        )
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            detail = _POSSIBILITY[phonenumbers.ValidationResult.INVALID_COUNTRY_CODE]
        else:
            detail = " ".join(str(arg) for arg in exc.args)
        return CalleeLocation(number, problem=f"not a valid phone number: {detail}")
    canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if canonical != number:
        return CalleeLocation(number, problem=f"not in E.164 form (did you mean {canonical}?)")
    if not phonenumbers.is_valid_number(parsed):
        return CalleeLocation(number, problem=_why_invalid(parsed))
    country = phonenumbers.region_code_for_number(parsed) or ""
    zones = set(number_timezone.time_zones_for_number(parsed)) - {_UNKNOWN_ZONE}
    if parsed.country_code == 1:
        zones.update(area_codes.by_npa.get(str(parsed.national_number)[:3], ()))
    regions = _number_regions(parsed, country)
    if known is not None:
        found = _known_location(known, country, area_codes)
        if found is None:
            return CalleeLocation(number, country, (), tuple(sorted(regions)))
        zones |= found[0]
        regions |= found[1]
    return CalleeLocation(number, country, tuple(sorted(zones)), tuple(sorted(regions)))


def region_code(text: str, country: str = "") -> str | None:
    """The ISO 3166-2 code for "US-FL", "FL" or "Florida" (case-insensitive), or None.

    A bare abbreviation is read in `country` first, then as a US state, then as a Canadian
    province ("CA" is California: ISO has no Canadian subdivision "CA")."""
    value = text.strip()
    upper = value.upper()
    if upper in SUBDIVISIONS:
        return upper
    if len(upper) == 2:
        for prefix in dict.fromkeys((country, "US", "CA")):
            if f"{prefix}-{upper}" in SUBDIVISIONS:
                return f"{prefix}-{upper}"
    return _NAMES.get(value.casefold())


def _why_invalid(parsed: phonenumbers.PhoneNumber) -> str:
    possibility = phonenumbers.is_possible_number_with_reason(parsed)
    region = phonenumbers.region_code_for_number(parsed)
    detail = _POSSIBILITY.get(possibility)
    if detail is None:
        where = region if region and region != "001" else f"country code +{parsed.country_code}"
        detail = f"no such number range in {where}"
    return f"not a valid phone number: {detail}"


def _number_regions(parsed: phonenumbers.PhoneNumber, country: str) -> set[str]:
    """US state or Canadian province of the number, from libphonenumber's geocoder, which
    answers "City, ST" or a region name ("Florida", "Nova Scotia/Prince Edward Island").
    Non-geographic numbers (toll-free) have none."""
    if country not in ("US", "CA"):
        return set()
    description = geocoder.description_for_number(parsed, "en")
    _, comma, abbreviation = description.rpartition(", ")
    if comma and f"{country}-{abbreviation}" in SUBDIVISIONS:
        return {f"{country}-{abbreviation}"}
    codes = {_NAMES.get(part.strip().casefold(), "") for part in description.split("/")}
    return {code for code in codes if code.startswith(f"{country}-")}


def _known_location(
    known: KnownLocation, country: str, area_codes: AreaCodeTable
) -> tuple[set[str], set[str]] | None:
    """(zones, regions) the known location adds, or None if it is present but unreadable."""
    regions: set[str] = set()
    if known.region:
        region = region_code(known.region, country)
        if region is None:
            return None
        regions.add(region)
    if known.timezone:
        if known.timezone not in _zone_names():
            return None
        return {known.timezone}, regions
    if known.latitude is not None or known.longitude is not None:
        zone = _zone_at(known.latitude, known.longitude)
        return None if zone is None else ({zone}, regions)
    zones = {zone for region in regions for zone in area_codes.region_zones.get(region, ())}
    return zones, regions


def _zone_at(latitude: float | None, longitude: float | None) -> str | None:
    if latitude is None or longitude is None:
        return None
    try:
        return _timezone_finder().timezone_at(lng=longitude, lat=latitude)
    except ValueError:
        return None


@functools.cache
def _timezone_finder() -> TimezoneFinder:
    """Built on first use, once: loading the boundary data takes a good part of a second."""
    return TimezoneFinder()


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
