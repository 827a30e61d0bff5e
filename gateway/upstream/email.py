"""The email channel's egress: personalize one recipient's copy, hand it to the upstream."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from gateway.email_message import to_bytes
from gateway.model import Channel, Decision, OutboundMessage
from gateway.pipeline import Receipt
from gateway.policy import EMAIL_FOOTER
from gateway.rewrite.footer import (
    TEMPLATE_FOOTER_KEYS,
    TEMPLATE_URL_KEY,
    list_unsubscribe_value,
    render_footer,
    set_list_unsubscribe,
)
from gateway.rewrite.mime import Footer, add_footer
from gateway.rules import RuleSet
from gateway.unsubscribe import Unsubscribe, UnsubscribeLinks
from gateway.upstream.base import EmailUpstream

ONE_CLICK_HEADERS = {"list-unsubscribe", "list-unsubscribe-post"}


class EmailEgress:
    def __init__(self, upstream: EmailUpstream, unsubscribe: Unsubscribe) -> None:
        self.upstream = upstream
        self.unsubscribe = unsubscribe
        self.name = upstream.name

    def render(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> bytes:
        """Each recipient gets their own unsubscribe link, so each gets their own copy.

        Runs in a worker thread: MIME work grows with the number of parts, not bytes.
        """
        assert message.email is not None
        footer = links = None
        if EMAIL_FOOTER in decision.obligations:
            links = self.unsubscribe.links(recipient, message.envelope_sender, Channel.EMAIL)
            footer = render_footer(
                rules,
                message.account.identity,
                links.url,
                self.unsubscribe.url_prefix,
                self.unsubscribe.token_names(recipient),
            )
        if message.email.template is not None:
            return self._template_request(message.email.template, recipient, footer, links)
        assert message.email.mime is not None
        mime = copy.deepcopy(message.email.mime)
        if footer is not None and links is not None:
            mime = add_footer(mime, footer)
            set_list_unsubscribe(mime, links.url, links.mailto)
        del mime["Bcc"]
        return to_bytes(mime)

    @staticmethod
    def _template_request(
        template: Mapping[str, Any],
        recipient: str,
        footer: Footer | None,
        links: UnsubscribeLinks | None,
    ) -> bytes:
        """Postmark renders template sends, so the footer travels in TemplateModel under the
        documented keys (the template must show them) and the one-click headers in Headers."""
        request = dict(template)
        request["To"] = recipient
        if footer is not None and links is not None:
            model = dict(request.get("TemplateModel") or {})
            model.update(zip(TEMPLATE_FOOTER_KEYS, (footer.html, footer.text), strict=True))
            model[TEMPLATE_URL_KEY] = links.url
            request["TemplateModel"] = model
            request["Headers"] = [
                h for h in request.get("Headers", []) if h["Name"].lower() not in ONE_CLICK_HEADERS
            ] + [
                {"Name": "List-Unsubscribe", "Value": list_unsubscribe_value(links.url,
                                                                             links.mailto)},
                {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            ]
        return json.dumps(request).encode()

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> Receipt:
        if message.email is not None and message.email.template is not None:
            return Receipt(await self.upstream.send_template(recipient, json.loads(payload)))
        return Receipt(
            await self.upstream.send_email(message.envelope_sender, recipient, payload)
        )
