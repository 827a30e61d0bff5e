"""`gateway.lookalikes.fold` against Unicode's own data: the vendored files read here by a
parser of this test's own, every confusable pair and every default-ignorable code point."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import lookalikes
from gateway.lookalikes import DATA_DIR, UNICODE_VERSION, fold, shown


def data_rows(name: str) -> list[list[str]]:
    rows = []
    for line in (DATA_DIR / name).read_text(encoding="utf-8-sig").splitlines():
        data = line.split("#", 1)[0].strip()
        if data:
            rows.append([field.strip() for field in data.split(";")])
    return rows


def chars(field: str) -> str:
    return "".join(chr(int(point, 16)) for point in field.split())


CONFUSABLES = {chars(row[0]): chars(row[1]) for row in data_rows("confusables.txt")}
IGNORABLES = sorted(
    chr(point)
    for row in data_rows("DerivedCoreProperties.txt")
    if row[1] == "Default_Ignorable_Code_Point"
    for first, _, last in [row[0].partition("..")]
    for point in range(int(first, 16), int(last or first, 16) + 1)
)
# The readings gateway/lookalikes.py documents on top of UTS #39 (its docstring says why).
DIGITS = set("0123456789")
IDNA_FULL_STOPS = {"\u3002", "\uff0e", "\uff61"}


def test_the_vendored_files_are_the_published_release() -> None:
    readme = (DATA_DIR / "README.md").read_text()
    for name in ("confusables.txt", "DerivedCoreProperties.txt"):
        digest = hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest()
        assert f"`{digest}`" in readme, f"{name} changed: update gateway/data/unicode/README.md"
    assert f"# Version: {UNICODE_VERSION}\n" in (DATA_DIR / "confusables.txt").read_text()
    head = (DATA_DIR / "DerivedCoreProperties.txt").read_text().splitlines()[0]
    assert head == f"# DerivedCoreProperties-{UNICODE_VERSION}.txt"
    assert "UNICODE LICENSE V3" in (DATA_DIR / "LICENSE.txt").read_text()
    assert len(CONFUSABLES) > 6000 and len(IGNORABLES) > 4000


def test_the_module_reads_the_same_data() -> None:
    assert lookalikes.load_confusables() == CONFUSABLES
    assert frozenset(IGNORABLES) == lookalikes.DEFAULT_IGNORABLES


@pytest.mark.parametrize("ignorable", IGNORABLES, ids=lambda c: f"U+{ord(c):04X}")
def test_every_default_ignorable_code_point_folds_to_nothing(ignorable: str) -> None:
    assert fold(ignorable) == ""
    assert fold(f"R{ignorable}e{ignorable}:") == "Re:"
    assert shown(f"a{ignorable}b") == "ab"


def test_every_confusable_folds_like_its_prototype() -> None:
    """UTS #39: X and Y are confusable when skeleton(X) == skeleton(Y). Every source of
    confusables.txt folds as its prototype does, but for the documented readings. The
    skeleton decomposes (NFD) before it maps, so a precomposed source ("ö") is never looked
    up: it folds as its decomposition does."""
    wrong = [
        f"U+{ord(source[0]):04X}"
        for source, prototype in CONFUSABLES.items()
        if source not in DIGITS | IDNA_FULL_STOPS
        and unicodedata.is_normalized("NFD", source)
        and fold(source) != fold(prototype)
    ]
    assert wrong == []
    precomposed = [s for s in CONFUSABLES if not unicodedata.is_normalized("NFD", s)]
    assert all(fold(s) == fold(unicodedata.normalize("NFD", s)) for s in precomposed)


def test_the_readings_added_to_uts_39() -> None:
    assert fold("1:1 coaching 0") == "1:1 coaching 0"  # digits stay digits
    assert {fold(stop) for stop in IDNA_FULL_STOPS} == {"."}  # IDNA label separators
    assert fold("R\u1d07:") == "RE:" and fold("\u0280\u1d07") == "RE"  # small capitals
    assert fold("\uab7c") == "E"  # Cherokee gv, whose prototype is the small capital E
    assert fold("\uff32\uff45\uff1a") == "Re:"  # full-width, compatibility forms
    assert fold("\U0001d411") == "R"  # mathematical bold


@given(st.text(max_size=40))
def test_fold_is_nfd_and_drops_every_ignorable(text: str) -> None:
    folded = fold(text)
    assert unicodedata.is_normalized("NFD", folded)
    assert not set(folded) & set(IGNORABLES)


def test_a_text_folds_as_its_characters_do() -> None:
    """What lets the mail parser fold a display name one character at a time and still know
    where each folded part came from (marks may be ordered differently; the parser drops
    them)."""
    text = "ce\u200do\uff20b\u0430nk\u2024example \u13a1\u1d07\ua789"
    assert fold(text) == "".join(lookalikes.fold_char(c) for c in text)


def test_folding_reads_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data is read when the module is imported; the pure policy folds without I/O."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("fold read a file")

    monkeypatch.setattr(Path, "open", refuse)
    monkeypatch.setattr("builtins.open", refuse)
    assert fold("\u13a1\u0435\ua789 Bank\u3002example \u034f") == "Re: Bank.exarnple "
    assert shown("ce\u200do\uff20x") == "ceo@x"


def test_the_docstring_names_the_version() -> None:
    assert re.search(r"version `UNICODE_VERSION`", lookalikes.__doc__ or "")
    assert UNICODE_VERSION in (DATA_DIR / "README.md").read_text().splitlines()[0]
