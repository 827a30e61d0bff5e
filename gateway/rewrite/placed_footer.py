"""Recognising, in an HTML body, the footer this gateway placed there for this recipient.

A message re-sent through the gateway (an agent's retry of its own earlier output) must not
get a second footer. A footer the agent copied into its HTML does not count: it could sit in
hidden markup, and what the gateway places is protected only when the gateway places it. So
only the last element of the body, marked as the gateway's and linking to this recipient's
unsubscribe URL, is recognised, and it is removed to be placed afresh.
"""

from __future__ import annotations

from collections.abc import Callable

from selectolax.lexbor import LexborHTMLParser, LexborNode

from gateway.rewrite.html_footer import FOOTER_MARK


def without_placed_footer(markup: str, owns_link: Callable[[str], bool]) -> str:
    """`markup` without the gateway's own footer for this recipient, or as it was."""
    document = LexborHTMLParser(markup)
    placed = _last_element(document.body)
    if placed is None or FOOTER_MARK not in placed.attrs:
        return markup
    if not any(owns_link(link.attrs.get("href") or "") for link in placed.css("a[href]")):
        return markup
    placed.decompose()
    return document.html or ""


def _last_element(body: LexborNode | None) -> LexborNode | None:
    if body is None:
        return None
    last = None
    for node in body.iter(include_text=False):
        last = node
    return last
