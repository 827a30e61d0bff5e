"""Render the commercial footer and the one-click unsubscribe headers for one recipient."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from email.message import EmailMessage
from string import Template
from urllib.parse import quote

from gateway.model import SenderIdentity
from gateway.rewrite.mime import Footer
from gateway.rules import RuleSet


def contact_parts(identity: SenderIdentity) -> list[str]:
    return [part for part in (identity.email, identity.phone, identity.website) if part]


def render_footer(
    rules: RuleSet,
    identity: SenderIdentity,
    unsubscribe_url: str,
    already_present: Callable[[str], bool],
) -> Footer:
    contacts = contact_parts(identity)
    text = Template(rules.footer_text).substitute(
        sender_name=identity.name,
        postal_address=identity.postal_address,
        contact_line=f"Contact: {' | '.join(contacts)}",
        unsubscribe_url=unsubscribe_url,
    )
    html_contacts = " | ".join(_html_contact(c) for c in contacts)
    markup = Template(rules.footer_html).substitute(
        sender_name=html.escape(identity.name),
        postal_address=html.escape(identity.postal_address),
        contact_line=f"Contact: {html_contacts}",
        unsubscribe_url=html.escape(unsubscribe_url, quote=True),
    )
    return Footer(text=text, html=markup, already_present=already_present)


def _html_contact(contact: str) -> str:
    escaped = html.escape(contact, quote=True)
    if "@" in contact:
        return f'<a href="mailto:{escaped}">{escaped}</a>'
    if contact.startswith(("http://", "https://")):
        return f'<a href="{escaped}">{escaped}</a>'
    return escaped


def footer_detector(
    unsubscribe_prefix: str, belongs_to_recipient: Callable[[str], bool]
) -> Callable[[str], bool]:
    """True for body text that already carries an unsubscribe link of ours for this recipient.

    A footer quoted from a message to someone else does not count: that person's link would
    unsubscribe the wrong address.
    """
    pattern = re.compile(re.escape(unsubscribe_prefix) + r"([A-Za-z0-9_.-]+)")

    def already_present(text: str) -> bool:
        return any(belongs_to_recipient(m.group(1)) for m in pattern.finditer(text))

    return already_present


def mailto_link(mailbox: str, token: str) -> str:
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def set_list_unsubscribe(message: EmailMessage, https_url: str, mailto: str | None) -> None:
    """Exactly one List-Unsubscribe and one List-Unsubscribe-Post (RFC 2369, RFC 8058).

    Whatever the agent set is replaced: its links would bypass the gateway's suppression.
    The value is stored pre-folded at the comma: the stdlib's folding would turn a long URI
    into RFC 2047 encoded words, which no mailbox provider recognises as a link.
    """
    del message["List-Unsubscribe"]
    del message["List-Unsubscribe-Post"]
    links = [f"<{https_url}>"] + ([f"<{mailto}>"] if mailto else [])
    message.set_raw("List-Unsubscribe", " " + ",\r\n ".join(links))
    message.set_raw("List-Unsubscribe-Post", " List-Unsubscribe=One-Click")
