"""The footer in hostile HTML: every case is either footed visibly (the footer is the last
child of the rendered body, outside everything the agent wrote) or blocked with a reason
(FOOTER_NOT_VISIBLE). Checked on the parsed output, with a property test over generated
HTML, and in a real Chromium, from the rendered page."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from gateway.rewrite.html_footer import FOOTER_MARK, footed_html, visibility_problems

ADDRESS = "548 Market St #12345, San Francisco"
FOOTER = (
    f'<p style="margin:0;">This message was sent by Example Corp, {ADDRESS}.</p>\n'
    '<p style="margin:0;"><a href="https://gw.example.com/u/T0K3N">unsubscribe here</a></p>'
)
CHROMIUM = Path("/usr/bin/chromium")

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
    "off-screen wrapper": '<div style="position:absolute;left:-9999px"><p>Hi',
    "zero-size wrapper": '<div style="height:0;overflow:hidden"><p>Hi',
    "closed details": "<details><summary>More</summary><p>Hi",
    "same colour as the footer's text": '<body style="background-color:#555;color:#555"><p>Hi',
    "stylesheet hides every div": "<style>div { display: none !important }</style><p>Hi</p>",
    "stylesheet hides every paragraph": "<style>p,a{visibility:hidden!important;"
                                        "font-size:0!important;color:#fff!important}</style>",
    "stylesheet moves the last child away": "<style>body>*:last-child{position:absolute;"
                                            "left:-9999px;transform:scale(0)}</style><p>Hi",
}
# What the footer cannot be protected from: refused with a reason naming it.
BLOCKED = {
    "body hidden": ('<body style="display:none"><p>Hi', "display: none"),
    "body transparent": ('<body style="opacity:0"><p>Hi', "opacity: 0"),
    "html hidden attribute": ("<html hidden><body><p>Hi", "hidden attribute"),
    "stylesheet hides the body": ("<style>body{visibility:hidden}</style><p>Hi",
                                  "visibility: hidden"),
    "stylesheet for everything": ("<style>* { opacity: 0 !important }</style><p>Hi",
                                  "opacity: 0"),
    "stylesheet inside a media query": (
        "<style>@media screen { html > body { transform: scale(0) } }</style><p>Hi",
        "transform: scale(0)",
    ),
    "zero-height body": ("<style>body{height:0;overflow:hidden}</style>", "height: 0"),
    "external stylesheet": ('<link rel="stylesheet" href="https://x.example/a.css"><p>Hi',
                            "external stylesheet"),
    "plaintext": ("<p>Hi</p><plaintext>", "<plaintext>"),
    "frameset": ("<b><frameset></noembed>", "<frameset>"),
    "script escaped past its end": ("<script><!--<script></b>", "swallows the footer"),
    "past Gmail's clip": ("<p>" + "x" * 150_000 + "</p>", "clip"),
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
    style = footer.attrs["style"]
    for declaration in ("visibility:visible !important", "display:block !important",
                        "opacity:1 !important", "color:#222222 !important"):
        assert declaration in style


def _after(node):
    following = node.next
    while following is not None:
        yield following
        following = following.next


@pytest.mark.parametrize(("markup", "says"), BLOCKED.values(), ids=BLOCKED.keys())
def test_what_cannot_be_protected_is_named(markup: str, says: str) -> None:
    problems = visibility_problems(markup)
    assert problems and any(says in problem for problem in problems), problems


def test_ordinary_email_html_is_not_refused() -> None:
    ordinary = (
        "<html><head><style>body { margin:0; padding:0; width:100% !important; "
        "font-family: Arial; color: #333; background:#f4f4f4 } .btn { color:#fff }</style>"
        "</head><body style='margin:0;padding:0'><table width='100%'><tr><td>"
        "<p>Hi Bob</p></td></tr></table></body></html>"
    )
    assert visibility_problems(ordinary) == []


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


def browser_reason() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return ""


async def test_chromium_shows_the_footer_in_every_footed_case(tmp_path: Path) -> None:
    """From the rendered page, not the source: the postal address and the unsubscribe link
    are visible, have a size, sit inside the page and contrast with their background."""
    reason = browser_reason()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"],
        )
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
