"""CSS values as the visibility checks read them: keywords, numbers, lengths in pixels or
percent of the window, font sizes. A value that cannot be read so is None, which the checks
treat as one that could hide the footer."""

from __future__ import annotations

from dataclasses import dataclass

from tinycss2.ast import Declaration, DimensionToken, Node

from gateway.rewrite.css_syntax import is_literal, property_name, significant

CSS_WIDE = ("inherit", "initial", "unset", "revert", "revert-layer")
ABSOLUTE_UNITS = {"px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
                  "mm": 96 / 25.4, "q": 96 / 101.6}
VIEWPORT_UNITS = frozenset({
    "vw", "vh", "vi", "vb", "vmin", "vmax", "svw", "svh", "svi", "svb", "svmin", "svmax",
    "lvw", "lvh", "lvi", "lvb", "lvmin", "lvmax", "dvw", "dvh", "dvi", "dvb", "dvmin",
    "dvmax", "cqw", "cqh", "cqi", "cqb", "cqmin", "cqmax",
})
FONT_RELATIVE = frozenset({"em", "ex", "ch", "cap", "ic"})
ROOT_FONT_RELATIVE = frozenset({"rem", "rex", "rch", "rcap", "ric"})
_FONT_SIZE_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                       "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}
_NUMERIC = ("number", "percentage", "dimension")


@dataclass(frozen=True)
class Length:
    """A length as the page wrote it: in pixels, in percent (of the window or of the
    containing block, which for <html> and <body> is the window), or neither (relative to a
    font size the page itself sets)."""

    value: float
    px: float | None = None
    percent: float | None = None


def length(node: Node) -> Length | None:
    if node.type == "number":  # 0, or a unitless length: pixels in quirks mode
        return Length(node.value, px=node.value)
    if node.type == "percentage":
        return Length(node.value, percent=node.value)
    if node.type == "dimension":
        unit = node.unit.lower()
        if unit in ABSOLUTE_UNITS:
            return Length(node.value, px=node.value * ABSOLUTE_UNITS[unit])
        if unit in VIEWPORT_UNITS:
            return Length(node.value, percent=node.value)
        return Length(node.value)
    return None


def keyword(value: list[Node]) -> str | None:
    """The value's keyword when it is one keyword (the keywords joined when it is only
    keywords), else None."""
    nodes = significant(value)
    if nodes and all(node.type == "ident" for node in nodes):
        return " ".join(node.value.lower() for node in nodes)
    return None


def one_keyword(value: list[Node]) -> str | None:
    word = keyword(value)
    return word if word is not None and " " not in word else None


def fraction(value: list[Node]) -> float | None:
    """An opacity or zoom: a number or a percentage, or 1 for the CSS-wide keywords."""
    nodes = significant(value)
    if len(nodes) != 1:
        return None
    node = nodes[0]
    if node.type == "ident" and node.value.lower() in (*CSS_WIDE, "normal", "reset"):
        return 1.0
    if node.type == "number":
        return node.value
    if node.type == "percentage":
        return node.value / 100
    return None


def unprefixed(name: str) -> str:
    for prefix in ("-webkit-", "-moz-", "-ms-", "-o-"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def font_sizes(declarations: list[Declaration], parent: tuple[float, float],
               root: tuple[float, float]) -> tuple[float, float] | None:
    """The smallest and the largest font size these declarations can give the element
    (`parent`: its parent's, `root`: <html>'s), in pixels: any of them may apply, or none;
    None when one of them cannot be worked out. An em (an ex, ch, cap or ic is no larger)
    lies between the two."""
    sizes = list(parent)
    for declaration in declarations:
        name = unprefixed(property_name(declaration))
        if name == "font-size":
            nodes = significant(declaration.value)
        elif name == "font":  # the size comes before any "/line-height"
            nodes = []
            for node in significant(declaration.value):
                if is_literal(node, "/"):
                    break
                if node.type in _NUMERIC:
                    nodes = [node]
            if not nodes:
                continue
        else:
            continue
        if len(nodes) != 1:
            return None
        node = nodes[0]
        for end in (0, 1):
            size = _font_size(node, parent[end], root[end])
            if size is None:
                return None
            sizes.append(size)
    return min(sizes), max(sizes)


def _font_size(node: Node, parent: float, root: float) -> float | None:
    unit = node.unit.lower() if node.type == "dimension" else ""
    if node.type == "ident":
        word = node.value.lower()
        return _FONT_SIZE_KEYWORDS.get(word, parent) * (
            1.2 if word == "larger" else 1 / 1.2 if word == "smaller" else 1)
    if node.type == "percentage":
        return parent * node.value / 100
    if unit in ABSOLUTE_UNITS:
        return node.value * ABSOLUTE_UNITS[unit]
    if unit in FONT_RELATIVE:
        return parent * node.value
    if unit in ROOT_FONT_RELATIVE:
        return root * node.value
    if node.type == "number" and node.value == 0:
        return 0.0
    return None


def in_pixels(value: list[Node], end: int, root_em: tuple[float, float] | None,
              em: tuple[float, float] | None) -> list[Node]:
    """The value with its font-relative lengths in pixels, at the smallest (`end` 0) or the
    largest (1) font size they may multiply (left as they are when that cannot be worked
    out)."""
    def convert(node: Node) -> Node:
        if node.type == "dimension":
            unit = node.unit.lower()
            size = em if unit in FONT_RELATIVE else (
                root_em if unit in ROOT_FONT_RELATIVE else None)
            if size is not None:
                px = node.value * size[end]
                return DimensionToken(node.source_line, node.source_column, px, None,
                                      repr(px), "px")
        return node
    return [convert(node) for node in value]
