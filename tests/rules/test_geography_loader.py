"""`rules/area_codes.toml` read into the `AreaCodeTable`: replacing entries, and errors that
name the file, the entry and the field."""

from __future__ import annotations

import tomllib
import zoneinfo
from pathlib import Path

import pytest

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.rules.errors import RulesError
from gateway.rules.geography_loader import load_area_codes

SHIPPED = PACKAGE_RULES_DIR / "area_codes.toml"

ZONES = {name: zoneinfo.ZoneInfo(name) for name in zoneinfo.available_timezones()}


def test_replacing_area_codes_are_the_entries_marked_replace() -> None:
    entries = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))["area_code"]
    marked = {npa for entry in entries if entry.get("replace") for npa in entry["npas"]}
    table = load_area_codes(SHIPPED, ZONES)
    assert table.replacing == marked
    assert table.replacing <= set(table.by_npa)
    assert {"689", "867", "474"} <= table.replacing
    assert "580" not in table.replacing
    assert set(table.by_npa["580"]) == {"America/Chicago", "America/Denver"}


ENTRY = '''
[[area_code]]
npas = ["212"]
zones = ["America/New_York"]
citation = "test"
confidence = "high"
'''


def table_file(directory: Path, entries: str) -> Path:
    """An area-code file with these entries and the shipped [region_zones]."""
    shipped = SHIPPED.read_text(encoding="utf-8")
    path = directory / "area_codes.toml"
    path.write_text(entries + shipped[shipped.index("\n[region_zones]\n"):], encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('replace = "yes"\n', "area_code[0].replace must be true or false"),
        ("replace = 1\n", "area_code[0].replace must be true or false"),
        ("replaces = true\n", "area_code[0].replaces is not a known key"),
    ],
)
def test_replace_errors_name_file_entry_and_field(tmp_path: Path, extra, message) -> None:
    path = table_file(tmp_path, ENTRY + extra)
    with pytest.raises(RulesError) as error:
        load_area_codes(path, ZONES)
    assert str(error.value) == f"{path}: {message}"


def test_replace_false_is_the_default(tmp_path: Path) -> None:
    table = load_area_codes(
        table_file(tmp_path, ENTRY + "replace = false\n" + ENTRY.replace("212", "646")), ZONES
    )
    assert table.replacing == frozenset()
    assert set(table.by_npa) == {"212", "646"}
