"""BoundaryLine against the stdlib feed parser's own pattern: the same lines match with the
same groups, and whole messages parse to the same tree with either. A disagreement would
split parts differently from the parser the policy was written against."""

from __future__ import annotations

import email.feedparser
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.parse import parse_email, to_bytes
from gateway.speedups.mime_boundaries import (
    FEEDPARSER_END_OF_BODY,
    SPEEDUP,
    BoundaryLine,
    EndOfBodyLineEnding,
    feedparser_separator,
)
from tests.speedups import switched

STDLIB_TAIL = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"


def stdlib_pattern(separator: str) -> str:
    """As email/feedparser.py builds it."""
    return "(?P<sep>" + re.escape(separator) + STDLIB_TAIL


# Boundary characters RFC 2046 allows, regex specials, a backslash and some non-ASCII.
BOUNDARY_TEXT = st.text(
    alphabet="aZ09'()+_,-./:=? \\*[]{}|^$#&~\t\u00e9\u65e5", min_size=1, max_size=12
)
LINE_TAILS = st.lists(
    st.sampled_from(["--", "-", " ", "\t", "\r\n", "\r", "\n", "x", "\u00e9"]), max_size=5
).map("".join)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(boundary=BOUNDARY_TEXT, prefix=st.sampled_from(["", " ", "-", "x", "--"]),
       cut=st.integers(0, 3), tail=LINE_TAILS)
def test_a_boundary_line_matches_what_the_stdlib_pattern_matches(
    boundary: str, prefix: str, cut: int, tail: str
) -> None:
    separator = "--" + boundary
    line = prefix + separator[: len(separator) - cut] + tail
    ours = BoundaryLine(separator).match(line)
    theirs = re.compile(stdlib_pattern(separator)).match(line)
    assert (ours is None) == (theirs is None)
    if ours is not None and theirs is not None:
        for group in ("end", "ws", "linesep"):
            assert ours.group(group) == theirs.group(group)


@given(BOUNDARY_TEXT)
def test_the_separator_is_read_back_from_any_feedparser_pattern(boundary: str) -> None:
    assert feedparser_separator(stdlib_pattern("--" + boundary)) == "--" + boundary


@pytest.mark.parametrize(
    "pattern",
    [
        r"(\r\n|\r|\n)\Z",
        "(?P<sep>--a)(?P<end>--)?$",
        "(?P<sep>--a.b" + STDLIB_TAIL,  # an unescaped dot: not a literal separator
        "(?P<sep>--a" + STDLIB_TAIL,  # "-" unescaped: not built by re.escape
        b"(?P<sep>--a" + STDLIB_TAIL.encode(),
    ],
)
def test_other_patterns_are_compiled_as_written(pattern: str | bytes) -> None:
    assert feedparser_separator(pattern) is None
    with switched(SPEEDUP, True):
        assert isinstance(email.feedparser.re.compile(pattern), re.Pattern)


STDLIB_END_OF_BODY = re.compile(FEEDPARSER_END_OF_BODY)


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(["\r\n", "\r", "\n", "\n\r", "x", "\u00e9", " "]), max_size=8))
def test_the_end_of_body_line_ending_is_the_one_the_stdlib_pattern_finds(pieces: list[str]) -> None:
    text = "".join(pieces)
    ours = EndOfBodyLineEnding(STDLIB_END_OF_BODY).search(text)
    theirs = STDLIB_END_OF_BODY.search(text)
    assert (ours and (ours.span(), ours.group(0))) == (theirs and (theirs.span(), theirs.group(0)))


def test_the_feed_parser_searches_only_the_end_of_a_body() -> None:
    with switched(SPEEDUP, True):
        assert isinstance(email.feedparser.NLCRE_eol, EndOfBodyLineEnding)
        body = "x" * 10_000 + "\r\n"
        assert email.feedparser.NLCRE_eol.search(body).span() == (10_000, 10_002)
        assert email.feedparser.NLCRE_eol.search("\n").span() == (0, 1)


def test_the_feed_parser_gets_boundary_lines_and_nothing_else_changes() -> None:
    with switched(SPEEDUP, True):
        assert isinstance(email.feedparser.re.compile(stdlib_pattern("--b")), BoundaryLine)
        assert email.feedparser.re.compile(stdlib_pattern("--b"), re.IGNORECASE).match("--B")
        assert email.feedparser.re.escape("a.b") == "a\\.b"


def test_uninstalled_the_feed_parser_has_its_own_patterns_back() -> None:
    with switched(SPEEDUP, False):
        assert email.feedparser.re is re
        assert isinstance(email.feedparser.NLCRE_eol, re.Pattern)


LINE_ENDINGS = st.sampled_from(["\r\n", "\n", "\r"])


@st.composite
def multipart_messages(draw: st.DrawFn) -> bytes:
    """Multiparts whose bodies contain near-boundaries: lines that start like the boundary,
    close it with trailing blanks, repeat it, or nest another boundary inside."""
    outer = draw(BOUNDARY_TEXT.filter(lambda b: b.strip() == b and '"' not in b))
    inner = outer + draw(st.sampled_from(["", "x", "-", "--"]))
    end = draw(LINE_ENDINGS)

    def body_line() -> str:
        return draw(st.sampled_from([
            "Hi Bob", "", f"--{outer}", f"--{outer}--", f"--{outer}  \t", f"--{outer}x",
            f" --{outer}", f"--{inner}", f"--{inner}--", f"--{outer}-- tail", "-- ",
        ]))

    lines = ["From: katie@example.com", "Subject: hi", "MIME-Version: 1.0",
             f'Content-Type: multipart/mixed; boundary="{outer}"', ""]
    lines += [body_line() for _ in range(draw(st.integers(0, 3)))]
    for _ in range(draw(st.integers(1, 3))):
        lines.append(f"--{outer}")
        if draw(st.booleans()):
            lines += [f'Content-Type: multipart/alternative; boundary="{inner}"', "",
                      f"--{inner}", "Content-Type: text/plain", "", body_line(),
                      f"--{inner}" + draw(st.sampled_from(["--", "", "--  "]))]
        else:
            lines += ["Content-Type: text/plain", ""]
        lines += [body_line() for _ in range(draw(st.integers(0, 4)))]
    if draw(st.booleans()):
        lines.append(f"--{outer}--" + draw(st.sampled_from(["", " ", "\t "])))
    lines += [body_line() for _ in range(draw(st.integers(0, 2)))]
    return end.join(lines).encode("utf-8", "surrogateescape") + end.encode()


def parsed_tree(raw: bytes) -> list[object]:
    content = parse_email(raw)
    if content.mime is None:
        return ["unparsed", content.problems]
    written = b"" if content.problems else to_bytes(content.mime)  # problems: never sent
    tree: list[object] = [content.problems, written]
    for part in content.mime.walk():
        tree += [part.get_content_type(), part.preamble, part.epilogue,
                 [type(d).__name__ for d in part.defects],
                 None if part.is_multipart() else part.get_payload()]
    return tree


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(multipart_messages())
def test_messages_parse_to_the_same_tree_as_with_the_stdlib_pattern(raw: bytes) -> None:
    with switched(SPEEDUP, True):
        ours = parsed_tree(raw)
    with switched(SPEEDUP, False):
        theirs = parsed_tree(raw)
    assert ours == theirs
