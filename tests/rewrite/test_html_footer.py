"""The footer in hostile HTML: every case is either footed visibly (the footer is the last
child of the rendered body, outside everything the agent wrote, and takes no style from the
page) or blocked with a reason (FOOTER_NOT_VISIBLE); ordinary marketing HTML is never
blocked. Checked on the parsed output, with a property test over generated HTML, and in a
real Chromium, from the rendered page (here, and through the running gateway in
tests/e2e/test_footer_rendering.py, which renders FOOTED and ORDINARY and sends BLOCKED)."""

from __future__ import annotations

from pathlib import Path
from string import Template

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from gateway.rewrite.html_footer import (
    FOOTER_ALLOWANCE_BYTES,
    FOOTER_MARK,
    footed_html,
    visibility_problems,
)
from tests.browser import browser_missing, launch_options

ADDRESS = "548 Market St #12345, San Francisco"
FOOTER = (
    f'<p style="margin:0;">This message was sent by Example Corp, {ADDRESS}.</p>\n'
    '<p style="margin:0;"><a href="https://gw.example.com/u/T0K3N">unsubscribe here</a></p>'
)

# HTML an agent can write that hides what follows it, or what it wraps, when a footer is
# searched for as a string: each must end with the footer visible.
FOOTED = {
    "unclosed hidden div": '<p>Hi</p><div style="display:none"></body>',
    "unclosed comment": "<p>Hi</p><!-- the rest is a comment",
    "body end tag inside a comment": "<p>Hi</p><!-- </body> --><div hidden>",
    "body end tag in an attribute": '<p title="</body>">Hi</p><div style="display:none">',
    "body end tag in a script string": '<p>Hi</p><script>var s = "</body>";</script><div hidden>',
    "unclosed template": "<p>Hi</p><template><p>",
    "unclosed noscript": "<p>Hi</p><noscript>",
    "unclosed style": "<p>Hi</p><style>p { color: red }",
    "unclosed title": "<title>Offer",
    "unclosed textarea": "<p>Hi</p><textarea>",
    "unclosed xmp": "<p>Hi</p><xmp>",
    "cdata": "<p>Hi</p><![CDATA[ <div style=display:none> ]]>",
    "content after html end": "<html><body><p>Hi</p></body></html><div hidden>",
    "hidden attribute wrapper": "<p>Hi</p><div hidden><p>",
    "visibility hidden wrapper": '<div style="visibility:hidden"><p>Hi',
    "font size zero wrapper": '<div style="font-size:0"><p>Hi',
    "opacity zero wrapper": '<div style="opacity:0"><p>Hi',
    "opacity zero percent wrapper": '<div style="opacity:0%"><p>Hi',
    "off-screen wrapper": '<div style="position:absolute;left:-9999px"><p>Hi',
    "zero-size wrapper": '<div style="height:0;overflow:hidden"><p>Hi',
    "closed details": "<details><summary>More</summary><p>Hi",
    "same colour as the footer's text": '<body style="background-color:#555;color:#555"><p>Hi',
    "stylesheet hides every div": "<style>div { display: none !important }</style><p>Hi</p>",
    "stylesheet hides every paragraph": "<style>p,a{visibility:hidden!important;"
                                        "font-size:0!important;color:#fff!important}</style>",
    "stylesheet moves the last child away": "<style>body>*:last-child{position:absolute;"
                                            "left:-9999px;transform:scale(0)}</style><p>Hi",
    # Boxes in the body over the footer: it is positioned, at the highest z-index, and last.
    "full-window fixed overlay": '<p>Hi</p><div style="position:fixed;inset:0;'
                                 'background:#fff;z-index:2147483647"></div>',
    "overlay that lets clicks through": '<p>Hi</p><div style="position:fixed;top:0;left:0;'
                                        'width:100%;height:100%;background:#fff;'
                                        'z-index:2147483647;pointer-events:none"></div>',
    "overlay at a z-index past the largest": '<p>Hi</p><div style="position:fixed;inset:0;'
                                             'background:#fff;z-index:99999999999"></div>',
    "overlay inside a stacking context": '<div style="position:relative;z-index:2147483647;'
                                         'transform:translateZ(0)"><div style="position:'
                                         'absolute;top:0;left:0;width:100vw;height:9999px;'
                                         'background:#fff"></div></div><p>Hi',
    "sticky overlay": '<div style="position:sticky;bottom:0;height:100vh;background:#fff;'
                      'z-index:2147483647">x</div><p>Hi',
    "overlay drawn as an outline": '<p>Hi</p><div style="outline:99999px solid #fff;'
                                   'outline-offset:-99999px">x</div>',
    "overlay drawn as a box shadow": '<p>Hi</p><div style="box-shadow:0 0 0 99999px #fff;'
                                     'position:relative;z-index:2147483647">x</div>',
    "body outline over everything": '<body style="outline:99999px solid #fff;'
                                    'outline-offset:-99999px"><p>Hi',
    "overlay pseudo-element of an element in the body": (
        "<style>.cover::after{content:'';position:fixed;inset:0;background:#fff;"
        "z-index:2147483647}</style><p class=cover>Hi"
    ),
    "style element shown over the page": (
        "<p>Hi</p><style>style{display:block;position:fixed;inset:0;z-index:2147483647;"
        "background:#fff;color:#fff}</style>"
    ),
    "body a stacking context, overlay in it": '<body style="position:relative;z-index:0;'
                                              'opacity:.9"><p>Hi</p><div style="position:'
                                              'fixed;inset:0;background:#fff;z-index:'
                                              '2147483647"></div>',
    # The footer's own styles overridden by the page: no stylesheet outranks them.
    "stylesheet outranks the footer's attribute": (
        "<style>html body div[data-compliance-footer]{display:none!important;"
        "opacity:0!important;transform:scale(0)!important;position:absolute!important;"
        "left:-9999px!important;z-index:-1!important}</style><p>Hi"
    ),
    "stylesheet paints the footer's text white": (
        "<style>[data-compliance-footer] *{color:#fff!important;"
        "-webkit-text-fill-color:#fff!important;background:#222!important}</style><p>Hi"
    ),
    "transparent text fill": "<style>*{-webkit-text-fill-color:transparent!important}"
                             "</style><p>Hi",
    "thick white text stroke": "<style>*{-webkit-text-stroke:8px #fff!important}</style><p>Hi",
    "text shown as discs": "<style>*{-webkit-text-security:disc!important}</style><p>Hi",
    "footer struck through in white": (
        "<style>[data-compliance-footer] *{text-decoration:line-through 30px #fff!important;"
        "text-shadow:0 0 9px #fff!important}</style><p>Hi"
    ),
    "web font named like a system font": (
        "<style>@font-face{font-family:Arial;src:local('DejaVu Serif')}"
        "*{font-family:Arial!important}</style><p>Hi"
    ),
    "footer squeezed and shifted": (
        "<style>[data-compliance-footer],[data-compliance-footer] *{width:1px!important;"
        "height:1px!important;overflow:hidden!important;margin-left:-9999px!important;"
        "padding-left:9999px!important;border-left:9999px solid!important;"
        "text-indent:-9999px!important;letter-spacing:-9px!important;"
        "word-spacing:-99px!important;line-height:0!important;white-space:nowrap!important;"
        "clip-path:inset(50%)!important;columns:50 9px!important;zoom:.01!important;"
        "font-size:0!important}</style><p>Hi"
    ),
    "footer turned and reversed": (
        "<style>[data-compliance-footer] *{direction:rtl!important;"
        "unicode-bidi:bidi-override!important;writing-mode:vertical-rl!important;"
        "rotate:180deg!important;transform:scaleX(-1)!important}</style><p>Hi"
    ),
    "footer blended away": "<style>html{background:#888}[data-compliance-footer],"
                           "[data-compliance-footer] *{mix-blend-mode:color!important;"
                           "filter:blur(20px)!important}</style><p>Hi",
    "footer replaced by an image": "<style>[data-compliance-footer],[data-compliance-footer] *"
                                   "{content:linear-gradient(#fff,#fff)!important}</style><p>Hi",
    "footer link made unclickable": "<style>a{pointer-events:none!important}</style><p>Hi",
    "footer animated away": (
        "<style>@keyframes gone{to{opacity:0;transform:scale(0)}}[data-compliance-footer]"
        "{animation:gone 0s forwards!important}</style><p>Hi"
    ),
    "footer faded in from its starting style": (
        "<style>@starting-style{[data-compliance-footer]{opacity:0!important}}"
        "[data-compliance-footer]{transition:opacity 9999s!important}</style><p>Hi"
    ),
    "footer hidden by its class or id": (
        "<style>.footer,#footer{display:none!important}</style><p>Hi"
    ),
    # What <body> hands down to the footer: it sets its own.
    "body hands down invisible text": (
        '<body style="font-size:0;line-height:0;color:#fff;-webkit-text-fill-color:'
        "transparent;letter-spacing:-99px;word-spacing:-99px;text-indent:-9999px;"
        "white-space:nowrap;-webkit-text-security:disc;direction:rtl;unicode-bidi:"
        "bidi-override;font-family:Arial;pointer-events:none;text-align:right;"
        'font-weight:900;visibility:visible;text-transform:uppercase"><p>Hi'
    ),
    "body indented off-screen": '<body style="text-indent:-9999px"><p>Hi',
}
# What the footer cannot be protected from: refused with a reason naming it.
BLOCKED = {
    "body hidden": ('<body style="display:none"><p>Hi', "display: none"),
    "body transparent": ('<body style="opacity:0"><p>Hi', "opacity: 0"),
    "body transparent in percent": ('<body style="opacity:0%"><p>Hi', "opacity: 0%"),
    "html transparent in percent": ("<style>html { opacity: 0% }</style><p>Hi",
                                    "opacity: 0%"),
    "body nearly transparent": ('<body style="opacity:.01"><p>Hi', "opacity: .01"),
    "body transparent, written 0.0": ("<style>body{opacity:0.0!important}</style>",
                                      "opacity: 0.0"),
    "body transparent by calc()": ('<body style="opacity:calc(0)"><p>Hi', "calc(0)"),
    "body transparent by a variable": ("<style>:root{--o:0}body{opacity:var(--o)}</style>",
                                       "var(--o)"),
    "html and body faded together": ('<html style="opacity:.7"><body style="opacity:.7">'
                                     "<p>Hi", "together"),
    "html hidden attribute": ("<html hidden><body><p>Hi", "hidden attribute"),
    "body hidden until found": ('<body hidden="until-found"><p>Hi', "hidden attribute"),
    "stylesheet hides the body": ("<style>body{visibility:hidden}</style><p>Hi",
                                  "visibility: hidden"),
    "stylesheet for everything": ("<style>* { opacity: 0 !important }</style><p>Hi",
                                  "opacity: 0"),
    "stylesheet inside a media query": (
        "<style>@media screen { html > body { transform: scale(0) } }</style><p>Hi",
        "transform: scale(0)",
    ),
    "body filtered to transparent": ('<body style="filter:opacity(0)"><p>Hi',
                                     "filter: opacity(0)"),
    "body filtered to black": ('<body style="filter:brightness(0)"><p>Hi',
                               "filter: brightness(0)"),
    "body blurred": ("<style>body{-webkit-filter:blur(30px)}</style>", "blur(30px)"),
    "body moved off-screen by a transform": ('<body style="transform:translateX(-9999px)">',
                                             "translatex(-9999px)"),
    "body turned upside down": ('<html style="rotate:180deg"><p>Hi', "rotate: 180deg"),
    "body scaled to nothing, prefixed": ('<body style="-webkit-transform:scale(0)">',
                                         "scale(0)"),
    "body clipped": ('<body style="clip-path:inset(50%)"><p>Hi', "clip-path"),
    "body masked": ("<style>body{-webkit-mask-image:linear-gradient(transparent,transparent)}"
                    "</style>", "mask-image"),
    "body padded off-screen": ('<body style="padding-left:5000px"><p>Hi',
                               "padding-left: 5000px"),
    "body pushed off-screen by its margin": ('<body style="margin:0 0 0 -5000px"><p>Hi',
                                             "margin: 0 0 0 -5000px"),
    "body padded off-screen in ems of a huge font": (
        "<style>html{font-size:1000px}body{padding-left:1rem}</style><p>Hi",
        "padding-left: 1rem",
    ),
    "body margin attribute": ('<body leftmargin="5000"><p>Hi', "leftmargin"),
    "html border pushes the body away": ('<html style="border-left:5000px solid #fff">',
                                         "border-left: 5000px"),
    "body shifted by its position": ('<body style="position:relative;right:9999px"><p>Hi',
                                     "right: 9999px"),
    "body raised above the page": ('<body style="margin-top:-9999px"><p>Hi',
                                   "margin-top: -9999px"),
    "body narrowed": ('<body style="width:1px"><p>Hi', "width: 1px"),
    "body widened past the window": ('<html style="min-width:5000px"><p>Hi',
                                     "min-width: 5000px"),
    "zero-height body": ("<style>body{height:0;overflow:hidden}</style>", "height: 0"),
    "body with no width to show": ("<style>html{max-width:0;overflow-x:hidden}</style>",
                                   "max-width: 0"),
    "page that cannot be scrolled": ("<style>html,body{height:100%;overflow:hidden}</style>",
                                     "overflow: hidden"),
    "body in columns": ("<style>body{column-count:50;column-fill:auto}</style>",
                        "column-count: 50"),
    "page written vertically": ('<html style="writing-mode:vertical-rl"><p>Hi',
                                "writing-mode: vertical-rl"),
    "body zoomed out": ('<body style="zoom:0.1"><p>Hi', "zoom: 0.1"),
    "body content hidden": ('<body style="content-visibility:hidden"><p>Hi',
                            "content-visibility: hidden"),
    "body contained and clipped": ("<style>body{contain:strict}</style>", "contain: strict"),
    "body replaced by an image": ("<style>body{content:linear-gradient(#fff,#fff)}</style>",
                                  "content: linear-gradient"),
    "body blended into the page": ("<style>html{background:#888}body{mix-blend-mode:color}"
                                   "</style>", "mix-blend-mode: color"),
    "body struck through": ('<body style="text-decoration:line-through 40px #fff"><p>Hi',
                            "text-decoration: line-through"),
    "body laid out as a row": ("<style>body{display:flex}</style><p>Hi", "display: flex"),
    "body in a 3D scene": ("<style>body{transform-style:preserve-3d}</style>",
                           "transform-style: preserve-3d"),
    "body animated away": ("<style>@keyframes k{to{opacity:0}}body{animation:k 1s forwards}"
                           "</style>", "opacity: 0"),
    "body inert": ("<body inert><p>Hi", "inert"),
    "body made inert by a stylesheet": ("<style>body{interactivity:inert}</style>",
                                        "interactivity: inert"),
    "body hidden from screen readers": ('<body aria-hidden="true"><p>Hi', "aria-hidden"),
    "body named by its class": ('<body class="wrap"><style>.wrap{opacity:0}</style><p>Hi',
                                "opacity: 0"),
    "body named by :not()": ("<style>:not(p){opacity:0}</style><p>Hi", "opacity: 0"),
    "body named in a nested rule": ("<style>html{& > body{opacity:0}}</style><p>Hi",
                                    "opacity: 0"),
    "body named with escapes": (r"<style>b\6f dy{\6f pacity:0}</style><p>Hi", "opacity: 0"),
    "rule after a url with a brace": ("<style>body{background:url(x{);opacity:0}</style>",
                                      "opacity: 0"),
    "rule after a string broken by a newline": ('<style>p{content:"x\n} body{opacity:0}'
                                                "</style>", "opacity: 0"),
    "rule in a scope": ("<style>@scope (html) { body { opacity:0 } }</style>", "opacity: 0"),
    "rule in layers and conditions": ("<style>@layer x{@supports (display:block){@container "
                                      "(width > 0){body{visibility:hidden}}}}</style>",
                                      "visibility: hidden"),
    "body faded in from its starting style": (
        "<style>@starting-style{body{opacity:0}}body{transition:opacity 9999s}</style>",
        "opacity: 0",
    ),
    "stylesheet in svg": ("<svg><style>body{opacity:0}</style></svg><p>Hi", "opacity: 0"),
    "stylesheet in noscript": ("<noscript><style>body{opacity:0}</style></noscript><p>Hi",
                               "opacity: 0"),
    "old-style stylesheet comment": ("<style><!-- body{opacity:0} --></style>", "opacity: 0"),
    "body's after box over everything": (
        "<style>body::after{content:'';position:fixed;inset:0;background:#fff;"
        "z-index:2147483647}</style><p>Hi",
        "body::after",
    ),
    "html's before box over a body in a stacking context": (
        "<style>body{position:relative;z-index:0}html::before{content:'';position:fixed;"
        "inset:0;z-index:1;background:#fff}</style><p>Hi",
        "html::before",
    ),
    "head shown over the body": (
        "<style>head{display:block;position:fixed;inset:0;z-index:1;background:#fff}"
        "body{position:relative;z-index:0}</style><p>Hi",
        "<head>",
    ),
    "head shown by its own style": (
        '<html><head style="display:block;position:fixed;inset:0;z-index:1;background:#fff">'
        '</head><body style="position:relative;z-index:0"><p>Hi',
        "<head>",
    ),
    "footer's own after box": (
        "<style>[data-compliance-footer]::after{content:'';position:absolute;inset:0;"
        "background:#fff}</style><p>Hi",
        "[data-compliance-footer]::after",
    ),
    "a before box for every element": ("<style>*::before{content:'';position:absolute;"
                                       "inset:0;background:#fff}</style>", "*::before"),
    "first line of the footer": ("<style>[data-compliance-footer] p::first-line{color:#fff}"
                                 "</style><p>Hi", "::first-line"),
    "popover": ('<button popovertarget=p>Open</button><div popover id=p style="inset:0;'
                'width:100%;height:100%">x</div><p>Hi', "popover"),
    "button opening a dialog": ("<button commandfor=d command=show-modal>Open</button>"
                                "<dialog id=d>x</dialog><p>Hi", "commandfor"),
    "meta refresh": ('<meta http-equiv="refresh" content="0;url=https://x.example/"><p>Hi',
                     "refresh"),
    "external stylesheet": ('<link rel="stylesheet" href="https://x.example/a.css"><p>Hi',
                            "external stylesheet"),
    "imported stylesheet": ('<style>@import url("data:text/css,body{opacity:0}");</style>',
                            "@import"),
    "plaintext": ("<p>Hi</p><plaintext>", "<plaintext>"),
    "frameset": ("<b><frameset></noembed>", "<frameset>"),
    "script escaped past its end": ("<script><!--<script></b>", "swallows the footer"),
    "past Gmail's clip": ("<p>" + "x" * 150_000 + "</p>", "clip"),
}
# What agents ordinarily send: never refused, and footed like the rest.
ORDINARY = {
    "style element with resets": (
        "<html><head><style>body { margin:0; padding:0; width:100% !important; "
        "font-family: Arial; color: #333; background:#f4f4f4 } .btn { color:#fff }</style>"
        "</head><body style='margin:0;padding:0'><table width='100%'><tr><td>"
        "<p>Hi Bob</p></td></tr></table></body></html>"
    ),
    "table newsletter with a stylesheet": (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>June news</title><style>"
        "* { -ms-text-size-adjust:100%; -webkit-text-size-adjust:100% }"
        "*, *::before, *::after { box-sizing: border-box }"
        "html, body { margin:0 auto !important; padding:0 !important; height:100% !important;"
        " width:100% !important }"
        "body { padding:20px !important; text-indent:0; background:#eef1f4;"
        " font-family: Helvetica, Arial, sans-serif; -webkit-font-smoothing: antialiased;"
        " text-rendering: optimizeLegibility; text-align: center }"
        "table, td { mso-table-lspace:0pt !important; mso-table-rspace:0pt !important }"
        "img { -ms-interpolation-mode:bicubic; border:0; outline:none }"
        ".hero { position:relative } .hero .badge { position:absolute; top:8px; right:8px;"
        " z-index:2 } .hero img { opacity:0.9; display:block; width:100% }"
        ".clearfix::after { content:''; display:table; clear:both }"
        "a[x-apple-data-detectors] { color:inherit !important; text-decoration:none !important }"
        "u + #body a { color:inherit } div[style*='margin: 16px 0'] { margin:0 !important }"
        ".a6S { display:none !important; opacity:0.01 !important }"
        "@media screen and (max-width:600px) { .container { width:100% !important }"
        " .stack { display:block !important } }"
        "@media (prefers-color-scheme: dark) { body { background:#111 !important } }"
        "</style></head><body id='body'>"
        "<div style='display:none;max-height:0;overflow:hidden;opacity:0;font-size:1px;"
        "line-height:1px;mso-hide:all' aria-hidden='true'>Three ways to cut costs"
        "&zwnj;&nbsp;&zwnj;&nbsp;</div>"
        "<center role='article' aria-roledescription='email' style='width:100%'>"
        "<table class='container' width='600' cellpadding='0' cellspacing='0' border='0'"
        " align='center' style='margin:0 auto;background:#ffffff'>"
        "<tr><td class='hero'><img src='https://example.com/hero.jpg' alt='' width='600'>"
        "<span class='badge' style='background:#c00;color:#fff;padding:2px 6px'>New</span>"
        "</td></tr><tr><td class='clearfix' style='padding:24px;text-align:left'>"
        "<h1 style='font-size:22px;margin:0 0 12px'>Fleet maintenance, June</h1>"
        "<p style='margin:0 0 12px;line-height:1.5'>Hi Bob, three ways to cut maintenance "
        "costs this quarter.</p><a class='btn' href='https://example.com/fleet' style='"
        "background:#0a6;color:#fff;padding:10px 16px;text-decoration:none;display:"
        "inline-block'>Read more</a></td></tr></table></center></body></html>"
    ),
    "right-to-left email": (
        "<html dir='rtl' lang='ar'><body style='margin:0;padding:16px;direction:rtl'>"
        "<p>مرحبا بوب، هل يناسبك اتصال لمدة ربع ساعة الأسبوع المقبل؟</p></body></html>"
    ),
    "plain letter with em-based spacing": (
        "<html><head><style>html{font-size:100%}body{font:1em/1.5 sans-serif;"
        "padding:1em 2em;max-width:40em;margin:0 auto}</style></head><body>"
        "<p>Hi Bob, would a 15 minute call next week work?</p><p>Katie</p></body></html>"
    ),
    "centred layout with a maximum width": (
        "<html><head><style>body{max-width:600px;margin:0 auto;padding:0 12px;"
        "overflow-x:hidden;background:#fff;color:#222;font:15px/1.6 Georgia,serif}"
        "header{position:sticky;top:0;background:#fff;z-index:10}"
        ".note{position:relative;left:0;opacity:.95}</style></head><body>"
        "<header><b>Example Corp</b></header><p class='note'>Would a 15 minute call next "
        "week work?</p></body></html>"
    ),
}


def footer_element(markup: str):
    document = LexborHTMLParser(markup)
    [footer] = document.css(f"[{FOOTER_MARK}]")
    return document, footer


@pytest.mark.parametrize("markup", FOOTED.values(), ids=FOOTED.keys())
def test_hostile_html_gets_a_footer_outside_everything_it_opened(markup: str) -> None:
    assert visibility_problems(markup) == []
    footed = footed_html(markup, FOOTER)
    document, footer = footer_element(footed)
    assert footer.parent is not None and footer.parent.tag == "body"
    assert footer is document.body.last_child or all(
        node.tag in ("-text", "-comment") for node in _after(footer)
    )
    assert ADDRESS in footer.text()
    declarations = {d.strip() for d in footer.attrs["style"].split(";")}
    for declaration in ("visibility:visible!important", "display:block!important",
                        "opacity:1!important", "color:#222222!important"):
        assert declaration in declarations


def _after(node):
    following = node.next
    while following is not None:
        yield following
        following = following.next


@pytest.mark.parametrize(("markup", "says"), BLOCKED.values(), ids=BLOCKED.keys())
def test_what_cannot_be_protected_is_named(markup: str, says: str) -> None:
    problems = visibility_problems(markup)
    assert problems and any(says in problem for problem in problems), problems


@pytest.mark.parametrize("markup", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_email_html_is_not_refused(markup: str) -> None:
    assert visibility_problems(markup) == []
    _, footer = footer_element(footed_html(markup, FOOTER))
    assert footer.parent is not None and footer.parent.tag == "body"


def test_the_footer_takes_nothing_from_the_page() -> None:
    """Each footer element starts its inline style with `all: revert`, which no rule of
    the page outranks, and has no class or id a stylesheet could name."""
    footer_html = '<p class="f" id="f" style="margin:0">Sent by us <a href="u">unsubscribe</a></p>'
    _, footer = footer_element(footed_html("<p>Hi", footer_html))
    elements = [node for node in footer.traverse() if node.tag != "-text"]
    assert [element.tag for element in elements] == ["div", "p", "a"]
    for element in elements:
        declarations = [d.strip() for d in element.attrs["style"].split(";") if d.strip()]
        assert declarations[0] == "all:revert!important"
        assert all(d.endswith("!important") for d in declarations), declarations
        assert "class" not in element.attrs and "id" not in element.attrs
    assert "z-index:2147483647!important" in footer.attrs["style"]
    assert "margin:0!important" in elements[1].attrs["style"]  # the template's own, kept


def test_the_gateways_footer_fits_its_allowance() -> None:
    """The room counted for the footer before it is added holds the gateway's own footer,
    rendered with long values, protective styles and all."""
    template = (Path(__file__).parents[2] / "rules/footers/commercial.html").read_text()
    contacts = " | ".join(f'<a href="mailto:c{i}@example.com">c{i}@example.com</a>'
                          for i in range(3))
    footer_html = Template(template).substitute(
        sender_name="E" * 80, postal_address="A" * 200, contact_line=f"Contact: {contacts}",
        unsubscribe_url="https://gw.example.com/u/" + "T" * 200,
    )
    markup = "<p>Hi</p>"
    added = len(footed_html(markup, footer_html, "\r\n").encode()) - len(markup.encode())
    assert added <= FOOTER_ALLOWANCE_BYTES, added


TAGS = ["div", "p", "span", "table", "td", "template", "noscript", "style", "title",
        "textarea", "xmp", "details", "a", "b", "iframe", "select", "option", "svg", "math",
        "object", "noembed", "noframes", "script", "frameset", "head", "body", "html"]
attributes = st.sampled_from(["", " hidden", ' style="display:none"', ' style="opacity:0"',
                              ' title="</body>"', ' style="font-size:0"'])
pieces = st.one_of(
    st.builds(lambda tag, attribute: f"<{tag}{attribute}>", st.sampled_from(TAGS), attributes),
    st.builds(lambda tag: f"</{tag}>", st.sampled_from(TAGS)),
    st.sampled_from(["<!--", "-->", "<![CDATA[", "]]>", "</body>", "</html>", "text", "&amp;",
                     "<", ">", '"', "'"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(pieces, max_size=25))
def test_generated_html_always_shows_the_footer_as_body_text(parts: list[str]) -> None:
    """Whatever tags are left open: the re-parsed output holds the footer's text in an
    element of the body that nothing the agent wrote contains, or the HTML is refused."""
    markup = "".join(parts)
    if visibility_problems(markup):
        return
    _, footer = footer_element(footed_html(markup, FOOTER))
    assert footer.parent is not None and footer.parent.tag == "body"
    assert ADDRESS in footer.text()
    ancestors = []
    node = footer.parent
    while node is not None and node.tag not in (None, "-undef"):
        ancestors.append(node.tag)
        node = node.parent
    assert set(ancestors) <= {"body", "html", "-document"}


async def test_chromium_shows_the_footer_in_every_footed_case(tmp_path: Path) -> None:
    """From the rendered page, not the source: the postal address and the unsubscribe link
    are visible, have a size, sit inside the page and contrast with their background."""
    reason = browser_missing()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            page = await browser.new_page(java_script_enabled=False)
            failures = []
            for name, markup in FOOTED.items():
                await page.set_content(footed_html(markup, FOOTER))
                address = page.get_by_text(ADDRESS, exact=False)
                link = page.get_by_role("link", name="unsubscribe here")
                shown = await address.is_visible() and await link.is_visible()
                box = await address.bounding_box()
                inside = bool(box) and box["width"] > 0 and box["height"] > 0 and box["x"] >= 0
                colours = await address.evaluate(
                    "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor,"
                    " getComputedStyle(e.closest('[data-compliance-footer]')).backgroundColor]"
                )
                if not (shown and inside and colours[0] != colours[2]):
                    failures.append(name)
                    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            assert failures == [], f"screenshots in {tmp_path}"
        finally:
            await browser.close()
