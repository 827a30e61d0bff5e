"""Text as a reader sees it: `fold` maps every character to the one it is drawn like.

One function for every check that compares what a reader sees with what the gateway reads:
the deceptive-subject check (a first-touch "Re:" spelled with look-alikes or invisible
characters) and the addresses a reader takes for the sender in display names and comments.

`fold` is the skeleton of Unicode Technical Standard #39 (Unicode Security Mechanisms,
section 4 "Confusable Detection"): NFD, remove every Default_Ignorable_Code_Point, replace
each character by its prototype in confusables.txt, NFD again. Two strings that fold alike
are confusable. Before it, the text is read as a mail client shows it:

- compatibility forms are folded (NFKD, and the prototypes again, after the skeleton: a
  full-width R (U+FF32), a mathematical bold R (U+1D411) or a ligature is drawn as the
  letters it stands for);
- the characters IDNA reads as a full stop in a domain name (U+3002 IDEOGRAPHIC FULL STOP,
  U+FF0E FULLWIDTH FULL STOP, U+FF61 HALFWIDTH IDEOGRAPHIC FULL STOP: RFC 3490 s3.1, UTS #46
  s4) are a full stop, where confusables.txt makes U+3002 a low ring;
- a small capital (each character named "LATIN LETTER SMALL CAPITAL X" in the Unicode
  character names) is the letter X: confusables.txt keeps "ᴇ" apart from "E" because it is
  smaller, but in a subject line "Rᴇ:" is read as "RE:";
- ASCII digits stay digits: confusables.txt folds "0" into "O" and "1" into "l", and a
  subject such as "1:1 coaching" is not read as "I:I".

The data is Unicode's own, version `UNICODE_VERSION`, vendored under `gateway/data/unicode/`
(confusables.txt and DerivedCoreProperties.txt as published, with the Unicode licence) and
read once, when this module is imported: folding never reads a file. Normalisation uses
Python's `unicodedata` (the Unicode version of the interpreter: 14.0 on Python 3.11), so a
character added to Unicode since is folded by confusables.txt but not decomposed.

Imports nothing of the gateway, so the pure policy, the rule loader and the mail parser all
share it.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data" / "unicode"
UNICODE_VERSION = "17.0.0"

# RFC 3490 s3.1 / UTS #46: label separators a domain name may be written with.
IDNA_FULL_STOPS = "\u3002\uff0e\uff61"
SMALL_CAPITAL = "LATIN LETTER SMALL CAPITAL "
# The blocks that hold them: IPA Extensions, Phonetic Extensions, Latin Extended-C, -D, -G.
SMALL_CAPITAL_BLOCKS = ((0x0250, 0x02AF), (0x1D00, 0x1D7F), (0x2C60, 0x2C7F), (0xA720, 0xA7FF),
                        (0x1DF00, 0x1DFFF))
ASCII_DIGITS = frozenset("0123456789")


def _data_lines(name: str, holding: str = "") -> list[list[str]]:
    """The fields of each data line of a UCD-style file (comments and blanks dropped), only
    of the lines holding `holding` if given."""
    rows = []
    with (DATA_DIR / name).open(encoding="utf-8-sig") as source:
        for line in source:
            if holding not in line:
                continue
            data = line.partition("#")[0].strip()
            if data:
                rows.append([field.strip() for field in data.split(";")])
    return rows


def _code_points(field: str) -> str:
    return "".join(chr(int(point, 16)) for point in field.split())


def load_default_ignorables() -> frozenset[str]:
    """Every Default_Ignorable_Code_Point of DerivedCoreProperties.txt (UAX #44), assigned
    or not: they are drawn as nothing, or not at all."""
    found: set[str] = set()
    for fields in _data_lines("DerivedCoreProperties.txt", "Default_Ignorable_Code_Point"):
        if fields[1] == "Default_Ignorable_Code_Point":
            first, _, last = fields[0].partition("..")
            found.update(map(chr, range(int(first, 16), int(last or first, 16) + 1)))
    return frozenset(found)


def load_confusables() -> dict[str, str]:
    """confusables.txt: each source character and the prototype it is confusable with."""
    return {_code_points(fields[0]): _code_points(fields[1])
            for fields in _data_lines("confusables.txt")}


def _small_capitals() -> dict[str, str]:
    letters = {}
    for first, last in SMALL_CAPITAL_BLOCKS:
        for point in range(first, last + 1):
            name = unicodedata.name(chr(point), "")
            if name.startswith(SMALL_CAPITAL) and len(name) == len(SMALL_CAPITAL) + 1:
                letters[chr(point)] = name[-1]
    return letters


def _translation(
    ignorables: frozenset[str], confusables: dict[str, str], small_capitals: dict[str, str]
) -> dict[int, str | None]:
    """One table for str.translate: ignorables removed, every other character replaced by
    its prototype, with the readings above applied to the prototypes as well (a Cherokee
    letter whose prototype is the small capital "ᴇ" folds to "E" too)."""

    def prototype(char: str) -> str:
        if char in ASCII_DIGITS:
            return char
        if char in IDNA_FULL_STOPS:
            return "."
        if char in small_capitals and char not in confusables:
            return confusables.get(small_capitals[char], small_capitals[char])
        return confusables.get(char, char)

    table: dict[int, str | None] = {ord(char): None for char in ignorables}
    for char in set(confusables) | set(small_capitals) | set(IDNA_FULL_STOPS):
        if char in ignorables:
            continue
        folded = "".join(
            prototype(part) for part in unicodedata.normalize("NFD", prototype(char))
        )
        if folded != char:
            table[ord(char)] = folded
    return table


DEFAULT_IGNORABLES = load_default_ignorables()
_TABLE = _translation(DEFAULT_IGNORABLES, load_confusables(), _small_capitals())
_INVISIBLE = {ord(char): None for char in DEFAULT_IGNORABLES}


def fold(text: str) -> str:
    """The UTS #39 skeleton of `text` as a reader sees it (see the module's docstring). Case
    is kept: compare folded strings case-insensitively where case does not matter.

    The skeleton first (NFD, the table), then the compatibility forms it left (NFKD, the
    table again): characters confusables.txt maps keep their prototype, so any two it calls
    confusable still fold alike, and a full-width letter it does not list is its letter."""
    skeleton = unicodedata.normalize("NFD", text).translate(_TABLE)
    return unicodedata.normalize(
        "NFD", unicodedata.normalize("NFKD", skeleton).translate(_TABLE)
    )


@functools.lru_cache(maxsize=65536)
def fold_char(char: str) -> str:
    """`fold` of one character, remembered: to fold text while knowing which character of
    the original each part comes from."""
    return fold(char)


def shown(text: str) -> str:
    """The text without the characters drawn as nothing, compatibility forms folded (NFKC):
    what to quote back to a person, as against `fold`, which is what to compare."""
    return unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).translate(_INVISIBLE)
