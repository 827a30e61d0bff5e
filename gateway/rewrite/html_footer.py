"""The footer in an HTML body, placed by an HTML5 parser, and what would keep a reader from
seeing it.

An HTML document is not a string: searching for `</body>` put the footer inside whatever
the agent left open (a hidden `div`, a comment, a `<template>`, a `<title>`). The body is
parsed as a browser parses it (lexbor, through selectolax, follows the WHATWG tree
construction rules), the footer becomes the last child of the rendered `<body>`, outside
every element the agent left open, and the document is written out again.

The footer takes nothing from the page's stylesheets. Every element in it starts its inline
style with `all: revert !important`, which puts every property back to the browser's own
default whatever any rule of the page says (an inline `!important` declaration outranks
every stylesheet declaration, `!important` ones included, and animations), then sets,
inline and `!important` too, what it needs: colours, font, size, direction, and so on (the
same list serves clients that do not know `all`). The footer is positioned, at the highest
z-index, and is the last child of `<body>`: whatever the body holds is painted before it,
at any z-index, so nothing in the body can cover it. Its elements carry no class or id for
a stylesheet to name.

What no style on the footer can undo is what `visibility_problems` names; the message is
then blocked (FOOTER_NOT_VISIBLE) rather than sent:
- the footer's only ancestors, `<html>` and `<body>`, hiding, fading (their opacities
  multiply), filtering, transforming, clipping, masking, blending, zooming out or replacing
  everything in them, moving it out of the window (offsets, margins, borders, paddings,
  columns, vertical writing), leaving it too little room, stopping the reader scrolling to
  it, striking through it (decorations reach descendants whatever they say), or making its
  link inert; by their style, a stylesheet, an animation, or an attribute;
- boxes painted over the whole body: `<head>` made visible, the `::before`/`::after` boxes
  of `<html>` and `<body>`, and the top layer (popovers, dialogs a button opens); and boxes
  a stylesheet gives the footer itself (`::before`, `::after`, `::first-line`,
  `::first-letter`), which no inline style reaches;
- a page that replaces itself (`<meta http-equiv=refresh>`);
- what the gateway cannot read (an external or imported stylesheet) or cannot evaluate (a
  `calc()` or `var()` where the value decides whether the footer is seen);
- the length after which Gmail clips a message.

The page's CSS is read as a browser reads it (CSS Syntax Level 3: tokens with their
escapes, comments and strings, blocks, nested rules, `!important`), and selectors are
matched against `<html>` and `<body>` as the parser built them: a rule counts when it may
apply (any media query, any pseudo-class state), never only when it surely does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

FOOTER_MARK = "data-compliance-footer"
# Gmail clips a message's HTML after about 102 KB; the footer must come before that.
CLIP_BYTES = 100_000
# Room the footer itself takes, counted before it is rendered: the footer template with
# the inline styles below on each of its elements (tests/rewrite/test_html_footer.py checks
# that the gateway's own footer fits).
FOOTER_ALLOWANCE_BYTES = 16_000

# Each footer element's inline style, every declaration `!important`: first nothing from the
# page, then defaults the footer template's own inline style may change, then the template's
# own style, then what nothing changes.
_RESET = ("all:revert",)
_DEFAULTS = ("margin-top:0", "margin-bottom:0", "padding:0", "border:0 none",
             "vertical-align:baseline")
_PROTECTED = (
    "visibility:visible", "opacity:1", "float:none", "inset:auto", "transform:none",
    "translate:none", "rotate:none", "scale:none", "offset-path:none", "filter:none",
    "mix-blend-mode:normal", "clip-path:none", "mask:none", "-webkit-mask-box-image:none",
    "content-visibility:visible", "contain:none", "content:normal", "width:auto",
    "min-width:0", "max-width:none", "height:auto", "min-height:0", "max-height:none",
    "overflow:visible", "columns:auto", "zoom:1",
    # A generic family: an @font-face rule can redefine "Arial", not sans-serif.
    "font-family:sans-serif", "font-size:12px", "font-size-adjust:none", "line-height:1.5",
    "text-indent:0", "letter-spacing:normal", "word-spacing:normal", "white-space:normal",
    "overflow-wrap:break-word", "text-transform:none", "-webkit-text-size-adjust:100%",
    "direction:ltr", "unicode-bidi:isolate", "writing-mode:horizontal-tb",
    "color:#222222", "-webkit-text-fill-color:currentcolor", "-webkit-text-stroke-width:0",
    "text-shadow:none", "text-emphasis-style:none", "-webkit-text-security:none",
    "background:#ffffff", "pointer-events:auto", "margin-left:0", "margin-right:0",
)
# The footer's own element: above everything else in the body (it comes last, so it wins
# over any other box at the same z-index), a stacking context of its own, and its type set
# whatever the page's is (its elements take the rest from it: `all: revert` inherits).
_ROOT = (
    "position:relative", "z-index:2147483647", "isolation:isolate",
    "font:12px/1.5 sans-serif", "font-synthesis:weight style small-caps",
    "font-palette:normal", "text-rendering:auto", "text-align:left", "word-break:normal",
    "line-break:auto", "hyphens:manual", "text-wrap-style:auto",
    "text-underline-offset:auto", "text-underline-position:auto",
    "text-decoration-skip-ink:auto", "-webkit-font-smoothing:auto",
)
_INSIDE = ("position:static",)
_PER_LINE = 6  # declarations on one line of the style attribute
_DISPLAY = {"a": "inline", "br": "inline", "span": "inline", "b": "inline", "strong": "inline"}
_LINK = ("color:#1a0dab", "text-decoration:underline")

_ROUND_TRIP_RISKS = ("<script", "<noscript", "<!--", "<![cdata[", "<plaintext", "<template",
                     "<svg", "<math", "<noembed", "<noframes", "<iframe", "<xmp", "<frameset")


class FooterNotVisible(ValueError):
    """The footer cannot be placed where a reader's client shows it; says why."""


def footed_html(markup: str, footer_html: str, newline: str = "\n") -> str:
    """`markup` with the footer as the last child of the rendered body, every footer element
    styled so that no stylesheet can hide it. The styles are spread over lines (`newline`,
    the body's own line ending), so that no line comes near the 998-octet limit.

    The result is parsed again, as the reader's client will: a document that does not keep
    the footer a child of its body once written out (a script whose end tag is escaped
    away) raises `FooterNotVisible` rather than being sent."""
    return _footed(LexborHTMLParser(markup), footer_html, newline, _may_not_round_trip(markup))


def _may_not_round_trip(markup: str) -> bool:
    """Whether the written-out document could parse differently from the parsed one: only
    scripts (their escaped states), comments, foreign content (CDATA) and elements whose
    content a client parses otherwise (noscript, template, plaintext) can do that; other
    markup is written out as it was read, and is not parsed a second time."""
    lowered = markup.lower()
    return any(mark in lowered for mark in _ROUND_TRIP_RISKS)


def _footed(
    document: LexborHTMLParser, footer_html: str, newline: str, verify: bool
) -> str:
    """Adds the footer to the parsed `document` (which it changes) and writes it out."""
    body = document.body
    if body is None or document.css_first("frameset") is not None:
        raise FooterNotVisible("a <frameset> document has no body to show the footer in")
    footer = LexborHTMLParser(f"<div {FOOTER_MARK}>{footer_html}</div>")
    assert footer.body is not None
    for element in footer.body.traverse():
        if element.tag not in ("body", "-text"):
            _protect(element, newline)
    for node in list(footer.body.iter(include_text=True)):
        body.insert_child(node)
    footed = document.html or ""
    if not verify:
        return footed
    placed = LexborHTMLParser(footed).css(f"[{FOOTER_MARK}]")
    if len(placed) != 1 or placed[0].parent is None or placed[0].parent.tag != "body":
        raise FooterNotVisible(
            "written out, the markup swallows the footer (an element or script that never "
            "ends as the reader's client parses it)"
        )
    return footed


def _protect(element: LexborNode, newline: str) -> None:
    tag = element.tag or ""
    own = [f"{d.name}:{_text(d.value).strip()}"
           for d in _style_declarations(element.attrs.get("style") or "")]
    display = f"display:{_DISPLAY.get(tag, 'block')}"
    if tag == "br":  # no text and, inline, no box: nothing to show or to hide
        declarations = [*_RESET, display]
    else:
        declarations = [
            *_RESET, *_DEFAULTS, "text-decoration:none", *own, *_PROTECTED, display,
            *(_LINK if tag == "a" else ()),
            *(_ROOT if FOOTER_MARK in element.attrs else _INSIDE),
        ]
    lines = [";".join(f"{d}!important" for d in declarations[i:i + _PER_LINE])
             for i in range(0, len(declarations), _PER_LINE)]
    element.attrs["style"] = f";{newline}".join(lines) + ";"
    for name in ("class", "id"):  # nothing for a stylesheet of the page to name
        if name in element.attrs:
            del element.attrs[name]


def visibility_problems(markup: str) -> list[str]:
    """Why a footer added to this HTML could not be seen, or nothing. Conservative: what the
    gateway cannot check (an external stylesheet, a value it cannot evaluate) counts as
    hiding it."""
    if len(markup.encode("utf-8", "surrogatepass")) + FOOTER_ALLOWANCE_BYTES > CLIP_BYTES:
        # Nothing else is looked for in a body refused for its length.
        return [f"the HTML body is over {CLIP_BYTES // 1000} KB with the footer: Gmail clips "
                "a message after about 102 KB, so the footer would not be shown"]
    document = LexborHTMLParser(markup)
    problems = []
    elements = {tag: document.css_first(tag) for tag in ("html", "head", "body")}
    for tag in ("html", "body"):
        element = elements[tag]
        if element is not None:
            problems += _attribute_problems(tag, element)
    if document.css_first("plaintext") is not None:
        problems.append("a <plaintext> element turns everything after it, the footer "
                        "included, into text")
    if document.css_first("[popover]") is not None:
        problems.append("an element with the popover attribute can be shown in the top "
                        "layer, above everything in the page, the footer included")
    if document.css_first("[commandfor]") is not None:
        problems.append("a button with commandfor can open a dialog or popover in the top "
                        "layer, above everything in the page, the footer included")
    for meta in document.css("meta"):
        if (meta.attrs.get("http-equiv") or "").strip().lower() == "refresh":
            problems.append("a <meta http-equiv=refresh> replaces the page, footer "
                            "included, with another")
            break
    for link in document.css("link"):
        if "stylesheet" in (link.attrs.get("rel") or "").lower():
            problems.append("an external stylesheet (<link rel=stylesheet>) could hide the "
                            "footer and cannot be checked")
            break
    sheets = [style.text(deep=True) for style in document.css("style")]
    problems += _StyleCheck(elements, sheets).problems()
    try:  # last: it adds a footer to `document`
        _footed(document, "<p>footer</p>", "\n", _may_not_round_trip(markup))
    except FooterNotVisible as exc:
        problems.append(str(exc))
    return list(dict.fromkeys(problems))


def _attribute_problems(tag: str, element: LexborNode) -> list[str]:
    """What the attributes of `<html>` or `<body>` do to everything in them."""
    attrs = element.attrs
    problems = []
    if "hidden" in attrs:
        problems.append(f"<{tag}> has the hidden attribute")
    if "inert" in attrs:
        problems.append(f"<{tag}> has the inert attribute, which makes the unsubscribe link "
                        "unusable")
    if (attrs.get("aria-hidden") or "").strip().lower() == "true":
        problems.append(f"<{tag}> has aria-hidden=true, which hides the footer from screen "
                        "readers")
    if tag == "body":  # the margins a browser maps from these onto <body>, in pixels
        for name in ("leftmargin", "rightmargin", "marginwidth"):
            digits = re.match(r"\s*(\d+)", attrs.get(name) or "")
            if digits and int(digits.group(1)) > _SIDE_PX:
                problems.append(f'<body {name}="{attrs.get(name)}"> {_MOVES}')
    return problems


# --- what the page's CSS does to <html>, <head>, <body> and the footer --------------------

_HIDES = "hides the footer"
_MOVES = "moves the footer out of the window"
_UNSURE = "could hide the footer, and the gateway cannot work out whether it does"


@dataclass(frozen=True)
class _Target:
    """An element a selector is matched against: `<html>`, `<head>` or `<body>` as parsed
    (`attrs`), or any element of the footer (`attrs` None: any tag, any attribute but the
    class and id it never has)."""

    label: str
    tag: str | None
    attrs: dict[str, str] | None = None
    root: bool = False

    def has_attribute(self, name: str) -> bool:
        if self.attrs is None:
            return name not in ("class", "id")
        return name in self.attrs

    def has_id(self, value: str) -> bool:
        # Compared without case: a document in quirks mode matches ids and classes so.
        return self.attrs is not None and (self.attrs.get("id") or "").lower() == value

    def has_class(self, value: str) -> bool:
        if self.attrs is None:
            return False
        return value in (self.attrs.get("class") or "").lower().split()


def _target(label: str, element: LexborNode | None) -> _Target:
    attrs = {} if element is None else {
        name.lower(): value or "" for name, value in element.attrs.items()
    }
    return _Target(label, label.strip("<>"), attrs, root=label == "<html>")


_FOOTER = _Target("the footer", None)


class _StyleCheck:
    """Every declaration of the page's stylesheets and of the inline styles of `<html>`,
    `<head>` and `<body>` that may apply to those elements, and the boxes a stylesheet may
    generate around or in the footer; `problems` says which of them keep the footer from
    being seen."""

    def __init__(self, elements: dict[str, LexborNode | None], sheets: list[str]) -> None:
        self.html = _target("<html>", elements["html"])
        self.head = _target("<head>", elements["head"])
        self.body = _target("<body>", elements["body"])
        self.family = _Family(self.html, self.head, self.body)
        self.found: dict[str, list[tuple[str, _Declaration]]] = {"<html>": [], "<body>": []}
        self.keyframes: list[tuple[str, _Declaration]] = []
        self.out: list[str] = []
        for label in ("html", "head", "body"):
            element = elements[label]
            if element is None or not element.attrs.get("style"):
                continue
            try:
                declarations = _style_declarations(element.attrs.get("style") or "")
            except _Unreadable as exc:
                self.out.append(f"<{label} style> {exc}, which the gateway cannot check")
                continue
            for declaration in declarations:
                self._record(f"<{label} style>", getattr(self, label), declaration)
        for sheet in sheets:
            try:
                self._walk(_stylesheet(sheet), None)
            except _Unreadable as exc:
                self.out.append(f"a stylesheet {exc}, which the gateway cannot check")

    def problems(self) -> list[str]:
        for target in (self.html, self.body):
            animated = [d for _, d in self.found[target.label]
                        if _unprefixed(d.name) in ("animation", "animation-name")
                        and _keyword(d.value) not in ("none", *_CSS_WIDE)]
            if animated:
                for name, declaration in self.keyframes:
                    self.found[target.label].append(
                        (f"@keyframes {name}, which may animate {target.label},", declaration)
                    )
        root_em = _font_sizes(self.found["<html>"], (16.0, 16.0), (16.0, 16.0))
        ems = {"<html>": root_em,
               "<body>": None if root_em is None
               else _font_sizes(self.found["<body>"], root_em, root_em)}
        for target in (self.html, self.body):
            em = ems[target.label]
            for source, declaration in self.found[target.label]:
                why = next(filter(None, (
                    _ancestor_problem(_in_pixels(declaration, end, root_em, em))
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
                name = _unprefixed(declaration.name)
                if name == "all" and _keyword(declaration.value) == "inherit":
                    value: float | None = lowest["<html>"] if target is self.body else 1.0
                elif name != "opacity":
                    continue
                elif _keyword(declaration.value) == "inherit":
                    value = lowest["<html>"] if target is self.body else 1.0
                else:
                    value = _fraction(declaration.value)
                if value is None:
                    problems.append(f"{source} sets {_shown(declaration)}, which {_UNSURE}")
                    continue
                if value < 0.5:
                    problems.append(f"{source} sets {_shown(declaration)}, which {_HIDES}")
                lowest[target.label] = min(lowest[target.label], value)
        together = lowest["<html>"] * lowest["<body>"]
        if together < 0.5 and not problems:
            problems.append(f"<html> and <body> together fade the footer to opacity "
                            f"{together:.2f}, which {_HIDES}")
        return problems

    def _record(self, source: str, target: _Target, declaration: _Declaration) -> None:
        if target is self.head:
            name = _unprefixed(declaration.name)
            if name == "display" and _keyword(declaration.value) not in (
                "none", "revert", "revert-layer"
            ):
                self.out.append(f"{source} sets {_shown(declaration)} on <head>, outside "
                                "<body>, where it can cover the footer")
            return
        self.found[target.label].append((source, declaration))

    def _walk(self, rules: list[_Rule], context: _Context | None) -> None:
        for rule in rules:
            if rule.kind == "declarations":
                if context is not None:
                    self._apply(context, rule.declarations)
            elif rule.kind == "style":
                inner = _Context(_selector_list(rule.prelude), context)
                self._apply(inner, rule.declarations)
                self._walk(rule.children, inner)
            elif rule.name == "import":
                self.out.append("an imported stylesheet (@import) could hide the footer and "
                                "cannot be checked")
            elif rule.name.endswith("keyframes"):
                name = _text(rule.prelude).strip()
                for frame in rule.children:
                    self.keyframes += [(name, d) for d in frame.declarations]
            elif rule.name in _DESCRIPTOR_AT_RULES:
                continue
            elif rule.name == "scope":  # :scope (and & in it) is not worked out: anything
                scope = _Context([_Selector("@scope", [_Compound()], [])], context)
                self._apply(scope, rule.declarations)
                self._walk(rule.children, scope)
            else:  # @media, @supports, @layer, @container, @starting-style, any other
                if context is not None:
                    self._apply(context, rule.declarations)
                self._walk(rule.children, context)

    def _apply(self, context: _Context, declarations: list[_Declaration]) -> None:
        if not declarations:
            return
        parent = _matcher(context.parent, self.family)
        for selector in context.selectors:
            if selector.subject.pseudo_elements:
                self._generated(selector, declarations, parent)
                continue
            source = f"a stylesheet rule for {selector.text}"
            for target in (self.html, self.head, self.body):
                if _selects(selector, target, parent, self.family):
                    for declaration in declarations:
                        self._record(source, target, declaration)

    def _generated(
        self, selector: _Selector, declarations: list[_Declaration], parent: _Matcher
    ) -> None:
        """A rule for a pseudo-element: a box of its own beside or in the footer, or part of
        the footer's text styled apart from it, neither of which an inline style reaches."""
        names = selector.subject.pseudo_elements
        if all(_harmless_pseudo_element(name) for name in names):
            return
        if names[0] in ("before", "after"):
            found = [d for d in declarations if _unprefixed(d.name) == "content"
                     and _keyword(d.value) not in ("none", "normal", "initial", "unset",
                                                   "revert", "revert-layer")]
        else:
            found = declarations
        if not found:
            return
        for target in (self.html, self.body, _FOOTER):
            if _selects(selector, target, parent, self.family):
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


def _shown(declaration: _Declaration) -> str:
    return f"{declaration.name}: {_text(declaration.value).strip().lower()}"


# --- the values that hide the footer when <html> or <body> has them ----------------------

_CSS_WIDE = ("inherit", "initial", "unset", "revert", "revert-layer")
# Room beside the footer: at most this much margin, border or padding on either side of
# <html> and <body>, in pixels or in percent of the window (a phone's is 320 px wide).
_SIDE_PX = 64
_SIDE_PERCENT = 10
# What a footer needs: at least this wide and high, and no wider than a desktop window.
_LEAST_PX = 200
_LEAST_PERCENT = 50
_MOST_PX = 1000
_ABSOLUTE_UNITS = {"px": 1.0, "pt": 96 / 72, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
                   "mm": 96 / 25.4, "q": 96 / 101.6}
_VIEWPORT_UNITS = frozenset({
    "vw", "vh", "vi", "vb", "vmin", "vmax", "svw", "svh", "svi", "svb", "svmin", "svmax",
    "lvw", "lvh", "lvi", "lvb", "lvmin", "lvmax", "dvw", "dvh", "dvi", "dvb", "dvmin",
    "dvmax", "cqw", "cqh", "cqi", "cqb", "cqmin", "cqmax",
})
_COLOUR_FUNCTIONS = frozenset({
    "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color", "color-mix",
    "light-dark", "contrast-color", "device-cmyk",
})
_DECORATION_LINES = frozenset({"underline", "overline", "line-through", "blink",
                               "spelling-error", "grammar-error"})


@dataclass(frozen=True)
class _Length:
    """A length as the page wrote it: in pixels, in percent (of the window or of the
    containing block, which for <html> and <body> is the window), or neither (relative to a
    font size the page itself sets)."""

    value: float
    px: float | None = None
    percent: float | None = None


def _length(item: _Item) -> _Length | None:
    if not isinstance(item, _Token):
        return None
    if item.kind == "number":  # 0, or a unitless length: pixels in quirks mode
        return _Length(item.number, px=item.number)
    if item.kind == "percentage":
        return _Length(item.number, percent=item.number)
    if item.kind == "dimension":
        if item.unit in _ABSOLUTE_UNITS:
            return _Length(item.number, px=item.number * _ABSOLUTE_UNITS[item.unit])
        if item.unit in _VIEWPORT_UNITS:
            return _Length(item.number, percent=item.number)
        return _Length(item.number)
    return None


def _keyword(value: list[_Item]) -> str | None:
    """The value's keyword when it is one keyword (the keywords joined when it is only
    keywords), else None."""
    items = _significant(value)
    if items and all(isinstance(i, _Token) and i.kind == "ident" for i in items):
        return " ".join(i.value.lower() for i in items if isinstance(i, _Token))
    return None


def _fraction(value: list[_Item]) -> float | None:
    """An opacity or zoom: a number or a percentage, or 1 for the CSS-wide keywords."""
    items = _significant(value)
    if len(items) != 1 or not isinstance(items[0], _Token):
        return None
    item = items[0]
    if item.kind == "ident" and item.value.lower() in (*_CSS_WIDE, "normal", "reset"):
        return 1.0
    if item.kind == "number":
        return item.number
    if item.kind == "percentage":
        return item.number / 100
    return None


def _only(*safe: str, why: str = _HIDES) -> Callable[[list[_Item]], str | None]:
    """A property whose only values that keep the footer seen are `safe` keywords."""
    def check(values: list[_Item]) -> str | None:
        keyword = _keyword(values)
        if keyword is None:
            return _UNSURE
        return None if keyword in safe or keyword in _CSS_WIDE else why
    return check


def _none(why: str) -> Callable[[list[_Item]], str | None]:
    """A property every value of which but `none` does what `why` says."""
    def check(values: list[_Item]) -> str | None:
        return None if _keyword(values) == "none" else why
    return check


def _one_keyword(values: list[_Item]) -> str | None:
    keyword = _keyword(values)
    return keyword if keyword is not None and " " not in keyword else None


def _beside(item: _Item) -> str | None:
    """A margin, border or padding to the left or right of the footer."""
    if isinstance(item, _Token) and item.kind == "ident":
        return None  # auto, thin, medium, thick, a CSS-wide keyword
    length = _length(item)
    if length is None:
        return _UNSURE
    if length.value == 0:
        return None
    if length.value < 0:
        return _MOVES
    if length.px is not None:
        return None if length.px <= _SIDE_PX else _MOVES
    if length.percent is not None:
        return None if length.percent <= _SIDE_PERCENT else _MOVES
    return _UNSURE


def _no_shift(item: _Item) -> str | None:
    """A left or right offset: anything but none moves the footer's lines off an edge."""
    if isinstance(item, _Token) and item.kind == "ident":
        return None
    length = _length(item)
    if length is None:
        return _UNSURE
    return None if length.value == 0 else _MOVES


def _not_up(item: _Item, sign: float = 1.0) -> str | None:
    """A top offset or margin (`sign` -1: a bottom offset): up is above the page, where no
    reader scrolls."""
    if isinstance(item, _Token) and item.kind == "ident":
        return None
    length = _length(item)
    if length is None:
        return _UNSURE
    return "moves the footer above the top of the page" if length.value * sign < 0 else None


def _size(least: bool, most: bool, keywords: frozenset[str]) -> Callable[[_Item], str | None]:
    """A width or height of <html> or <body>: at least `_LEAST_*` (`least`), at most the
    window (`most`)."""
    def check(item: _Item) -> str | None:
        if isinstance(item, _Token) and item.kind == "ident":
            keyword = item.value.lower()
            return None if keyword in keywords or keyword in _CSS_WIDE else _UNSURE
        length = _length(item)
        if length is None:
            return _UNSURE
        px, percent = length.px, length.percent
        if length.value == 0:
            px, percent = 0.0, None
        elif px is None and percent is None:
            return _UNSURE
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


def _each(check: Callable[[_Item], str | None], count: int = 1
          ) -> Callable[[list[_Item]], str | None]:
    """`check` on each of up to `count` values."""
    def run(values: list[_Item]) -> str | None:
        items = _significant(values)
        if not 1 <= len(items) <= count:
            return _UNSURE
        return next((why for why in map(check, items) if why), None)
    return run


def _box(top: Callable[[_Item], str | None] | None,
         right: Callable[[_Item], str | None] | None,
         bottom: Callable[[_Item], str | None] | None,
         left: Callable[[_Item], str | None] | None) -> Callable[[list[_Item]], str | None]:
    """A shorthand of one to four sides (top, right, bottom, left), each side's check."""
    def run(values: list[_Item]) -> str | None:
        items = _significant(values)
        if _one_keyword(values) in _CSS_WIDE:
            return None
        if not 1 <= len(items) <= 4:
            return _UNSURE
        t = items[0]
        r = items[1] if len(items) > 1 else t
        b = items[2] if len(items) > 2 else t
        l_ = items[3] if len(items) > 3 else r
        for check, item in ((top, t), (right, r), (bottom, b), (left, l_)):
            why = check(item) if check else None
            if why:
                return why
        return None
    return run


def _pair(start: Callable[[_Item], str | None] | None,
          end: Callable[[_Item], str | None] | None) -> Callable[[list[_Item]], str | None]:
    """A logical shorthand of one or two values (start, end)."""
    def run(values: list[_Item]) -> str | None:
        items = _significant(values)
        if not 1 <= len(items) <= 2:
            return _UNSURE
        for check, item in ((start, items[0]), (end, items[-1])):
            why = check(item) if check else None
            if why:
                return why
        return None
    return run


def _border_beside(values: list[_Item]) -> str | None:
    """A border shorthand on the left or right: its width."""
    for item in _significant(values):
        if isinstance(item, _Block) and item.kind == "function":
            if item.name not in _COLOUR_FUNCTIONS:
                return _UNSURE
        elif isinstance(item, _Token) and item.kind in ("number", "dimension", "percentage"):
            why = _beside(item)
            if why:
                return why
    return None


def _display(values: list[_Item]) -> str | None:
    keyword = _keyword(values)
    if keyword is None:
        return _UNSURE
    if keyword == "none":
        return _HIDES
    if keyword in ("block", "flow", "flow-root", "block flow", "flow block",
                   "block flow-root", "flow-root block") or keyword in _CSS_WIDE:
        return None
    return "lays <body> out so that the footer can be put beside or out of the page"


def _contain(values: list[_Item]) -> str | None:
    keyword = _keyword(values)
    if keyword is None:
        return _UNSURE
    return _HIDES if set(keyword.split()) & {"paint", "strict", "content"} else None


def _overflow(values: list[_Item]) -> str | None:
    """Hidden or clipped downwards, the page cannot be scrolled to what is below the fold."""
    keyword = _keyword(values)
    if keyword is None:
        return _UNSURE
    words = keyword.split()
    if len(words) > 2:
        return _UNSURE
    return "stops the reader scrolling to the footer" if words[-1] in ("hidden", "clip") \
        else None


def _position(values: list[_Item]) -> str | None:
    keyword = _keyword(values)
    if keyword is None:
        return _UNSURE
    return _HIDES if keyword in ("absolute", "fixed") else None


def _zoom(values: list[_Item]) -> str | None:
    value = _fraction(values)
    if value is None:
        return _UNSURE
    return "shrinks the footer" if value < 1 else None


def _decoration(values: list[_Item]) -> str | None:
    """Decorations drawn on <html> or <body> go through every line in them, the footer's
    too, whatever the footer says."""
    for item in _significant(values):
        if isinstance(item, _Block) and item.kind == "function":
            if item.name not in _COLOUR_FUNCTIONS:
                return _UNSURE
        elif isinstance(item, _Token) and item.kind == "ident" \
                and item.value.lower() in _DECORATION_LINES:
            return "draws lines through or under the footer's text, which can hide it"
    return None


_TRANSFORMS = "can move, shrink or turn the footer out of sight"
_CLIPS = "can clip or mask the footer away"
_HORIZONTAL = _each(_beside)
_ANCESTOR_CHECKS: dict[str, Callable[[list[_Item]], str | None]] = {
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
    "columns": _only("auto", why=_MOVES),
    "column-count": _only("auto", why=_MOVES),
    "column-width": _only("auto", why=_MOVES),
    "writing-mode": _only("horizontal-tb", "lr", "lr-tb", "rl", "rl-tb", why=_MOVES),
    "text-decoration": _decoration,
    "text-decoration-line": _decoration,
    "line-clamp": _only("none", why=_HIDES),
    "max-lines": _only("none", why=_HIDES),
    "continue": _only("auto", why=_HIDES),
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
    "bottom": _each(lambda item: _not_up(item, -1.0)),
    "inset-block-end": _each(lambda item: _not_up(item, -1.0)),
    "inset-block": _pair(_not_up, lambda item: _not_up(item, -1.0)),
    "inset": _box(_not_up, _no_shift, lambda item: _not_up(item, -1.0), _no_shift),
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


_FONT_RELATIVE = frozenset({"em", "ex", "ch", "cap", "ic"})
_ROOT_FONT_RELATIVE = frozenset({"rem", "rex", "rch", "rcap", "ric"})
_FONT_SIZE_KEYWORDS = {"xx-small": 9.0, "x-small": 10.0, "small": 13.0, "medium": 16.0,
                       "large": 18.0, "x-large": 24.0, "xx-large": 32.0, "xxx-large": 48.0}


def _font_sizes(found: list[tuple[str, _Declaration]], parent: tuple[float, float],
                root: tuple[float, float]) -> tuple[float, float] | None:
    """The smallest and the largest font size these declarations can give the element
    (`parent`: its parent's, `root`: <html>'s), in pixels: any of them may apply, or none;
    None when one of them cannot be worked out. An em (an ex, ch, cap or ic is no larger)
    lies between the two."""
    sizes = list(parent)
    for _, declaration in found:
        name = _unprefixed(declaration.name)
        if name == "font-size":
            items = _significant(declaration.value)
        elif name == "font":  # the size comes before any "/line-height"
            items = []
            for item in _significant(declaration.value):
                if _is_delim(item, "/"):
                    break
                if isinstance(item, _Token) and item.kind in ("dimension", "percentage",
                                                               "number"):
                    items = [item]
            if not items:
                continue
        else:
            continue
        if len(items) != 1 or not isinstance(items[0], _Token):
            return None
        item = items[0]
        for end in (0, 1):
            if item.kind == "ident":
                keyword = item.value.lower()
                size = _FONT_SIZE_KEYWORDS.get(keyword, parent[end]) * (
                    1.2 if keyword == "larger" else 1 / 1.2 if keyword == "smaller" else 1)
            elif item.kind == "percentage":
                size = parent[end] * item.number / 100
            elif item.kind == "dimension" and item.unit in _ABSOLUTE_UNITS:
                size = item.number * _ABSOLUTE_UNITS[item.unit]
            elif item.kind == "dimension" and item.unit in _FONT_RELATIVE:
                size = parent[end] * item.number
            elif item.kind == "dimension" and item.unit in _ROOT_FONT_RELATIVE:
                size = root[end] * item.number
            elif item.kind == "number" and item.number == 0:
                size = 0.0
            else:
                return None
            sizes.append(size)
    return min(sizes), max(sizes)


def _in_pixels(declaration: _Declaration, end: int, root_em: tuple[float, float] | None,
               em: tuple[float, float] | None) -> _Declaration:
    """The declaration with its font-relative lengths in pixels, at the smallest (`end` 0)
    or the largest (1) font size they may multiply (left as they are when that cannot be
    worked out)."""
    def convert(item: _Item) -> _Item:
        if isinstance(item, _Token) and item.kind == "dimension":
            size = em if item.unit in _FONT_RELATIVE else (
                root_em if item.unit in _ROOT_FONT_RELATIVE else None)
            if size is not None:
                return _Token("dimension", number=item.number * size[end], unit="px",
                              text=item.text)
        return item
    return _Declaration(declaration.name, [convert(i) for i in declaration.value],
                        declaration.important)


def _ancestor_problem(declaration: _Declaration) -> str | None:
    """Why this declaration on `<html>` or `<body>` would keep the footer from being seen
    (opacity is judged with both elements' together, elsewhere); None if it would not.
    Properties that are inherited (colour, font, spacing, direction, ...) are not here: the
    footer sets each of its own."""
    check = _ANCESTOR_CHECKS.get(_unprefixed(declaration.name))
    if check is None:
        return None
    if _one_keyword(declaration.value) in _CSS_WIDE:
        return None
    return check(declaration.value)


def _unprefixed(name: str) -> str:
    for prefix in ("-webkit-", "-moz-", "-ms-", "-o-"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


# --- selectors -------------------------------------------------------------------------

@dataclass
class _Compound:
    """The simple selectors of a compound selector that decide what it matches:
    ("type", tag), ("id", v), ("class", v), ("attribute", name), ("is", selectors),
    ("root",), ("nesting",); others (pseudo-classes of state or structure, :not(), :has())
    are taken to match. And the pseudo-elements it selects, if any."""

    simple: list[tuple] = field(default_factory=list)
    pseudo_elements: list[str] = field(default_factory=list)


@dataclass
class _Selector:
    """A complex selector: its compounds, and the combinator (" ", ">", "+", "~", "||")
    between each and the next; the last compound is its subject."""

    text: str
    compounds: list[_Compound]
    combinators: list[str]

    @property
    def subject(self) -> _Compound:
        return self.compounds[-1]


@dataclass
class _Context:
    """The selectors of a style rule, for the rules nested in it (`&`)."""

    selectors: list[_Selector]
    parent: _Context | None


@dataclass(frozen=True)
class _Family:
    """<html>, <head> and <body>: where each stands is known (<html> has no parent and no
    sibling, <head> and <body> are its children in that order), so a selector's compounds
    before its subject are matched too."""

    html: _Target
    head: _Target
    body: _Target

    def standing(self, target: _Target, combinator: str) -> _Target | None:
        """The element that may stand `combinator` before `target` (its parent or an
        ancestor for " " and ">", an earlier sibling for "+" and "~")."""
        if target is self.body:
            return self.html if combinator in (" ", ">") else self.head
        if target is self.head:
            return self.html if combinator in (" ", ">") else None
        return None


_Matcher = Callable[[_Target], bool]
_LEGACY_PSEUDO_ELEMENTS = frozenset({"before", "after", "first-line", "first-letter"})
_MATCHES_ANY_OF = frozenset({"is", "where", "matches", "any", "-webkit-any", "-moz-any"})


def _matcher(context: _Context | None, family: _Family) -> _Matcher:
    """Whether an element may be one that `&` stands for in rules nested in `context`; at
    the top level (where `&` is :scope), any. Each answer is worked out once: rules nested
    in rules of several selectors each would otherwise take exponential time."""
    if context is None:
        return lambda target: True
    parent = _matcher(context.parent, family)
    known: dict[str, bool] = {}

    def matches(target: _Target) -> bool:
        if target.label not in known:
            known[target.label] = any(
                _selects(selector, target, parent, family) for selector in context.selectors
            )
        return known[target.label]

    return matches


def _selects(selector: _Selector, target: _Target, parent: _Matcher, family: _Family) -> bool:
    """Whether `selector` may select `target` (a pseudo-element's originating element, for
    a selector of a pseudo-element). An element of the footer may stand anywhere in the
    body, so only its own compound is matched."""
    if not _may_match(selector.subject, target, parent, family):
        return False
    if target.attrs is None:
        return True
    element = target
    for compound, combinator in zip(
        reversed(selector.compounds[:-1]), reversed(selector.combinators), strict=True
    ):
        if combinator == "||":
            return True
        before = family.standing(element, combinator)
        if before is None or not _may_match(compound, before, parent, family):
            return False
        element = before
    return True


def _may_match(compound: _Compound, target: _Target, parent: _Matcher, family: _Family) -> bool:
    for simple in compound.simple:
        kind = simple[0]
        if kind == "type" and target.tag is not None and simple[1] not in ("*", target.tag):
            return False
        if kind == "nesting" and not parent(target):
            return False
        if kind == "id" and not target.has_id(simple[1]):
            return False
        if kind == "class" and not target.has_class(simple[1]):
            return False
        if kind == "attribute" and not target.has_attribute(simple[1]):
            return False
        if kind == "root" and not target.root:
            return False
        if kind == "is" and simple[1] and not any(
            _selects(selector, target, parent, family) for selector in simple[1]
        ):
            return False
    return True


def _selector_list(items: list[_Item]) -> list[_Selector]:
    selectors = []
    for part in _split_commas(items):
        text = _text(part).strip()
        if text:
            compounds, combinators = _complex(part)
            selectors.append(_Selector(re.sub(r"\s+", " ", text), compounds, combinators))
    return selectors


def _split_commas(items: list[_Item]) -> Iterator[list[_Item]]:
    part: list[_Item] = []
    for item in items:
        if isinstance(item, _Token) and item.kind == ",":
            yield part
            part = []
        else:
            part.append(item)
    yield part


def _complex(items: list[_Item]) -> tuple[list[_Compound], list[str]]:
    """A complex selector's compounds and the combinators between them. A combinator at
    the start (a relative selector, nested) or at the end is dropped."""
    items = _significant_ends(items)
    compounds = [_Compound()]
    combinators: list[str] = []
    pending = ""  # a combinator read since the last compound
    after_pseudo_element = False
    i = 0
    while i < len(items):
        item = items[i]
        following = items[i + 1] if i + 1 < len(items) else None
        combinator = ""
        if isinstance(item, _Token) and item.kind == "whitespace":
            combinator, taken = " ", 1
        elif _is_delim(item, ">") or _is_delim(item, "+") or _is_delim(item, "~"):
            combinator, taken = item.value, 1
        elif _is_delim(item, "|") and _is_delim(following, "|"):
            combinator, taken = "||", 2
        if combinator:
            if pending in ("", " "):
                pending = combinator
            i += taken
            continue
        if pending:
            if compounds[-1].simple or compounds[-1].pseudo_elements:
                compounds.append(_Compound())
                combinators.append(pending)
            pending = ""
            after_pseudo_element = False
        compound = compounds[-1]
        if isinstance(item, _Token) and item.kind == ":":
            if isinstance(following, _Token) and following.kind == ":":
                name_item = items[i + 2] if i + 2 < len(items) else None
                compound.pseudo_elements.append(_name_of(name_item))
                after_pseudo_element = True
                i += 3
                continue
            name = _name_of(following)
            if name in _LEGACY_PSEUDO_ELEMENTS:
                compound.pseudo_elements.append(name)
                after_pseudo_element = True
            elif not after_pseudo_element:
                if name == "root":
                    compound.simple.append(("root",))
                elif name in _MATCHES_ANY_OF and isinstance(following, _Block):
                    compound.simple.append(("is", _selector_list(following.items)))
            i += 2
            continue
        simple, taken = _simple(item, following)
        if not after_pseudo_element:
            compound.simple += simple
        i += taken
    return compounds, combinators


def _is_delim(item: _Item | None, value: str) -> bool:
    return isinstance(item, _Token) and item.kind == "delim" and item.value == value


def _name_of(item: _Item | None) -> str:
    if isinstance(item, _Token) and item.kind == "ident":
        return item.value.lower()
    if isinstance(item, _Block) and item.kind == "function":
        return item.name
    return ""


def _simple(item: _Item, following: _Item | None) -> tuple[list[tuple], int]:
    """The simple selector that starts at `item`, and how many items it takes."""
    if isinstance(item, _Token):
        if (item.kind == "ident" or _is_delim(item, "*")) and _is_delim(following, "|"):
            return [], 2  # a namespace prefix: the name follows the bar
        if item.kind == "ident":
            return [("type", item.value.lower())], 1
        if item.kind == "hash":
            return [("id", item.value.lower())], 1
        if _is_delim(item, "&"):
            return [("nesting",)], 1
        if _is_delim(item, "|") and isinstance(following, _Token) and following.kind == "ident":
            return [("type", following.value.lower())], 2
        if _is_delim(item, ".") and isinstance(following, _Token) and following.kind == "ident":
            return [("class", following.value.lower())], 2
        return [], 1
    if isinstance(item, _Block) and item.kind == "[":
        inside = _significant(item.items)
        if len(inside) >= 3 and _is_delim(inside[1], "|") and not _is_delim(inside[2], "="):
            inside = inside[2:]  # ns|attribute, *|attribute
        elif len(inside) >= 2 and _is_delim(inside[0], "|"):
            inside = inside[1:]  # |attribute
        if inside and isinstance(inside[0], _Token) and inside[0].kind == "ident":
            return [("attribute", inside[0].value.lower())], 1
    return [], 1


# --- CSS syntax (CSS Syntax Module Level 3) ----------------------------------------------

class _Unreadable(ValueError):
    """CSS nested deeper than the gateway follows."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, function, at-keyword, hash, string, url, bad, number, percentage,
    #            dimension, delim, whitespace, CDO, CDC, or the character of ( ) [ ] { } ; : ,
    value: str = ""  # the name, string or character, escapes resolved
    number: float = 0.0
    unit: str = ""  # lowercased
    text: str = ""  # as written


@dataclass(slots=True)
class _Block:
    kind: str  # "{", "[", "(" or "function"
    name: str  # a function's name, lowercased
    items: list[_Item]


_Item = _Token | _Block


@dataclass(slots=True)
class _Declaration:
    name: str  # lowercased, escapes resolved
    value: list[_Item]
    important: bool


@dataclass(slots=True)
class _Rule:
    kind: str  # "style", "at", or "declarations" (those after a rule nested in a block)
    name: str = ""  # an at-rule's name, lowercased
    prelude: list[_Item] = field(default_factory=list)
    declarations: list[_Declaration] = field(default_factory=list)
    children: list[_Rule] = field(default_factory=list)


_CLOSING = {"{": "}", "[": "]", "(": ")", "function": ")"}
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NEWLINES = re.compile(r"\r\n|[\r\f]")
_WHITESPACE = " \t\n"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_DEPTH = 64


def _name_start(c: str) -> bool:
    return c != "" and ((c.isascii() and (c.isalpha() or c == "_")) or not c.isascii())


def _name_char(c: str) -> bool:
    return _name_start(c) or (c != "" and (c in "0123456789-"))


def _nonprintable(c: str) -> bool:
    return c != "" and (ord(c) <= 8 or ord(c) == 11 or 14 <= ord(c) <= 31 or ord(c) == 127)


def _tokens(css: str) -> list[_Token]:
    s = _NEWLINES.sub("\n", css).replace("\x00", "\ufffd")
    n = len(s)
    out: list[_Token] = []

    def at(j: int) -> str:
        return s[j] if j < n else ""

    def valid_escape(j: int) -> bool:
        return at(j) == "\\" and at(j + 1) != "\n"

    def starts_ident(j: int) -> bool:
        c = at(j)
        if c == "-":
            return _name_start(at(j + 1)) or at(j + 1) == "-" or valid_escape(j + 1)
        if c == "\\":
            return valid_escape(j)
        return _name_start(c)

    def starts_number(j: int) -> bool:
        c = at(j)
        if c != "" and c in "+-":
            return (at(j + 1).isascii() and at(j + 1).isdigit()) or (
                at(j + 1) == "." and at(j + 2).isascii() and at(j + 2).isdigit())
        if c == ".":
            return at(j + 1).isascii() and at(j + 1).isdigit()
        return c.isascii() and c.isdigit()

    def escape(j: int) -> tuple[str, int]:  # j: just after the backslash
        c = at(j)
        if c == "":
            return "\ufffd", j
        if c in _HEX_DIGITS:
            k = j
            while k < n and k - j < 6 and s[k] in _HEX_DIGITS:
                k += 1
            code = int(s[j:k], 16)
            if at(k) != "" and at(k) in _WHITESPACE:
                k += 1
            if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                return "\ufffd", k
            return chr(code), k
        return c, j + 1

    def name(j: int) -> tuple[str, int]:
        chars = []
        while True:
            c = at(j)
            if _name_char(c):
                chars.append(c)
                j += 1
            elif valid_escape(j):
                c, j = escape(j + 1)
                chars.append(c)
            else:
                return "".join(chars), j

    def url(j: int) -> tuple[str, int]:  # j: after "url(" and its whitespace
        chars: list[str] = []
        while True:
            c = at(j)
            if c == "":
                return "url", j
            if c == ")":
                return "url", j + 1
            if c in _WHITESPACE:
                while at(j) != "" and at(j) in _WHITESPACE:
                    j += 1
                if at(j) in (")", ""):
                    return "url", j + (at(j) == ")")
                break
            if c in "\"'(" or _nonprintable(c):
                break
            if c == "\\":
                if not valid_escape(j):
                    break
                c, j = escape(j + 1)
                chars.append(c)
                continue
            chars.append(c)
            j += 1
        while True:  # the remnants of a bad url
            c = at(j)
            if c == "":
                return "bad", j
            if c == ")":
                return "bad", j + 1
            if valid_escape(j):
                _, j = escape(j + 1)
            else:
                j += 1

    i = 0
    while i < n:
        c = s[i]
        start = i
        if c == "/" and at(i + 1) == "*":
            end = s.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if c in _WHITESPACE:
            while at(i) != "" and at(i) in _WHITESPACE:
                i += 1
            out.append(_Token("whitespace", text=" "))
            continue
        if c in "\"'":
            i += 1
            chars = []
            kind = "string"
            while True:
                d = at(i)
                if d == "" or d == c:
                    i += d == c
                    break
                if d == "\n":  # a bad string: it ends before the line does
                    kind = "bad"
                    break
                if d == "\\":
                    if at(i + 1) == "":
                        i += 1
                    elif at(i + 1) == "\n":
                        i += 2
                    else:
                        d, i = escape(i + 1)
                        chars.append(d)
                    continue
                chars.append(d)
                i += 1
            out.append(_Token(kind, "".join(chars), text=s[start:i]))
            continue
        if (c.isascii() and c.isdigit()) or (c in "+-." and starts_number(i)):
            number = _NUMBER.match(s, i)
            assert number is not None
            i = number.end()
            value = float(number.group())
            if starts_ident(i):
                unit, i = name(i)
                out.append(_Token("dimension", number=value, unit=unit.lower(), text=s[start:i]))
            elif at(i) == "%":
                i += 1
                out.append(_Token("percentage", number=value, text=s[start:i]))
            else:
                out.append(_Token("number", number=value, text=s[start:i]))
            continue
        if c == "-" and s.startswith("->", i + 1):
            i += 3
            out.append(_Token("CDC", text="-->"))
            continue
        if c == "<" and s.startswith("!--", i + 1):
            i += 4
            out.append(_Token("CDO", text="<!--"))
            continue
        if c == "#" and (_name_char(at(i + 1)) or valid_escape(i + 1)):
            value, i = name(i + 1)
            out.append(_Token("hash", value, text=s[start:i]))
            continue
        if c == "@" and starts_ident(i + 1):
            value, i = name(i + 1)
            out.append(_Token("at-keyword", value, text=s[start:i]))
            continue
        if starts_ident(i):
            value, i = name(i)
            if at(i) == "(":
                i += 1
                if value.lower() == "url":
                    j = i
                    while at(j) != "" and at(j) in _WHITESPACE:
                        j += 1
                    if at(j) not in ("\"", "'"):
                        kind, i = url(j)
                        out.append(_Token(kind, text=s[start:i]))
                        continue
                out.append(_Token("function", value, text=s[start:i]))
            else:
                out.append(_Token("ident", value, text=s[start:i]))
            continue
        i += 1
        kind = c if c in "()[]{};:," else "delim"
        out.append(_Token(kind, c, text=c))
    return out


class _Parser:
    """CSS Syntax Level 3's parsing algorithms, over a list of tokens."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def stylesheet(self) -> list[_Rule]:
        rules = []
        while (token := self.peek()) is not None:
            if token.kind in ("whitespace", "CDO", "CDC"):  # ignored between rules only
                self.i += 1
            elif token.kind == "at-keyword":
                rules.append(self.at_rule(nested=False))
            elif (rule := self.qualified_rule(nested=False, stop=None)) is not None:
                rules.append(rule)
        return rules

    def at_rule(self, nested: bool) -> _Rule:
        token = self.tokens[self.i]
        self.i += 1
        rule = _Rule("at", token.value.lower())
        while (token := self.peek()) is not None:
            if token.kind == ";":
                self.i += 1
                return rule
            if token.kind == "}":
                if nested:
                    return rule
                self.i += 1
                rule.prelude.append(token)
            elif token.kind == "{":
                rule.declarations, rule.children = self.block()
                return rule
            else:
                rule.prelude.append(self.component())
        return rule

    def qualified_rule(self, nested: bool, stop: str | None) -> _Rule | None:
        prelude: list[_Item] = []
        while (token := self.peek()) is not None:
            if token.kind == stop:
                return None
            if token.kind == "}":
                if nested:
                    return None
                self.i += 1
                prelude.append(token)
            elif token.kind == "{":
                significant = _significant(prelude)
                custom = (len(significant) >= 2 and isinstance(significant[0], _Token)
                          and significant[0].kind == "ident"
                          and significant[0].value.startswith("--")
                          and isinstance(significant[1], _Token) and significant[1].kind == ":")
                if custom and nested:
                    self.bad_declaration(nested)
                    return None
                declarations, children = self.block()
                if custom:
                    return None
                return _Rule("style", prelude=prelude, declarations=declarations,
                             children=children)
            else:
                prelude.append(self.component())
        return None

    def block(self) -> tuple[list[_Declaration], list[_Rule]]:
        """A {} block of a rule: its first declarations, and what follows them."""
        self.i += 1
        self.enter()
        items = self.block_contents()
        self.depth -= 1
        if (token := self.peek()) is not None and token.kind == "}":
            self.i += 1
        declarations: list[_Declaration] = []
        children: list[_Rule] = []
        for n, item in enumerate(items):
            if isinstance(item, list):
                if n == 0:
                    declarations = item
                else:
                    children.append(_Rule("declarations", declarations=item))
            else:
                children.append(item)
        return declarations, children

    def block_contents(self) -> list[_Rule | list[_Declaration]]:
        items: list[_Rule | list[_Declaration]] = []
        declarations: list[_Declaration] = []
        while (token := self.peek()) is not None and token.kind != "}":
            if token.kind in ("whitespace", ";"):
                self.i += 1
                continue
            if token.kind == "at-keyword":
                if declarations:
                    items.append(declarations)
                    declarations = []
                items.append(self.at_rule(nested=True))
                continue
            mark = self.i
            declaration = self.declaration()
            if declaration is not None:
                declarations.append(declaration)
                continue
            self.i = mark
            rule = self.qualified_rule(nested=True, stop=";")
            if rule is not None:
                if declarations or not items:
                    items.append(declarations)
                    declarations = []
                items.append(rule)
        if declarations or not items:
            items.append(declarations)
        return items

    def declaration(self) -> _Declaration | None:
        """A declaration, or None (the caller then reads a rule from the same place): as
        soon as it cannot be one, without reading the rest of it (which, read to its end
        each time, would make a block of many nested rules take quadratic time)."""
        token = self.peek()
        if token is None or token.kind != "ident":
            return None
        self.i += 1
        self.skip_whitespace()
        colon = self.peek()
        if colon is None or colon.kind != ":":
            return None
        self.i += 1
        self.skip_whitespace()
        custom = token.value.startswith("--")
        value: list[_Item] = []
        block = False  # a {} block, allowed only as the whole value of a property
        while (item := self.peek()) is not None and item.kind not in (";", "}"):
            component = self.component()
            value.append(component)
            if custom or (isinstance(component, _Token) and component.kind == "whitespace"):
                continue
            if isinstance(component, _Block) and component.kind == "{":
                if block or _significant(value[:-1]):
                    return None
                block = True
            elif block and not (_is_delim(component, "!") or (
                    component.kind == "ident" and component.value.lower() == "important")):
                return None
        significant = _significant(value)
        important = (len(significant) >= 2 and _is_delim(significant[-2], "!")
                     and isinstance(significant[-1], _Token)
                     and significant[-1].kind == "ident"
                     and significant[-1].value.lower() == "important")
        if important:
            cut = len(value) - 1 - value[::-1].index(significant[-2])
            value = value[:cut]
        while value and isinstance(value[-1], _Token) and value[-1].kind == "whitespace":
            value.pop()
        name = token.value
        return _Declaration(name if custom else name.lower(), value, important)

    def bad_declaration(self, nested: bool) -> None:
        while (token := self.peek()) is not None:
            if token.kind == ";":
                self.i += 1
                return
            if token.kind == "}":
                if nested:
                    return
                self.i += 1
                continue
            self.component()

    def skip_whitespace(self) -> None:
        while (token := self.peek()) is not None and token.kind == "whitespace":
            self.i += 1

    def component(self) -> _Item:
        token = self.tokens[self.i]
        self.i += 1
        if token.kind in ("{", "[", "(", "function"):
            self.enter()
            block = _Block(token.kind, token.value.lower() if token.kind == "function" else "",
                           [])
            closing = _CLOSING[token.kind]
            while (inner := self.peek()) is not None:
                if inner.kind == closing:
                    self.i += 1
                    break
                block.items.append(self.component())
            self.depth -= 1
            return block
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Unreadable(f"nests blocks more than {_MAX_DEPTH} deep")


def _stylesheet(css: str) -> list[_Rule]:
    return _Parser(_tokens(css)).stylesheet()


def _style_declarations(style: str) -> list[_Declaration]:
    """The declarations of a style attribute, and (taken as the element's too) those of any
    rule written inside it or after a stray `}`. Raises `_Unreadable`."""
    parser = _Parser(_tokens(style))
    items: list[_Rule | list[_Declaration]] = []
    while True:
        items += parser.block_contents()
        if parser.peek() is None:
            break
        parser.i += 1  # a stray }
    declarations: list[_Declaration] = []
    rules: list[_Rule] = []
    for item in items:
        if isinstance(item, list):
            declarations += item
        else:
            rules.append(item)
    while rules:
        rule = rules.pop()
        declarations += rule.declarations
        rules += rule.children
    return declarations


def _significant_ends(items: list[_Item]) -> list[_Item]:
    """`items` without the whitespace around them."""
    start, end = 0, len(items)
    while start < end and isinstance(items[start], _Token) and items[start].kind == "whitespace":
        start += 1
    while end > start and isinstance(items[end - 1], _Token) \
            and items[end - 1].kind == "whitespace":
        end -= 1
    return items[start:end]


def _significant(items: list[_Item]) -> list[_Item]:
    return [i for i in items if not (isinstance(i, _Token) and i.kind == "whitespace")]


def _text(items: list[_Item]) -> str:
    parts = []
    for item in items:
        if isinstance(item, _Token):
            parts.append(item.text)
        elif item.kind == "function":
            parts.append(f"{item.name}({_text(item.items)})")
        else:
            parts.append(f"{item.kind}{_text(item.items)}{_CLOSING[item.kind]}")
    return "".join(parts)
