"""Read `rules/area_codes.toml` into the `AreaCodeTable`: every problem names the file and key."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path

from gateway.config.toml_reader import TomlTable
from gateway.rules.geography import SUBDIVISIONS, AreaCodeTable
from gateway.rules.ruleset import CONFIDENCE_LEVELS
from gateway.rules.toml_files import file_table

_NPA = re.compile(r"^[2-9]\d\d$")


def load_area_codes(path: Path, zones: Mapping[str, zoneinfo.ZoneInfo]) -> AreaCodeTable:
    data = file_table(path)

    def zone_list(table: TomlTable, key: str) -> tuple[str, ...]:
        names = table.strings(key)
        for name in names:
            if name not in zones:
                raise table.error(key, f"has {name!r}, not an IANA zone")
        return tuple(dict.fromkeys(names))

    by_npa: dict[str, tuple[str, ...]] = {}
    replacing: set[str] = set()
    for entry in data.entries("area_code"):
        check_source(entry)
        npa_zones = zone_list(entry, "zones")
        replace = entry.boolean("replace")
        for npa in entry.strings("npas"):
            if not _NPA.match(npa):
                raise entry.error("npas", f"has {npa!r}, not a three-digit NANP area code")
            if npa in by_npa:
                raise entry.error("npas", f"repeats {npa!r}")
            by_npa[npa] = npa_zones
            if replace:
                replacing.add(npa)
        entry.finish()
    regions = data.table("region_zones")
    check_source(regions)
    region_table = regions.table("zones")
    region_zones = {code: zone_list(region_table, code) for code in list(region_table.data)}
    region_table.finish()
    regions.finish()
    data.finish()
    missing = sorted(set(SUBDIVISIONS) - set(region_zones))
    unknown = sorted(set(region_zones) - set(SUBDIVISIONS))
    if missing or unknown:
        problem = f"lacks {missing[0]}" if missing else f"has {unknown[0]}, not a known region"
        raise region_table.error("", problem)
    return AreaCodeTable(by_npa=by_npa, region_zones=region_zones, replacing=frozenset(replacing))


def check_source(table: TomlTable) -> None:
    """Validate the citation, confidence and verify keys of a geography or keyword entry."""
    if not table.string("citation").strip():
        raise table.error("citation", "must not be empty")
    confidence = table.string("confidence")
    if confidence not in CONFIDENCE_LEVELS:
        raise table.error("confidence", f"must be one of {CONFIDENCE_LEVELS}")
    if table.boolean("verify") != (confidence == "med"):
        raise table.error("verify", 'must be true exactly when confidence is "med"')
