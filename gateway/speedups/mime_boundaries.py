r"""Multipart boundary lines found without compiling a pattern per boundary.

The stdlib feed parser compiles a regular expression for each multipart boundary it meets.
Every real message has boundaries of its own, so the pattern cache never helps, and Python's
pattern compiler costs about 150 µs per boundary: more than the rest of parsing a short
multipart message. `BoundaryLine` matches exactly what that pattern matches (the separator
is a literal, so the pattern is the separator followed by a fixed tail), and is installed
only for the feed parser, on the Python version it was checked against. A pattern of any
other shape goes to `re.compile` unchanged, so a parser that builds its pattern differently
still parses correctly, only slower.

The line ending before a boundary belongs to the boundary (RFC 2046 5.1.1), so the parser
strips it from the end of every part's body with `(\r\n|\r|\n)\Z`, searched from the
start of the body: a regex attempt at every character, 88 µs for a 13 KB attachment and
70 ms for a 10 MB one. `EndOfBodyLineEnding` searches only the last two characters, the
only place a match can begin, and returns the same match.
"""

from __future__ import annotations

import email.feedparser
import re
import types
from typing import Any

from gateway.speedups.base import PYTHON, Patch, Speedup

_PATTERN_HEAD = "(?P<sep>"
_PATTERN_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_SEPARATOR = re.compile(_PATTERN_TAIL[1:])
_ESCAPED_CHARACTER = re.compile(r"\\(.)", re.DOTALL)


class BoundaryLine:
    """The compiled feed-parser pattern for one separator, as far as the parser uses it."""

    __slots__ = ("separator",)

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        if not line.startswith(self.separator):
            return None
        return _AFTER_SEPARATOR.match(line, len(self.separator))


def feedparser_separator(pattern: Any) -> str | None:
    """The separator a feed-parser boundary pattern was built from, or None for any pattern
    not of exactly that shape (including one whose escaping does not round-trip)."""
    if not isinstance(pattern, str):
        return None
    if not (pattern.startswith(_PATTERN_HEAD) and pattern.endswith(_PATTERN_TAIL)):
        return None
    escaped = pattern[len(_PATTERN_HEAD) : -len(_PATTERN_TAIL)]
    separator = _ESCAPED_CHARACTER.sub(r"\1", escaped)
    return separator if re.escape(separator) == escaped else None


FEEDPARSER_END_OF_BODY = r"(\r\n|\r|\n)\Z"


class EndOfBodyLineEnding:
    """The feed parser's `NLCRE_eol` pattern, searched where its match can begin."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def search(self, text: str) -> re.Match[str] | None:
        return self.pattern.search(text, max(0, len(text) - 2))


class _FeedParserPatterns(types.ModuleType):
    """`re` as the feed parser sees it: boundary patterns become `BoundaryLine`s."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        separator = None if flags else feedparser_separator(pattern)
        return re.compile(pattern, flags) if separator is None else BoundaryLine(separator)


_PATTERNS = Patch(email.feedparser, "re", _FeedParserPatterns("re"))
_END_OF_BODY = Patch(
    email.feedparser, "NLCRE_eol", EndOfBodyLineEnding(email.feedparser.NLCRE_eol)
)


def _library_changed() -> str | None:
    if _PATTERNS.original is not re:
        return "email.feedparser's re is not the re module"
    end_of_body = _END_OF_BODY.original
    if not isinstance(end_of_body, re.Pattern) or end_of_body.pattern != FEEDPARSER_END_OF_BODY:
        return "email.feedparser.NLCRE_eol is not the pattern stood in for"
    return None


SPEEDUP = Speedup(
    name="mime_boundaries",
    checked_versions={PYTHON: ("3.11",)},
    patches=(_PATTERNS, _END_OF_BODY),
    library_changed=_library_changed,
)
