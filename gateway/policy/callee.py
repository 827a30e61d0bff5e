"""Where a called party may be: candidate time zones and the states/provinces whose rules apply.

The law speaks of the called party's location, which the gateway can only infer, and a
contact is allowed only if it is allowed in every candidate zone. The candidates:

- The number's zones: libphonenumber's for the exchange, corrected by the area-code table
  (`rules/area_codes.toml`), whose entry for the area code adds its zones or, marked
  `replace`, stands in for libphonenumber's default zone for the area code (689 Orlando comes
  back as Chicago). An exchange libphonenumber resolves precisely keeps its zone, and the
  entry's zones are added to it.
- The number's regions: the state or province libphonenumber's geocoder names, or the US
  territory the number belongs to (US-PR, US-VI, US-GU, US-MP, US-AS).
- A known address (the contact registry) adds its region: regions are never removed, since
  several states presume residence from the area code (FL, OK, CT; OR lets callers rely on
  it), so the area code's state keeps its rules wherever the callee lives.
- A known address narrows the zones in exactly one case: its region is one of the number's
  regions, and every zone it may be in (its `timezone`, else the zone at its coordinates,
  else every zone of its region) is one of the number's zones and one of its region's. It
  then tells which side of a split area code the callee is on (a Pensacola address for an
  850 number: Central only), and its zones replace the number's. In every other case it adds
  its zones: a known address in another state, without a region, or in a zone the number
  does not span may mean the number moved or the address is stale, and both places stay
  candidates. Narrowing therefore never yields a zone the number does not span, never
  empties the zones, and never drops a region.
- A +1 number of NANP form (area code and exchange [2-9]XX) that libphonenumber does not
  know is not invalid: its area code may be newer than the metadata (624, 861, 357, 483 were
  missing from phonenumbers 9.0.43), or its exchange newer in a country whose exchanges the
  metadata lists one by one (the Bahamas, American Samoa). It keeps the country libphonenumber
  reads from the area code alone, if any, and has no zone. Marketing to a number of unknown
  country is refused as DESTINATION_NOT_COVERED rather than TIMEZONE_UNKNOWN: the missing
  fact is whose law applies (a new area code may be Caribbean as well as US or Canadian), and
  no known address can supply it, while TIMEZONE_UNKNOWN would suggest recording one. A new
  exchange of a territory is TIMEZONE_UNKNOWN. Transactional contacts go through, bound only
  by suppression; a number that does not exist fails at the provider, which is no compliance
  risk, whereas calling it invalid would block lawful messages.

This runs while facts are gathered, before the pure decision; the decision never parses a
number.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from types import ModuleType
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import timezone as number_timezone
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from gateway.model import CalleeLocation, KnownLocation
from gateway.rules.geography import SUBDIVISIONS, US_TERRITORIES, AreaCodeTable

if TYPE_CHECKING:
    from timezonefinder import TimezoneFinder

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# A NANP number: +1, area code, exchange, line (NPA-NXX-XXXX, N = 2-9).
_NANP = re.compile(r"^\+1[2-9]\d\d[2-9]\d{6}$")
_UNKNOWN_ZONE = "Etc/Unknown"
# libphonenumber's zone prefixes for NANP numbers: "1" + area code is its default for the area
# code; a longer prefix is an exchange (or block) it knows.
_AREA_CODE_PREFIX = 4
_NAMES = {name.casefold(): code for code, names in SUBDIVISIONS.items() for name in names}
_POSSIBILITY = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "the country code is not assigned",
    phonenumbers.ValidationResult.TOO_SHORT: "too short for its country",
    phonenumbers.ValidationResult.TOO_LONG: "too long for its country",
    phonenumbers.ValidationResult.INVALID_LENGTH: "the wrong length for its country",
}


def locate(number: str, known: KnownLocation | None, area_codes: AreaCodeTable) -> CalleeLocation:
    """Validate `number` (strict E.164: "+" and digits only) and collect every candidate zone
    and region: the number's own (libphonenumber corrected by the area-code table) and the
    known location's, which narrows or adds as the module docstring says.

    A known location that is present but cannot be read (unknown zone name, coordinates
    outside the map, unknown region) leaves the callee's zone undetermined: zones come back
    empty and marketing contacts are blocked with TIMEZONE_UNKNOWN rather than checked
    against a guess. The postal code is not used.
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
    if not phonenumbers.is_valid_number(parsed) and not _NANP.match(number):
        return CalleeLocation(number, problem=_why_invalid(parsed))
    # "" where libphonenumber cannot tell the country (an area code it does not know).
    country = phonenumbers.region_code_for_number(parsed) or ""
    name = _country_name(country, number)
    zones = _number_zones(parsed, area_codes)
    regions = _number_regions(parsed, country)
    if not set(number_timezone.time_zones_for_number(parsed)) - {_UNKNOWN_ZONE}:
        # An exchange libphonenumber does not know in a place it does (a new territory
        # exchange): the place's zones too, so that a known address elsewhere only adds.
        zones |= {zone for region in regions for zone in area_codes.region_zones.get(region, ())}
    if known is not None:
        found = _known_location(known, country, area_codes)
        if found is None:
            return CalleeLocation(number, country, (), tuple(sorted(regions)), country_name=name)
        known_zones, known_regions = found
        if _side_of_split(known_zones, known_regions, zones, regions, area_codes):
            zones = known_zones
        else:
            zones |= known_zones
        regions |= known_regions
    return CalleeLocation(
        number, country, tuple(sorted(zones)), tuple(sorted(regions)), country_name=name
    )


def _country_name(country: str, number: str) -> str:
    """In words, through the country's example number: libphonenumber names no country for a
    number it does not know itself."""
    if not country:
        return (
            f"an unknown NANP country (area code {number[2:5]} is newer than the installed "
            "libphonenumber)"
        )
    example = phonenumbers.example_number(country)
    name = _geocoder().country_name_for_number(example, "en") if example else ""
    return name or country


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


def _number_zones(parsed: phonenumbers.PhoneNumber, area_codes: AreaCodeTable) -> set[str]:
    """libphonenumber's zones for the number, with the area-code table's entry for a NANP
    number added, or in place of libphonenumber's default for a replacing entry."""
    zones = set(number_timezone.time_zones_for_number(parsed)) - {_UNKNOWN_ZONE}
    if parsed.country_code != 1:
        return zones
    npa = str(parsed.national_number)[:3]
    entry = set(area_codes.by_npa.get(npa, ()))
    if npa in area_codes.replacing and not _exchange_known(parsed):
        return entry
    return zones | entry


def _exchange_known(parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether libphonenumber has zones for the number's exchange (or a block of exchanges)
    rather than only its default for the area code."""
    digits = f"{parsed.country_code}{parsed.national_number}"
    return any(
        digits[:length] in TIMEZONE_DATA
        for length in range(_AREA_CODE_PREFIX + 1, TIMEZONE_LONGEST_PREFIX + 1)
    )


def _number_regions(parsed: phonenumbers.PhoneNumber, country: str) -> set[str]:
    """US state, US territory or Canadian province of the number. For the US and Canada,
    from libphonenumber's geocoder, which answers "City, ST" or a region name ("Florida",
    "Nova Scotia/Prince Edward Island"). Non-geographic numbers (toll-free) and numbers of
    other countries have none."""
    if country in US_TERRITORIES:
        return {US_TERRITORIES[country]}
    if country not in ("US", "CA"):
        return set()
    description = _geocoder().description_for_number(parsed, "en")
    _, comma, abbreviation = description.rpartition(", ")
    if comma and f"{country}-{abbreviation}" in SUBDIVISIONS:
        return {f"{country}-{abbreviation}"}
    codes = {_NAMES.get(part.strip().casefold(), "") for part in description.split("/")}
    return {code for code in codes if code.startswith(f"{country}-")}


def _known_location(
    known: KnownLocation, country: str, area_codes: AreaCodeTable
) -> tuple[set[str], set[str]] | None:
    """The zones the known location may be in (its zone, else the zone at its coordinates,
    else every zone of its region) and its region; None if it is present but unreadable."""
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


def _side_of_split(
    known_zones: set[str],
    known_regions: set[str],
    zones: set[str],
    regions: set[str],
    area_codes: AreaCodeTable,
) -> bool:
    """Whether a known location only tells where within the number's own span the callee is:
    its region is one of the number's, and every zone it may be in is one of the number's
    zones and one of its region's (a zone its region does not have is a contradiction, not
    a side)."""
    region_zones = {z for region in known_regions for z in area_codes.region_zones.get(region, ())}
    return bool(
        known_regions
        and known_zones
        and known_regions <= regions
        and known_zones <= zones & region_zones
    )


def _zone_at(latitude: float | None, longitude: float | None) -> str | None:
    if latitude is None or longitude is None:
        return None
    try:
        return _timezone_finder().timezone_at(lng=longitude, lat=latitude)
    except ValueError:
        return None


def load_location_data() -> None:
    """What `locate` reads, imported now: a gateway calls this before it serves, so that its
    first text does not wait for it. Imported lazily otherwise, since the geocoder's data
    and the zone finder take 0.4 s to import, which every CLI command paid."""
    _geocoder()
    import timezonefinder  # noqa: F401  (the module; its finder is still built on first use)


@functools.cache
def _geocoder() -> ModuleType:
    from phonenumbers import geocoder

    return geocoder


@functools.cache
def _timezone_finder() -> TimezoneFinder:
    """Built on first use, once: loading the boundary data takes a good part of a second."""
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
