"""Bounds on client input that parsers would otherwise follow as far as it goes.

- Line breaks: a value that ends up in a header line must be one line for every reader.
  CR and LF are not the only line breaks: Python's `str.splitlines()` (and so the stdlib
  email package, which refuses to write such a header) also breaks at VT, FF, the
  file/group/record separators, NEL, U+2028 and U+2029, and other readers do too.
- JSON nesting: the stdlib decoder recurses once per level and raises `RecursionError`
  (not `ValueError`) past the interpreter's limit; whatever reads the value afterwards
  recurses again. `read_json` refuses deep documents as invalid JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Every character at which str.splitlines() ends a line (tests/runtime checks the list
# against the interpreter over all of Unicode).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_BREAK = re.compile(f"[{re.escape(LINE_BREAKS)}]")
# Deeper than any real API document (a Postmark TemplateModel included).
MAX_JSON_DEPTH = 64


def line_break_in(value: str) -> str | None:
    """The first line-breaking character in `value` as `U+XXXX`, or None."""
    found = _LINE_BREAK.search(value)
    return f"U+{ord(found.group()):04X}" if found else None


class JsonTooDeep(ValueError):
    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")


def read_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, refusing documents nested deeper than `max_depth` arrays and objects
    with `JsonTooDeep` (a `ValueError`, like any other invalid JSON)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    if _deeper_than(value, max_depth):
        raise JsonTooDeep(max_depth)
    return value


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Iterative, so that measuring a deep document cannot itself recurse too far."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False
