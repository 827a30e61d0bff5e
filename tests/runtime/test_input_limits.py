"""Line breaks as every reader counts them, and JSON nested to any depth."""

from __future__ import annotations

import sys

import pytest

from gateway.runtime.input_limits import (
    LINE_BREAKS,
    MAX_JSON_DEPTH,
    JsonTooDeep,
    line_break_in,
    read_json,
)


def test_the_line_breaks_are_exactly_those_str_splitlines_breaks_at() -> None:
    breaking = {chr(c) for c in range(sys.maxunicode + 1)
                if len(f"a{chr(c)}b".splitlines()) == 2}
    assert breaking == set(LINE_BREAKS)


@pytest.mark.parametrize("character", list(LINE_BREAKS), ids=lambda c: f"U+{ord(c):04X}")
def test_each_line_break_is_found_and_named(character: str) -> None:
    assert line_break_in(f"Fleet costs{character}Bcc: x@y.example") == f"U+{ord(character):04X}"


@pytest.mark.parametrize("text", ["", "Fleet costs", "Caf\u00e9 \u2027 \u200b \t tabs"])
def test_text_on_one_line_has_none(text: str) -> None:
    assert line_break_in(text) is None


@pytest.mark.parametrize("depth", [1, 10, MAX_JSON_DEPTH])
def test_json_up_to_the_limit_is_read(depth: int) -> None:
    document = "[" * depth + "]" * depth
    value = read_json(document.encode())
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize(
    "document",
    [
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
        b'{"a":' * MAX_JSON_DEPTH + b"[]" + b"}" * MAX_JSON_DEPTH,
        b"[" * 100_000 + b"]" * 100_000,  # past the interpreter's recursion limit
        b"[" * 100_000,
        b'[1, {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}]",
    ],
    ids=["one-too-deep", "objects", "100k", "100k-unclosed", "deep-inside"],
)
def test_deeper_json_is_invalid_json(document: bytes) -> None:
    with pytest.raises(JsonTooDeep) as refused:
        read_json(document)
    assert isinstance(refused.value, ValueError)
    assert str(MAX_JSON_DEPTH) in str(refused.value)


def test_wide_json_is_not_deep() -> None:
    document = b"[" + b",".join([b'{"a": [1, 2, {"b": "c"}]}'] * 10_000) + b"]"
    assert len(read_json(document)) == 10_000
