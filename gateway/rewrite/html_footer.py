"""The footer in an HTML body, placed by an HTML5 parser, and what would keep a reader from
seeing it.

An HTML document is not a string: searching for `</body>` put the footer inside whatever
the agent left open (a hidden `div`, a comment, a `<template>`, a `<title>`). The body is
parsed as a browser parses it (lexbor, through selectolax, follows the WHATWG tree
construction rules), the footer becomes the last child of the rendered `<body>`, outside
every element the agent left open, and the document is written out again. The footer
carries inline `!important` styles, which no stylesheet can override; what remains is what
the agent can do to the footer's only ancestors, `<html>` and `<body>`, and the length
after which Gmail clips a message: `visibility_problems` names those, and the message is
blocked (FOOTER_NOT_VISIBLE) rather than sent.
"""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

FOOTER_MARK = "data-compliance-footer"
# Gmail clips a message's HTML after about 102 KB; the footer must come before that.
CLIP_BYTES = 100_000
# Room the footer itself takes, counted before it is rendered.
FOOTER_ALLOWANCE_BYTES = 4_000

_PROTECTED = (
    "visibility:visible !important;opacity:1 !important;position:static !important;"
    "transform:none !important;filter:none !important;clip-path:none !important;"
    "mask:none !important;height:auto !important;max-height:none !important;"
    "min-width:0 !important;max-width:none !important;overflow:visible !important;"
    "font-size:12px !important;line-height:1.5 !important;text-indent:0 !important;"
    "letter-spacing:normal !important;color:#222222 !important;"
    "background-color:#ffffff !important;content-visibility:visible !important;"
    "zoom:1 !important;float:none !important;margin-left:0 !important;"
    "margin-right:0 !important;"
)
_DISPLAY = {"a": "inline", "br": "inline", "span": "inline", "b": "inline", "strong": "inline"}
_LINK = "color:#1a0dab !important;text-decoration:underline !important;"

_ROUND_TRIP_RISKS = ("<script", "<noscript", "<!--", "<![cdata[", "<plaintext", "<template",
                     "<svg", "<math", "<noembed", "<noframes", "<iframe", "<xmp", "<frameset")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_CSS_RULE = re.compile(r"([^{}]*)\{([^{}]*)\}")
_DECLARATION = re.compile(r"([-\w]+)\s*:\s*([^;]+)")
_NUMBER = re.compile(r"-?\d*\.?\d+")
# Selector subjects that match the footer's ancestors (or everything).
_ANCESTOR_SUBJECT = re.compile(r"^(?:html|body|:root|\*)(?=$|[.#:\[])", re.IGNORECASE)
_HTML_SUBJECT = re.compile(r"^(?:html|:root|\*)(?=$|[.#:\[])", re.IGNORECASE)


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
    own = (element.attrs.get("style") or "").rstrip(";")
    display = f"display:{_DISPLAY.get(tag, 'block')} !important;"
    link = _LINK if tag == "a" else ""
    declarations = [d for d in (own + ";" + _PROTECTED + display + link).split(";") if d.strip()]
    element.attrs["style"] = f";{newline}".join(declarations) + ";"


def visibility_problems(markup: str) -> list[str]:
    """Why a footer added to this HTML could not be seen, or nothing. Conservative: what the
    gateway cannot check (an external stylesheet) counts as hiding it."""
    problems = []
    if len(markup.encode("utf-8", "surrogatepass")) + FOOTER_ALLOWANCE_BYTES > CLIP_BYTES:
        problems.append(
            f"the HTML body is over {CLIP_BYTES // 1000} KB with the footer: Gmail clips a "
            "message after about 102 KB, so the footer would not be shown"
        )
    document = LexborHTMLParser(markup)
    for tag in ("html", "body"):
        element = document.css_first(tag)
        if element is None:
            continue
        if "hidden" in element.attrs:
            problems.append(f"<{tag}> has the hidden attribute")
        problems += [
            f"<{tag} style> {problem}"
            for problem in _hiding_declarations(element.attrs.get("style") or "")
        ]
    if document.css_first("plaintext") is not None:
        problems.append("a <plaintext> element turns everything after it, the footer "
                        "included, into text")
    for link in document.css("link"):
        if "stylesheet" in (link.attrs.get("rel") or "").lower():
            problems.append("an external stylesheet (<link rel=stylesheet>) could hide the "
                            "footer and cannot be checked")
            break
    for style in document.css("style"):
        problems += _stylesheet_problems(style.text(deep=True))
    try:  # last: it adds a footer to `document`
        _footed(document, "<p>footer</p>", "\n", _may_not_round_trip(markup))
    except FooterNotVisible as exc:
        problems.append(str(exc))
    return list(dict.fromkeys(problems))


def _stylesheet_problems(css: str) -> list[str]:
    problems = []
    for selectors, declarations in _CSS_RULE.findall(_CSS_COMMENT.sub("", css)):
        ancestors = sorted({
            selector.strip() for selector in selectors.split(",") if _may_match_ancestor(selector)
        })
        if not ancestors:
            continue
        problems += [
            f"a stylesheet rule for {', '.join(ancestors)} {problem}"
            for problem in _hiding_declarations(declarations)
        ]
    return problems


def _may_match_ancestor(selector: str) -> bool:
    """Whether the selector may match `<html>` or `<body>`, the footer's only ancestors:
    its subject names one of them, or is universal where `<body>` can be it (alone, or
    right after a compound that may be `<html>`)."""
    compounds = [c for c in re.split(r"[\s>+~]+", selector.strip()) if c]
    if not compounds:
        return False
    subject = compounds[-1]
    if not _ANCESTOR_SUBJECT.match(subject):
        return False
    if not subject.startswith("*"):
        return True
    return len(compounds) == 1 or _HTML_SUBJECT.match(compounds[-2]) is not None


def _hiding_declarations(declarations: str) -> list[str]:
    """Declarations on `<html>` or `<body>` that would hide or move away everything in them,
    the footer included (the footer's own colours and sizes are protected inline)."""
    problems = []
    for name, raw in _DECLARATION.findall(declarations):
        prop = name.lower()
        value = raw.replace("!important", "").strip().lower()
        if _hides(prop, value):
            problems.append(f"sets {prop}: {value}, which hides the footer")
    return problems


def _hides(prop: str, value: str) -> bool:
    numbers = [float(n) for n in _NUMBER.findall(value)]
    if prop == "display":
        return value == "none"
    if prop == "visibility":
        return value in ("hidden", "collapse")
    if prop in ("opacity", "zoom"):
        return bool(numbers) and numbers[0] < 0.5 and not value.endswith("%")
    if prop in ("transform", "filter", "clip-path", "clip", "mask", "-webkit-mask", "scale",
                "translate", "rotate"):
        return value not in ("none", "auto", "unset", "initial", "1")
    if prop == "content-visibility":
        return value == "hidden"
    if prop in ("height", "max-height", "width", "max-width"):
        return bool(numbers) and numbers[0] <= 1 and not value.endswith("%")
    if prop in ("text-indent", "left", "top", "margin", "margin-left", "margin-top", "inset"):
        return any(n <= -100 for n in numbers)
    if prop == "position":
        return value in ("absolute", "fixed")
    return False
