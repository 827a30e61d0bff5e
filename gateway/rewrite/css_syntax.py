"""The page's CSS read as a browser reads it (CSS Syntax Level 3, through tinycss2), with a
bound on nesting: hostile CSS can nest blocks as deep as its length allows, and everything
that follows a nested structure down (tinycss2's serializer, the rule walk, the selector
matcher) is recursive.

Where tinycss2 reads a block otherwise than the syntax does, it reads more, never less: it
ends a declaration at its first {} block (`--x: {a} b`, `left: {a} b`), and reads what
follows as further declarations or rules, which a browser takes as part of that value or as
a rule it drops; either way, none of what a browser applies is missed.
"""

from __future__ import annotations

import re

import tinycss2
from tinycss2.ast import AtRule, Declaration, Node, QualifiedRule

MAX_DEPTH = 64

Rule = QualifiedRule | AtRule


class Unreadable(ValueError):
    """CSS nested deeper than the gateway follows."""


def stylesheet(css: str) -> list[Rule]:
    """The rules of a style sheet. Raises `Unreadable`."""
    return [rule for rule in tinycss2.parse_stylesheet(_values(css), skip_whitespace=True)
            if _is_kept(rule)]


def contents(rule: Rule) -> list[Declaration | Rule]:
    """A rule's {} block as a browser reads it: declarations and nested rules, in order."""
    if rule.content is None:
        return []
    return [item for item in tinycss2.parse_blocks_contents(rule.content, skip_whitespace=True)
            if _is_kept(item)]


def style_declarations(style: str) -> list[Declaration]:
    """The declarations of a style attribute, and (taken as the element's too) those of any
    rule written inside it or after a stray `}`. Raises `Unreadable`."""
    values = _values(style)
    parts: list[list[Node]] = [[]]
    for value in values:
        if value.type == "error" and value.kind == "}":
            parts.append([])
        else:
            parts[-1].append(value)
    items = [item for part in parts
             for item in tinycss2.parse_blocks_contents(part, skip_whitespace=True)
             if _is_kept(item)]
    declarations = []
    blocks = [iter(items)]
    while blocks:
        item = next(blocks[-1], None)
        if item is None:
            blocks.pop()
        elif item.type == "declaration":
            declarations.append(item)
        else:
            blocks.append(iter(contents(item)))
    return declarations


# A `u` (not itself escaped) before `+` and a hex digit or `?`: tinycss2 still reads a
# unicode-range token there, which CSS Syntax now reads only in @font-face's unicode-range,
# so that a selector such as `u+a` (an `a` after a `u`) would lose its `a`. Written as an
# escape, the `u` means the same everywhere (ident, string, url) and starts no range.
_RANGE_START = re.compile(r"(?<!\\)((?:\\\\)*)([uU])(?=\+[0-9a-fA-F?])")


def _values(css: str) -> list[Node]:
    """The component values of `css`, comments dropped. Raises `Unreadable` when blocks
    nest deeper than `MAX_DEPTH` (tinycss2 builds the tree without recursing)."""
    css = _RANGE_START.sub(lambda m: f"{m[1]}\\{ord(m[2]):x} ", css)
    values = tinycss2.parse_component_value_list(css, skip_comments=True)
    levels = [(values, 0)]
    while levels:
        nodes, depth = levels.pop()
        for node in nodes:
            inner = _inside(node)
            if inner is not None:
                if depth == MAX_DEPTH:
                    raise Unreadable(f"nests blocks more than {MAX_DEPTH} deep")
                levels.append((inner, depth + 1))
    return values


def _inside(node: Node) -> list[Node] | None:
    if node.type == "function":
        return node.arguments
    if node.type in ("{} block", "[] block", "() block"):
        return node.content
    return None


def _is_kept(item: Node) -> bool:
    """Declarations and rules; not parse errors, nor a rule whose prelude is a custom
    property's name and colon (the syntax drops those)."""
    if item.type == "qualified-rule":
        head = significant(item.prelude)[:2]
        return not (len(head) == 2 and head[0].type == "ident"
                    and head[0].value.startswith("--") and is_literal(head[1], ":"))
    return item.type in ("declaration", "at-rule")


def property_name(declaration: Declaration) -> str:
    """Lowercased, unless a custom property's (whose names keep their case)."""
    name = declaration.name
    return name if name.startswith("--") else name.lower()


def significant(nodes: list[Node]) -> list[Node]:
    return [node for node in nodes if node.type != "whitespace"]


def is_literal(node: Node | None, value: str) -> bool:
    return node is not None and node.type == "literal" and node.value == value


_SPACES = re.compile(r"[ \t\n]+")
_SURROGATES = re.compile("[\ud800-\udfff]")


def text(nodes: list[Node]) -> str:
    """`nodes` written out, each run of white space one space; an escaped surrogate (which
    tinycss2 keeps) as U+FFFD, so that the text can be encoded."""
    return _SURROGATES.sub("\ufffd", _SPACES.sub(" ", tinycss2.serialize(nodes)))
