"""What the page's CSS does to the footer that no style on the footer can undo: declarations
that may apply to its only ancestors, `<html>` and `<body>` (from their style attributes, a
stylesheet rule that may match them, or an animation of them), and boxes a stylesheet may
generate over the body or in the footer (`<head>` shown, ::before/::after, ::first-line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tinycss2.ast import Declaration, Node

from gateway.rewrite.css_selectors import (
    FOOTER,
    Compound,
    Context,
    Family,
    Matcher,
    Selector,
    Target,
    element_target,
    matcher,
    selector_list,
    selects,
)
from gateway.rewrite.css_syntax import (
    Rule,
    Unreadable,
    contents,
    property_name,
    significant,
    style_declarations,
    stylesheet,
    text,
)
from gateway.rewrite.css_values import (
    CSS_WIDE,
    font_sizes,
    fraction,
    in_pixels,
    keyword,
    length,
    one_keyword,
    unprefixed,
)

HIDES = "hides the footer"
MOVES = "moves the footer out of the window"
UNSURE = "could hide the footer, and the gateway cannot work out whether it does"
# Room beside the footer: at most this much margin, border or padding on either side of
# <html> and <body>, in pixels or in percent of the window (a phone's is 320 px wide).
SIDE_PX = 64


def style_problems(
    attributes: Mapping[str, Mapping[str, str | None] | None], sheets: list[str]
) -> list[str]:
    """Why the page's CSS keeps the footer from being seen, or nothing. `attributes`: those
    of "html", "head" and "body" (None for one the document lacks); `sheets`: the text of
    each <style> element."""
    return _StyleCheck(attributes, sheets).problems()


class _StyleCheck:
    """Every declaration of the page's stylesheets and of the inline styles of `<html>`,
    `<head>` and `<body>` that may apply to those elements, and the boxes a stylesheet may
    generate around or in the footer; `problems` says which of them keep the footer from
    being seen."""

    def __init__(
        self, attributes: Mapping[str, Mapping[str, str | None] | None], sheets: list[str]
    ) -> None:
        self.html = element_target("<html>", attributes["html"])
        self.head = element_target("<head>", attributes["head"])
        self.body = element_target("<body>", attributes["body"])
        self.family = Family(self.html, self.head, self.body)
        self.found: dict[str, list[tuple[str, Declaration]]] = {"<html>": [], "<body>": []}
        self.keyframes: list[tuple[str, Declaration]] = []
        self.out: list[str] = []
        for label in ("html", "head", "body"):
            style = (attributes[label] or {}).get("style")
            if not style:
                continue
            try:
                declarations = style_declarations(style)
            except Unreadable as exc:
                self.out.append(f"<{label} style> {exc}, which the gateway cannot check")
                continue
            for declaration in declarations:
                self._record(f"<{label} style>", getattr(self, label), declaration)
        for sheet in sheets:
            try:
                rules = stylesheet(sheet)
            except Unreadable as exc:
                self.out.append(f"a stylesheet {exc}, which the gateway cannot check")
                continue
            self._walk(rules, None)

    def problems(self) -> list[str]:
        for target in (self.html, self.body):
            animated = [d for _, d in self.found[target.label]
                        if unprefixed(property_name(d)) in ("animation", "animation-name")
                        and keyword(d.value) not in ("none", *CSS_WIDE)]
            if animated:
                for name, declaration in self.keyframes:
                    self.found[target.label].append(
                        (f"@keyframes {name}, which may animate {target.label},", declaration)
                    )
        root_em = font_sizes([d for _, d in self.found["<html>"]], (16.0, 16.0), (16.0, 16.0))
        ems = {"<html>": root_em,
               "<body>": None if root_em is None
               else font_sizes([d for _, d in self.found["<body>"]], root_em, root_em)}
        for target in (self.html, self.body):
            em = ems[target.label]
            for source, declaration in self.found[target.label]:
                name = unprefixed(property_name(declaration))
                why = next(filter(None, (
                    _ancestor_problem(name, in_pixels(declaration.value, end, root_em, em))
                    for end in (0, 1)
                )), None)
                if why:
                    self.out.append(f"{source} sets {_shown(declaration)}, which {why}")
        self.out += self._opacity_problems()
        return self.out

    def _opacity_problems(self) -> list[str]:
        """Opacity multiplies down the tree: <html>'s and <body>'s together."""
        problems = []
        lowest = {}
        for target in (self.html, self.body):
            lowest[target.label] = 1.0
            for source, declaration in self.found[target.label]:
                name = unprefixed(property_name(declaration))
                if name == "all" and keyword(declaration.value) == "inherit":
                    value: float | None = lowest["<html>"] if target is self.body else 1.0
                elif name != "opacity":
                    continue
                elif keyword(declaration.value) == "inherit":
                    value = lowest["<html>"] if target is self.body else 1.0
                else:
                    value = fraction(declaration.value)
                if value is None:
                    problems.append(f"{source} sets {_shown(declaration)}, which {UNSURE}")
                    continue
                if value < 0.5:
                    problems.append(f"{source} sets {_shown(declaration)}, which {HIDES}")
                lowest[target.label] = min(lowest[target.label], value)
        together = lowest["<html>"] * lowest["<body>"]
        if together < 0.5 and not problems:
            problems.append(f"<html> and <body> together fade the footer to opacity "
                            f"{together:.2f}, which {HIDES}")
        return problems

    def _record(self, source: str, target: Target, declaration: Declaration) -> None:
        if target is self.head:
            name = unprefixed(property_name(declaration))
            if name == "display" and keyword(declaration.value) not in (
                "none", "revert", "revert-layer"
            ):
                self.out.append(f"{source} sets {_shown(declaration)} on <head>, outside "
                                "<body>, where it can cover the footer")
            return
        self.found[target.label].append((source, declaration))

    def _walk(self, items: list[Declaration | Rule], context: Context | None) -> None:
        """The rules and declarations of a stylesheet or of a rule's block; declarations
        written together are applied together, so problems come in the order written."""
        declarations: list[Declaration] = []
        for item in items:
            if item.type == "declaration":
                declarations.append(item)
                continue
            self._apply(context, declarations)
            declarations = []
            self._rule(item, context)
        self._apply(context, declarations)

    def _rule(self, rule: Rule, context: Context | None) -> None:
        if rule.type == "qualified-rule":
            self._walk(contents(rule), Context(selector_list(rule.prelude), context))
            return
        name = rule.at_keyword.lower()
        if name == "import":
            self.out.append("an imported stylesheet (@import) could hide the footer and "
                            "cannot be checked")
        elif name.endswith("keyframes"):
            # Any declaration in the block, in a keyframe or not: more than a browser reads.
            animation = text(rule.prelude).strip()
            for item in contents(rule):
                for declaration in [item] if item.type == "declaration" else contents(item):
                    if declaration.type == "declaration":
                        self.keyframes.append((animation, declaration))
        elif name in _DESCRIPTOR_AT_RULES:
            return
        elif name == "scope":  # :scope (and & in it) is not worked out: anything
            self._walk(contents(rule), Context([Selector("@scope", [Compound()], [])], context))
        else:  # @media, @supports, @layer, @container, @starting-style, any other
            self._walk(contents(rule), context)

    def _apply(self, context: Context | None, declarations: list[Declaration]) -> None:
        """Declarations at the top level (of a stylesheet, or of an at-rule there) style
        nothing."""
        if context is None or not declarations:
            return
        parent = matcher(context.parent, self.family)
        for selector in context.selectors:
            if selector.subject.pseudo_elements:
                self._generated(selector, declarations, parent)
                continue
            for target in (self.html, self.head, self.body):
                if selects(selector, target, parent, self.family):
                    for declaration in declarations:
                        self._record(f"a stylesheet rule for {selector.text}", target,
                                     declaration)

    def _generated(
        self, selector: Selector, declarations: list[Declaration], parent: Matcher
    ) -> None:
        """A rule for a pseudo-element: a box of its own beside or in the footer, or part of
        the footer's text styled apart from it, neither of which an inline style reaches."""
        names = selector.subject.pseudo_elements
        if all(_harmless_pseudo_element(name) for name in names):
            return
        if names[0] in ("before", "after"):
            found = [d for d in declarations if unprefixed(property_name(d)) == "content"
                     and keyword(d.value) not in ("none", "normal", "initial", "unset",
                                                  "revert", "revert-layer")]
        else:
            found = declarations
        if not found:
            return
        for target in (self.html, self.body, FOOTER):
            if selects(selector, target, parent, self.family):
                self.out.append(
                    f"a stylesheet rule for {selector.text} sets {_shown(found[0])}, which "
                    f"gives {target.label} a box or text of its own that can hide the footer "
                    "and that no style on the footer reaches"
                )
                return


# At-rules whose blocks hold descriptors, not rules that style elements.
_DESCRIPTOR_AT_RULES = frozenset({
    "font-face", "font-feature-values", "font-palette-values", "property", "counter-style",
    "page", "position-try", "view-transition", "function", "namespace", "charset",
    "color-profile",
})
_HARMLESS_PSEUDO_ELEMENTS = frozenset({
    # Shown only on a reader's own selection or search, or for elements the footer, <html>
    # and <body> are not (form fields, lists, media, shadow trees, the top layer).
    "selection", "target-text", "search-text", "spelling-error", "grammar-error", "highlight",
    "placeholder", "file-selector-button", "marker", "backdrop", "cue", "cue-region", "part",
    "slotted", "details-content",
})


def _harmless_pseudo_element(name: str) -> bool:
    return name in _HARMLESS_PSEUDO_ELEMENTS or name.startswith(("-webkit-", "-moz-", "-ms-"))


def _shown(declaration: Declaration) -> str:
    return f"{property_name(declaration)}: {text(declaration.value).strip().lower()}"


# --- the values that hide the footer when <html> or <body> has them ----------------------

_SIDE_PERCENT = 10
# What a footer needs: at least this wide and high, and no wider than a desktop window.
_LEAST_PX = 200
_LEAST_PERCENT = 50
_MOST_PX = 1000
_COLOUR_FUNCTIONS = frozenset({
    "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color", "color-mix",
    "light-dark", "contrast-color", "device-cmyk",
})
_DECORATION_LINES = frozenset({"underline", "overline", "line-through", "blink",
                               "spelling-error", "grammar-error"})
_NUMERIC = ("number", "dimension", "percentage")

_Check = Callable[[list[Node]], str | None]
_SideCheck = Callable[[Node], str | None]


def _ancestor_problem(name: str, value: list[Node]) -> str | None:
    """Why this declaration (`name` unprefixed) on `<html>` or `<body>` would keep the
    footer from being seen (opacity is judged with both elements' together, elsewhere);
    None if it would not. Properties that are inherited (colour, font, spacing, direction,
    ...) are not here: the footer sets each of its own."""
    check = _ANCESTOR_CHECKS.get(name)
    if check is None:
        return None
    if one_keyword(value) in CSS_WIDE:
        return None
    return check(value)


def _only(*safe: str, why: str = HIDES) -> _Check:
    """A property whose only values that keep the footer seen are `safe` keywords."""
    def check(value: list[Node]) -> str | None:
        word = keyword(value)
        if word is None:
            return UNSURE
        return None if word in safe or word in CSS_WIDE else why
    return check


def _none(why: str) -> _Check:
    """A property every value of which but `none` does what `why` says."""
    def check(value: list[Node]) -> str | None:
        return None if keyword(value) == "none" else why
    return check


def _beside(node: Node) -> str | None:
    """A margin, border or padding to the left or right of the footer."""
    if node.type == "ident":
        return None  # auto, thin, medium, thick, a CSS-wide keyword
    size = length(node)
    if size is None:
        return UNSURE
    if size.value == 0:
        return None
    if size.value < 0:
        return MOVES
    if size.px is not None:
        return None if size.px <= SIDE_PX else MOVES
    if size.percent is not None:
        return None if size.percent <= _SIDE_PERCENT else MOVES
    return UNSURE


def _no_shift(node: Node) -> str | None:
    """A left or right offset: anything but none moves the footer's lines off an edge."""
    if node.type == "ident":
        return None
    size = length(node)
    if size is None:
        return UNSURE
    return None if size.value == 0 else MOVES


def _not_up(node: Node, sign: float = 1.0) -> str | None:
    """A top offset or margin (`sign` -1: a bottom offset): up is above the page, where no
    reader scrolls."""
    if node.type == "ident":
        return None
    size = length(node)
    if size is None:
        return UNSURE
    return "moves the footer above the top of the page" if size.value * sign < 0 else None


def _not_down(node: Node) -> str | None:
    return _not_up(node, -1.0)


def _size(least: bool, most: bool, keywords: frozenset[str]) -> _SideCheck:
    """A width or height of <html> or <body>: at least `_LEAST_*` (`least`), at most the
    window (`most`)."""
    def check(node: Node) -> str | None:
        if node.type == "ident":
            word = node.value.lower()
            return None if word in keywords or word in CSS_WIDE else UNSURE
        size = length(node)
        if size is None:
            return UNSURE
        px, percent = size.px, size.percent
        if size.value == 0:
            px, percent = 0.0, None
        elif px is None and percent is None:
            return UNSURE
        if least and ((px is not None and px < _LEAST_PX)
                      or (percent is not None and percent < _LEAST_PERCENT)):
            return "leaves the footer too little room"
        if most and ((px is not None and px > _MOST_PX)
                     or (percent is not None and percent > 100)):
            return "makes the footer wider than the window"
        return None
    return check


_WIDTH = _size(True, True, frozenset({"auto", "fit-content", "stretch", "fill-available",
                                      "-webkit-fill-available", "-moz-available"}))
_MIN_WIDTH = _size(False, True, frozenset({"auto", "min-content", "fit-content"}))
_MAX_WIDTH = _size(True, False, frozenset({"none", "max-content", "fit-content"}))
_HEIGHT = _size(True, False, frozenset({"auto", "none", "min-content", "max-content",
                                        "fit-content", "stretch", "fill-available",
                                        "-webkit-fill-available"}))


def _each(check: _SideCheck, count: int = 1) -> _Check:
    """`check` on each of up to `count` values."""
    def run(value: list[Node]) -> str | None:
        nodes = significant(value)
        if not 1 <= len(nodes) <= count:
            return UNSURE
        return next((why for why in map(check, nodes) if why), None)
    return run


def _box(top: _SideCheck | None, right: _SideCheck | None, bottom: _SideCheck | None,
         left: _SideCheck | None) -> _Check:
    """A shorthand of one to four sides (top, right, bottom, left), each side's check."""
    def run(value: list[Node]) -> str | None:
        nodes = significant(value)
        if one_keyword(value) in CSS_WIDE:
            return None
        if not 1 <= len(nodes) <= 4:
            return UNSURE
        t = nodes[0]
        r = nodes[1] if len(nodes) > 1 else t
        b = nodes[2] if len(nodes) > 2 else t
        l_ = nodes[3] if len(nodes) > 3 else r
        for check, node in ((top, t), (right, r), (bottom, b), (left, l_)):
            why = check(node) if check else None
            if why:
                return why
        return None
    return run


def _pair(start: _SideCheck | None, end: _SideCheck | None) -> _Check:
    """A logical shorthand of one or two values (start, end)."""
    def run(value: list[Node]) -> str | None:
        nodes = significant(value)
        if not 1 <= len(nodes) <= 2:
            return UNSURE
        for check, node in ((start, nodes[0]), (end, nodes[-1])):
            why = check(node) if check else None
            if why:
                return why
        return None
    return run


def _border_beside(value: list[Node]) -> str | None:
    """A border shorthand on the left or right: its width."""
    for node in significant(value):
        if node.type == "function":
            if node.name.lower() not in _COLOUR_FUNCTIONS:
                return UNSURE
        elif node.type in _NUMERIC:
            why = _beside(node)
            if why:
                return why
    return None


def _display(value: list[Node]) -> str | None:
    word = keyword(value)
    if word is None:
        return UNSURE
    if word == "none":
        return HIDES
    if word in ("block", "flow", "flow-root", "block flow", "flow block",
                "block flow-root", "flow-root block") or word in CSS_WIDE:
        return None
    return "lays <body> out so that the footer can be put beside or out of the page"


def _contain(value: list[Node]) -> str | None:
    word = keyword(value)
    if word is None:
        return UNSURE
    return HIDES if set(word.split()) & {"paint", "strict", "content"} else None


def _overflow(value: list[Node]) -> str | None:
    """Hidden or clipped downwards, the page cannot be scrolled to what is below the fold."""
    word = keyword(value)
    if word is None:
        return UNSURE
    words = word.split()  # none when the keyword is an escaped space: `overflow:\20`
    if not 1 <= len(words) <= 2:
        return UNSURE
    return "stops the reader scrolling to the footer" if words[-1] in ("hidden", "clip") \
        else None


def _position(value: list[Node]) -> str | None:
    word = keyword(value)
    if word is None:
        return UNSURE
    return HIDES if word in ("absolute", "fixed") else None


def _zoom(value: list[Node]) -> str | None:
    amount = fraction(value)
    if amount is None:
        return UNSURE
    return "shrinks the footer" if amount < 1 else None


def _decoration(value: list[Node]) -> str | None:
    """Decorations drawn on <html> or <body> go through every line in them, the footer's
    too, whatever the footer says."""
    for node in significant(value):
        if node.type == "function":
            if node.name.lower() not in _COLOUR_FUNCTIONS:
                return UNSURE
        elif node.type == "ident" and node.value.lower() in _DECORATION_LINES:
            return "draws lines through or under the footer's text, which can hide it"
    return None


_TRANSFORMS = "can move, shrink or turn the footer out of sight"
_CLIPS = "can clip or mask the footer away"
_HORIZONTAL = _each(_beside)
_ANCESTOR_CHECKS: dict[str, _Check] = {
    "display": _display,
    "visibility": _only("visible"),
    "content-visibility": _only("visible", "auto"),
    "content": _only("normal", "none", why="replaces everything in it, the footer included"),
    "filter": _none("can blur, darken or fade the footer"),
    "mix-blend-mode": _only("normal", why="blends the footer into what lies under it"),
    "transform": _none(_TRANSFORMS),
    "translate": _none(_TRANSFORMS),
    "rotate": _none(_TRANSFORMS),
    "scale": _none(_TRANSFORMS),
    "offset": _none(_TRANSFORMS),
    "offset-path": _none(_TRANSFORMS),
    "transform-style": _only("flat", why="puts the footer in a 3D scene where other boxes "
                                          "can come in front of it"),
    "zoom": _zoom,
    "clip-path": _none(_CLIPS),
    "clip": _only("auto", why=_CLIPS),
    "mask": _none(_CLIPS),
    "mask-image": _none(_CLIPS),
    "mask-border": _none(_CLIPS),
    "mask-border-source": _none(_CLIPS),
    "mask-box-image": _none(_CLIPS),
    "mask-box-image-source": _none(_CLIPS),
    "contain": _contain,
    "overflow": _overflow,
    "overflow-y": _overflow,
    "overflow-block": _overflow,
    "position": _position,
    "columns": _only("auto", why=MOVES),
    "column-count": _only("auto", why=MOVES),
    "column-width": _only("auto", why=MOVES),
    "writing-mode": _only("horizontal-tb", "lr", "lr-tb", "rl", "rl-tb", why=MOVES),
    "text-decoration": _decoration,
    "text-decoration-line": _decoration,
    "line-clamp": _only("none", why=HIDES),
    "max-lines": _only("none", why=HIDES),
    "continue": _only("auto", why=HIDES),
    "scroll-snap-type": _only("none", why="can stop the reader scrolling to the footer"),
    "interactivity": _only("auto", why="makes the unsubscribe link unusable"),
    "margin": _box(_not_up, _beside, None, _beside),
    "margin-left": _HORIZONTAL,
    "margin-right": _HORIZONTAL,
    "margin-inline": _pair(_beside, _beside),
    "margin-inline-start": _HORIZONTAL,
    "margin-inline-end": _HORIZONTAL,
    "margin-top": _each(_not_up),
    "margin-block": _pair(_not_up, None),
    "margin-block-start": _each(_not_up),
    "padding": _box(None, _beside, None, _beside),
    "padding-left": _HORIZONTAL,
    "padding-right": _HORIZONTAL,
    "padding-inline": _pair(_beside, _beside),
    "padding-inline-start": _HORIZONTAL,
    "padding-inline-end": _HORIZONTAL,
    "border": _border_beside,
    "border-left": _border_beside,
    "border-right": _border_beside,
    "border-inline": _border_beside,
    "border-inline-start": _border_beside,
    "border-inline-end": _border_beside,
    "border-width": _box(None, _beside, None, _beside),
    "border-left-width": _HORIZONTAL,
    "border-right-width": _HORIZONTAL,
    "border-inline-width": _pair(_beside, _beside),
    "border-inline-start-width": _HORIZONTAL,
    "border-inline-end-width": _HORIZONTAL,
    "left": _each(_no_shift),
    "right": _each(_no_shift),
    "inset-inline-start": _each(_no_shift),
    "inset-inline-end": _each(_no_shift),
    "inset-inline": _pair(_no_shift, _no_shift),
    "top": _each(_not_up),
    "inset-block-start": _each(_not_up),
    "bottom": _each(_not_down),
    "inset-block-end": _each(_not_down),
    "inset-block": _pair(_not_up, _not_down),
    "inset": _box(_not_up, _no_shift, _not_down, _no_shift),
    "width": _each(_WIDTH),
    "inline-size": _each(_WIDTH),
    "min-width": _each(_MIN_WIDTH),
    "min-inline-size": _each(_MIN_WIDTH),
    "max-width": _each(_MAX_WIDTH),
    "max-inline-size": _each(_MAX_WIDTH),
    "height": _each(_HEIGHT),
    "block-size": _each(_HEIGHT),
    "max-height": _each(_HEIGHT),
    "max-block-size": _each(_HEIGHT),
}
