"""The email channel's egress: personalize one recipient's copy, hand it to the upstream."""

from __future__ import annotations

import copy

from gateway.email_message import to_bytes
from gateway.model import Channel, Decision, OutboundMessage
from gateway.pipeline import Receipt
from gateway.policy import EMAIL_FOOTER
from gateway.rewrite.footer import render_footer, set_list_unsubscribe
from gateway.rewrite.mime import add_footer
from gateway.rules import RuleSet
from gateway.unsubscribe import Unsubscribe
from gateway.upstream.base import EmailUpstream


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
        assert message.email is not None and message.email.mime is not None
        mime = copy.deepcopy(message.email.mime)
        if EMAIL_FOOTER in decision.obligations:
            links = self.unsubscribe.links(recipient, message.envelope_sender, Channel.EMAIL)
            footer = render_footer(
                rules,
                message.account.identity,
                links.url,
                self.unsubscribe.url_prefix,
                self.unsubscribe.token_names(recipient),
            )
            mime = add_footer(mime, footer)
            set_list_unsubscribe(mime, links.url, links.mailto)
        del mime["Bcc"]
        return to_bytes(mime)

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> Receipt:
        return Receipt(
            await self.upstream.send_email(message.envelope_sender, recipient, payload)
        )
