"""Render the commercial footer and the one-click unsubscribe headers for one recipient."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from string import Template
from typing import Any
from urllib.parse import quote

from gateway.auth.unsubscribe_tokens import TOKEN_IN_TEXT
from gateway.model import SenderIdentity
from gateway.rewrite.mime import Footer
from gateway.rules.ruleset import RuleSet

HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# The keys a template send's TemplateModel gains; a Postmark template must show the first two.
TEMPLATE_FOOTER_KEYS = ("compliance_footer_html", "compliance_footer_text")
TEMPLATE_URL_KEY = "unsubscribe_url"


def template_reference(request: Mapping[str, Any]) -> int | str:
    return request.get("TemplateId") or request["TemplateAlias"]


def contact_parts(identity: SenderIdentity) -> list[str]:
    return [part for part in (identity.email, identity.phone, identity.website) if part]


def render_footer(
    rules: RuleSet,
    identity: SenderIdentity,
    unsubscribe_url: str,
    unsubscribe_prefix: str,
    belongs_to_recipient: Callable[[str], bool],
) -> Footer:
    """The footer for one recipient, and the test for whether a part already carries it."""
    text_template, html_template = _templates(rules.footer_text, rules.footer_html, identity)
    return Footer(
        text=text_template.replace(URL_SLOT, unsubscribe_url),
        html=html_template.replace(URL_SLOT, html.escape(unsubscribe_url, quote=True)),
        already_present=_detector(
            _footer_patterns(text_template, html_template, unsubscribe_prefix),
            belongs_to_recipient,
        ),
        unsubscribe_url=unsubscribe_url,
        owns_link=_link_owner(unsubscribe_prefix, belongs_to_recipient),
    )


URL_SLOT = "\x00unsubscribe-url\x00"


@functools.lru_cache(maxsize=64)
def _templates(
    text_template: str, html_template: str, identity: SenderIdentity
) -> tuple[str, str]:
    """Both footers rendered with a placeholder where the recipient's link goes."""
    contacts = contact_parts(identity)
    text = Template(text_template).substitute(
        sender_name=identity.name,
        postal_address=identity.postal_address,
        contact_line=f"Contact: {' | '.join(contacts)}",
        unsubscribe_url=URL_SLOT,
    )
    html_contacts = " | ".join(_html_contact(c) for c in contacts)
    markup = Template(html_template).substitute(
        sender_name=html.escape(identity.name),
        postal_address=html.escape(identity.postal_address),
        contact_line=f"Contact: {html_contacts}",
        unsubscribe_url=URL_SLOT,
    )
    return text, markup


@functools.lru_cache(maxsize=64)
def _footer_patterns(
    text_template: str, html_template: str, unsubscribe_prefix: str
) -> tuple[re.Pattern[str], ...]:
    """The complete rendered footer, any line endings, with the token captured."""
    link = re.escape(unsubscribe_prefix) + f"({TOKEN_IN_TEXT})"
    patterns = []
    for template in (text_template, html_template):
        before, _, after = template.partition(URL_SLOT)
        patterns.append(re.compile(
            _flexible_newlines(re.escape(before)) + link + _flexible_newlines(re.escape(after))
        ))
    return tuple(patterns)


def _flexible_newlines(escaped: str) -> str:
    """re.escape writes a newline as backslash-newline; let it match CRLF too."""
    return escaped.replace("\\\n", r"\r?\n")


def _detector(
    patterns: tuple[re.Pattern[str], ...], belongs_to_recipient: Callable[[str], bool]
) -> Callable[[str], bool]:
    """True only for a part that already shows this gateway's whole footer, outside HTML
    comments, with a link for this recipient.

    A bare link is not enough (an agent could plant one to suppress the footer), and a footer
    quoted from a message to someone else does not count: its link unsubscribes another
    address.
    """

    def already_present(body: str) -> bool:
        visible = HTML_COMMENT.sub("", body)
        return any(
            belongs_to_recipient(match.group(1))
            for pattern in patterns
            for match in pattern.finditer(visible)
        )

    return already_present


def _link_owner(
    unsubscribe_prefix: str, belongs_to_recipient: Callable[[str], bool]
) -> Callable[[str], bool]:
    """Whether a URL is this gateway's unsubscribe link for this recipient."""
    link = re.compile(re.escape(unsubscribe_prefix) + f"({TOKEN_IN_TEXT})")

    def owns_link(url: str) -> bool:
        match = link.fullmatch(url)
        return match is not None and belongs_to_recipient(match.group(1))

    return owns_link


def _html_contact(contact: str) -> str:
    escaped = html.escape(contact, quote=True)
    if "@" in contact:
        return f'<a href="mailto:{escaped}">{escaped}</a>'
    if contact.startswith(("http://", "https://")):
        return f'<a href="{escaped}">{escaped}</a>'
    return escaped


def mailto_link(mailbox: str, token: str) -> str:
    """The space is written out: `quote` has a fast path only for text needing no escapes."""
    return f"mailto:{mailbox}?subject=unsubscribe%20{quote(token)}"


def set_list_unsubscribe(message: EmailMessage, https_url: str, mailto: str | None) -> None:
    """Exactly one List-Unsubscribe and one List-Unsubscribe-Post (RFC 2369, RFC 8058).

    Whatever the agent set is replaced: its links would bypass the gateway's suppression.
    The value is stored pre-folded at the comma: the stdlib's folding would turn a long URI
    into RFC 2047 encoded words, which no mailbox provider recognises as a link.
    """
    del message["List-Unsubscribe"]
    del message["List-Unsubscribe-Post"]
    for name, value in one_click_headers(https_url, mailto, FOLDED_SEPARATOR):
        message.set_raw(name, " " + value)


FOLDED_SEPARATOR = ",\r\n "


def one_click_headers(
    https_url: str, mailto: str | None, separator: str = ", "
) -> tuple[tuple[str, str], ...]:
    """List-Unsubscribe and List-Unsubscribe-Post; with FOLDED_SEPARATOR the value is ready
    to be written into MIME as it is, one link per line."""
    links = separator.join([f"<{https_url}>"] + ([f"<{mailto}>"] if mailto else []))
    return (("List-Unsubscribe", links), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
