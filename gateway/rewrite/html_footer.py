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

The page's CSS is read as a browser reads it (css_syntax: CSS Syntax Level 3, through
tinycss2), what it does to `<html>` and `<body>` is judged in css_visibility, and its
selectors are matched against those elements as the parser built them (css_selectors): a
rule counts when it may apply (any media query, any pseudo-class state), never only when it
surely does.

A Postmark template shows the footer where its HTML body places the footer's placeholders;
`shown_template_html` is what the same parser leaves a reader of that HTML, so that a
placeholder inside a comment does not count as shown.
"""

from __future__ import annotations

import functools
import re
import secrets

from selectolax.lexbor import LexborHTMLParser, LexborNode

from gateway.rewrite.css_syntax import property_name, style_declarations, text
from gateway.rewrite.css_visibility import MOVES, SIDE_PX, style_problems

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

# A tag of Postmark's template language (Mustachio), whatever is between its braces.
_TEMPLATE_TAG = re.compile(r"\{\{\{?[^{}]*\}?\}\}")
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
    element.attrs["style"] = _protected_style(
        tag, element.attrs.get("style") or "", FOOTER_MARK in element.attrs, newline
    )
    for name in ("class", "id"):  # nothing for a stylesheet of the page to name
        if name in element.attrs:
            del element.attrs[name]


@functools.lru_cache(maxsize=512)
def _protected_style(tag: str, style: str, is_root: bool, newline: str) -> str:
    """The style attribute a footer element gets. The footer template is the same for every
    message (only its links differ), so this is worked out once per element, not per copy."""
    own = [f"{property_name(d)}:{text(d.value).strip()}" for d in style_declarations(style)]
    display = f"display:{_DISPLAY.get(tag, 'block')}"
    if tag == "br":  # no text and, inline, no box: nothing to show or to hide
        declarations = [*_RESET, display]
    else:
        declarations = [
            *_RESET, *_DEFAULTS, "text-decoration:none", *own, *_PROTECTED, display,
            *(_LINK if tag == "a" else ()),
            *(_ROOT if is_root else _INSIDE),
        ]
    lines = [";".join(f"{d}!important" for d in declarations[i:i + _PER_LINE])
             for i in range(0, len(declarations), _PER_LINE)]
    return f";{newline}".join(lines) + ";"


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
    attributes = {tag: None if element is None else dict(element.attrs.items())
                  for tag, element in elements.items()}
    problems += style_problems(attributes, sheets)
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
            if digits and int(digits.group(1)) > SIDE_PX:
                problems.append(f'<body {name}="{attrs.get(name)}"> {MOVES}')
    return problems


def shown_template_html(template_html: str) -> str:
    """The text and attribute values a reader's client keeps of a template's HTML body,
    one per line, with the template's tags (`{{name}}`, `{{{name}}}`, `{{#if x}}`) as
    written: what is in a comment (a conditional comment, `<!-- … -->`, `<? … >`), or
    `<template>`, is left out.

    Postmark fills the tags in before the client parses the HTML, so each tag goes through
    the parse as one opaque word: a tag inside a comment is hidden, a comment end written
    inside a tag (which filling it in removes) ends nothing, and a placeholder a comment
    splits in two is no placeholder."""
    nonce = secrets.token_hex(8)  # cannot be written in the template to fake a tag
    tags: list[str] = []

    def word(tag: re.Match[str]) -> str:
        tags.append(tag.group())
        return f"tag{nonce}x{len(tags) - 1}x"

    document = LexborHTMLParser(_TEMPLATE_TAG.sub(word, template_html))
    kept: list[str] = []
    for node in document.root.traverse(include_text=True) if document.root else ():
        if node.tag == "-text":
            kept.append(node.text(deep=False))
        elif node.tag != "-comment":
            kept += [value for value in node.attributes.values() if value]
    return re.sub(rf"tag{nonce}x(\d+)x", lambda w: tags[int(w.group(1))], "\n".join(kept))
