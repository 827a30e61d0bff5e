"""The page's CSS as the footer checks read it (tinycss2, through
gateway/rewrite/css_syntax.py): CSS the gateway cannot read is refused as unworkable, blocks
nested deeper than it follows are refused without recursing, and where tinycss2 reads
otherwise than CSS Syntax does today (a unicode range in a selector, a lone surrogate in an
escape) the checks still see what a browser sees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rewrite.css_syntax import MAX_DEPTH
from gateway.rewrite.css_visibility import UNSURE
from gateway.rewrite.html_footer import visibility_problems

# Values the gateway cannot read where an opacity, a length or a margin is expected: refused
# as "cannot work out", as the hand-written reader refused them.
UNREADABLE = {
    "string never closed": "<body style=\"opacity:'0\"><p>Hi",
    "string broken by a newline": '<style>body{opacity:"0\n}</style>',
    "bad url": "<style>body{opacity:url(a b)}</style>",
    "url never closed": "<style>body{margin-left:url(x}</style>",
    "unmatched parenthesis": "<style>body{opacity:0)}</style>",
    "unmatched bracket": "<style>body{opacity:0]}</style>",
    "function never closed": "<style>body{opacity:calc(0}</style>",
    "a string for a length": "<style>body{width:'10px'}</style>",
    "a stray bang": "<style>body{opacity:0 !ie}</style>",
    "an escaped space for a keyword": r'<body style="overflow:\20"><p>Hi',
}


@pytest.mark.parametrize("markup", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_values_are_refused(markup: str) -> None:
    problems = visibility_problems(markup)
    assert any(UNSURE in problem for problem in problems), problems


# As much of each as a message may hold (the body is refused past 84 KB before its CSS is
# read): tinycss2 builds the whole tree, then the reader refuses it before anything recurses.
LARGEST = 83_000
NESTED = {
    "braces": "{",
    "parentheses": "(",
    "brackets": "[",
    "functions": "calc(",
    "at-rules": "@media{",
    "style rules": "a{",
    "matches-any": ":is(",
}


@pytest.mark.parametrize("unit", NESTED.values(), ids=NESTED.keys())
def test_hostile_nesting_is_refused(unit: str) -> None:
    problems = visibility_problems(f"<style>{unit * (LARGEST // len(unit))}</style>")
    assert problems == [f"a stylesheet nests blocks more than {MAX_DEPTH} deep, which the "
                        "gateway cannot check"]


def test_hostile_nesting_in_a_style_attribute_is_refused() -> None:
    problems = visibility_problems(f'<body style="{"(" * LARGEST}"><p>Hi')
    assert problems == [f"<body style> nests blocks more than {MAX_DEPTH} deep, which the "
                        "gateway cannot check"]


def test_nesting_up_to_the_limit_is_read() -> None:
    assert visibility_problems(f"<style>{'{' * MAX_DEPTH}{'}' * MAX_DEPTH}</style>") == []
    assert visibility_problems(f"<style>{'@media{' * (MAX_DEPTH - 1)}body{{opacity:0}}"
                               f"{'}' * (MAX_DEPTH - 1)}</style>") != []
    nested = f"{'calc(' * (MAX_DEPTH - 1)}0{')' * (MAX_DEPTH - 1)}"
    assert any(UNSURE in problem
               for problem in visibility_problems(f"<style>body{{opacity:{nested}}}</style>"))


def test_u_plus_in_a_selector_is_a_combinator() -> None:
    """tinycss2 reads `u+a` as a unicode range; a browser reads `u`, `+`, `a` (Gmail's
    `u + .body` selectors), and so does the gateway."""
    assert visibility_problems("<style>u+a{display:none}u+body{opacity:0}u+div .x{opacity:0}"
                               "</style><p>Hi") == []
    problems = visibility_problems("<style>u+a::before{content:'x'}</style><p>Hi")
    assert any("rule for u+a::before" in problem for problem in problems), problems


def test_an_escaped_surrogate_is_read_and_shown() -> None:
    """tinycss2 before 1.5 raised UnicodeEncodeError on a function so named."""
    problems = visibility_problems(r"<style>b\6f dy{content:\d800(x)}</style><p>Hi")
    assert problems == [f"a stylesheet rule for body sets content: \ufffd(x), which {UNSURE}"]


FRAGMENTS = st.sampled_from([
    "body", "html", "head", "&", "*", ":root", "::before", ":is(", ".x", "#x", "[x]", "u+a",
    "U+0-7F", ">", "+", "~", "||", ",", " ", "\n", "{", "}", "(", ")", "[", "]", ";", ":",
    "!important", "opacity:0", "display:none", "margin-left:-5000px", "calc(", "var(--x)",
    "--x:", "@media x", "@scope", "@keyframes k", "@import", "@font-face", "url(", "url(a b)",
    "'", '"', "/*", "*/", "<!--", "-->", "\\", "\\d800", "\\0", "\\110000", "\\6f ", "1e3px",
    "1rem", "50%", "\x00", "\x0b", "\ufffd", "é", "overflow:", "\\20 ", "\\9",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=40).map("".join), st.booleans())
def test_any_css_is_read_or_refused(css: str, inline: bool) -> None:
    """Whatever the CSS, reading it raises nothing, and what is said of it can be sent."""
    markup = (f"<body style='{css.replace(chr(39), chr(34))}'>" if inline
              else f"<style>{css}</style>")
    for problem in visibility_problems(markup):
        problem.encode("utf-8")
