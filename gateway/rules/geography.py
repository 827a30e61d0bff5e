"""Where a number or an address may be: states and provinces, and the time zones of area
codes and regions. Pure data; `geography_loader` reads it from `rules/area_codes.toml`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# ISO 3166-2 codes of US states, DC and territories, and Canadian provinces and territories,
# with the names libphonenumber's geocoder and people use for them. Jurisdictions in the rule
# data and known-address regions are checked against this table.
SUBDIVISIONS: Mapping[str, tuple[str, ...]] = {
    "US-AL": ("Alabama",),
    "US-AK": ("Alaska",),
    "US-AZ": ("Arizona",),
    "US-AR": ("Arkansas",),
    "US-CA": ("California",),
    "US-CO": ("Colorado",),
    "US-CT": ("Connecticut",),
    "US-DE": ("Delaware",),
    "US-DC": ("District of Columbia", "Washington D.C.", "Washington DC"),
    "US-FL": ("Florida",),
    "US-GA": ("Georgia",),
    "US-HI": ("Hawaii",),
    "US-ID": ("Idaho",),
    "US-IL": ("Illinois",),
    "US-IN": ("Indiana",),
    "US-IA": ("Iowa",),
    "US-KS": ("Kansas",),
    "US-KY": ("Kentucky",),
    "US-LA": ("Louisiana",),
    "US-ME": ("Maine",),
    "US-MD": ("Maryland",),
    "US-MA": ("Massachusetts",),
    "US-MI": ("Michigan",),
    "US-MN": ("Minnesota",),
    "US-MS": ("Mississippi",),
    "US-MO": ("Missouri",),
    "US-MT": ("Montana",),
    "US-NE": ("Nebraska",),
    "US-NV": ("Nevada",),
    "US-NH": ("New Hampshire",),
    "US-NJ": ("New Jersey",),
    "US-NM": ("New Mexico",),
    "US-NY": ("New York",),
    "US-NC": ("North Carolina",),
    "US-ND": ("North Dakota",),
    "US-OH": ("Ohio",),
    "US-OK": ("Oklahoma",),
    "US-OR": ("Oregon",),
    "US-PA": ("Pennsylvania",),
    "US-RI": ("Rhode Island",),
    "US-SC": ("South Carolina",),
    "US-SD": ("South Dakota",),
    "US-TN": ("Tennessee",),
    "US-TX": ("Texas",),
    "US-UT": ("Utah",),
    "US-VT": ("Vermont",),
    "US-VA": ("Virginia",),
    "US-WA": ("Washington", "Washington State"),
    "US-WV": ("West Virginia",),
    "US-WI": ("Wisconsin",),
    "US-WY": ("Wyoming",),
    "US-AS": ("American Samoa",),
    "US-GU": ("Guam",),
    "US-MP": ("Northern Mariana Islands",),
    "US-PR": ("Puerto Rico",),
    "US-VI": ("U.S. Virgin Islands", "US Virgin Islands"),
    "CA-AB": ("Alberta",),
    "CA-BC": ("British Columbia", "British Colombia"),
    "CA-MB": ("Manitoba",),
    "CA-NB": ("New Brunswick",),
    "CA-NL": ("Newfoundland and Labrador", "Newfoundland"),
    "CA-NS": ("Nova Scotia",),
    "CA-NT": ("Northwest Territories",),
    "CA-NU": ("Nunavut",),
    "CA-ON": ("Ontario",),
    "CA-PE": ("Prince Edward Island",),
    "CA-QC": ("Quebec", "Québec"),
    "CA-SK": ("Saskatchewan",),
    "CA-YT": ("Yukon", "Watson Lake"),
}


# US territories in the NANP: libphonenumber gives their numbers their own ISO 3166-1 code;
# the region whose rules apply is their ISO 3166-2 subdivision of the US. (A number's country
# code is never read as a US state otherwise: "IN" is India, "DE" Germany.)
US_TERRITORIES: Mapping[str, str] = {
    "AS": "US-AS",
    "GU": "US-GU",
    "MP": "US-MP",
    "PR": "US-PR",
    "VI": "US-VI",
}


@dataclass(frozen=True)
class AreaCodeTable:
    """IANA zones of NANP area codes whose zones libphonenumber gets incomplete or wrong, and
    of states and provinces.

    `by_npa`: every zone of each listed area code. For an NPA in `replacing` they replace
    libphonenumber's default zone for the area code; for the others they are added to it.
    """

    by_npa: Mapping[str, tuple[str, ...]]
    region_zones: Mapping[str, tuple[str, ...]]
    replacing: frozenset[str]
