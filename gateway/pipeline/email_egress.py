"""The email channel's egress: personalize one recipient's copy, hand it to the upstream."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.addresses import domain_of
from gateway.mail.compose import compose_mime
from gateway.mail.parse import to_bytes
from gateway.model import (
    Channel,
    Decision,
    EmailFields,
    OutboundMessage,
    Reason,
    Receipt,
    SenderIdentity,
)
from gateway.pipeline.process import CopyRefused
from gateway.policy import EMAIL_FOOTER
from gateway.rewrite.dkim import DkimSigner
from gateway.rewrite.footer import (
    FOLDED_SEPARATOR,
    TEMPLATE_FOOTER_KEYS,
    TEMPLATE_URL_KEY,
    mailto_link,
    one_click_headers,
    render_footer,
    set_list_unsubscribe,
)
from gateway.rewrite.mime import Footer, add_footer, footed_body
from gateway.rules.ruleset import RuleSet
from gateway.runtime.logs import log_event
from gateway.services.unsubscribe import Unsubscribe, UnsubscribeLinks
from gateway.upstream.base import EmailUpstream, PostmarkApi
from gateway.upstream.postmark import fields_to_postmark

ONE_CLICK_HEADERS = {"list-unsubscribe", "list-unsubscribe-post"}
# How the decision log shows a recipient's own unsubscribe token: the token itself is a
# working opt-out link for that recipient, so it is not kept.
TOKEN_SHOWN = "TOKEN"
log = logging.getLogger("gateway.pipeline.email_egress")


class EmailEgress:
    """`dkim` signs what goes out as MIME; Postmark's API builds its own MIME from fields
    and signs it with the domain's key kept at Postmark, so a signature made here could
    not reach the reader.

    No MIME copy larger than `max_message_bytes` (smtp.max_message_bytes, the largest the
    gateway accepts) goes out: footers in many parts, or a 7-bit body the footer turns into
    quoted-printable, can make a copy larger than what the agent sent.
    """

    def __init__(
        self, upstream: EmailUpstream, unsubscribe: Unsubscribe, dkim: DkimSigner | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.unsubscribe = unsubscribe
        self.name = upstream.name
        self.postmark_api = upstream if isinstance(upstream, PostmarkApi) else None
        self.dkim = dkim or DkimSigner(())
        self.max_message_bytes = max_message_bytes
        self._rewrites_shown: dict[tuple[object, ...], tuple[dict[str, str], ...]] = {}

    def render(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> bytes:
        """Each recipient gets their own unsubscribe link, so each gets their own copy.

        The pipeline runs MIME work in a worker thread: it grows with the number of parts.
        """
        email = message.email
        assert email is not None
        footer = links = None
        if EMAIL_FOOTER in decision.obligations:
            links = self.unsubscribe.links(
                recipient, message.envelope_sender, Channel.EMAIL, message.account.identity.name
            )
            footer = render_footer(
                rules,
                message.account.identity,
                links.url,
                self.unsubscribe.url_prefix,
                self.unsubscribe.token_names(recipient),
            )
        if email.template is not None:
            return self._template_request(email.template, recipient, footer, links)
        if email.fields is not None:
            payload = self._from_fields(email.fields, recipient, footer, links)
            if self.postmark_api is not None:
                return payload
            return self._within_size(self._signed(message, payload, None))
        assert email.mime is not None
        mime = copy.deepcopy(email.mime)
        if footer is not None and links is not None:
            mime = add_footer(mime, footer)
            set_list_unsubscribe(mime, links.url, links.mailto)
        del mime["Bcc"]
        if self.postmark_api is not None:
            return self._within_size(to_bytes(mime))
        return self._within_size(self._signed(message, to_bytes(mime), email.received_head))

    def _within_size(self, mime: bytes) -> bytes:
        if self.max_message_bytes is not None and len(mime) > self.max_message_bytes:
            raise CopyRefused(Reason(
                "MESSAGE_MALFORMED",
                f"the rewritten copy would be {len(mime)} bytes, over smtp.max_message_bytes "
                f"({self.max_message_bytes}): the footer in each text part made it larger; "
                "send fewer or smaller parts",
                "email.malformed",
            ))
        return mime

    def _signed(self, message: OutboundMessage, mime: bytes, received_head: bytes | None) -> bytes:
        email = message.email
        assert email is not None
        from_domain = domain_of(email.from_addresses[0]) if email.from_addresses else ""
        signed = self.dkim.finish(mime, from_domain, received_head)
        if signed.removed:
            log_event(log, "dkim-signature-removed", gateway_id=message.id,
                      notes=list(signed.removed))
        return signed.message

    def _from_fields(
        self,
        fields: EmailFields,
        recipient: str,
        footer: Footer | None,
        links: UnsubscribeLinks | None,
    ) -> bytes:
        """The footer goes into the bodies as text; MIME is written only for an upstream
        that takes MIME, Postmark's API gets its own request. A signature given among the
        agent's headers cannot hold on MIME the gateway writes, so `_signed` removes it."""
        folded: tuple[tuple[str, str], ...] = ()
        headers: tuple[tuple[str, str], ...] = ()
        if footer is not None and links is not None:
            fields = replace(
                fields,
                text_body=fields.text_body and footed_body(fields.text_body, footer,
                                                           subtype="plain"),
                html_body=fields.html_body and footed_body(fields.html_body, footer,
                                                           subtype="html"),
            )
            folded = one_click_headers(links.url, links.mailto, FOLDED_SEPARATOR)
            headers = one_click_headers(links.url, links.mailto)
        if self.postmark_api is not None:
            return json.dumps(fields_to_postmark(fields, recipient, headers)).encode()
        return compose_mime(fields, folded)

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
                {"Name": name, "Value": value}
                for name, value in one_click_headers(links.url, links.mailto)
            ]
        return json.dumps(request).encode()

    def rewrites(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> list[dict[str, str]]:
        """What `render` adds to a recipient's copy, for the decision log: the footer (its
        text, with the link as TOKEN) and where it went, and the one-click headers."""
        email = message.email
        if EMAIL_FOOTER not in decision.obligations or email is None:
            return []
        key = (rules.version, message.account.identity, email.template is not None)
        shown = self._rewrites_shown.get(key)
        if shown is None:
            if len(self._rewrites_shown) > 64:  # rules reloaded, identities changed
                self._rewrites_shown.clear()
            shown = self._rewrites_shown[key] = self._rewrites_for(
                rules, message.account.identity, template=email.template is not None
            )
        return [dict(rewrite) for rewrite in shown]

    def _rewrites_for(
        self, rules: RuleSet, identity: SenderIdentity, *, template: bool
    ) -> tuple[dict[str, str], ...]:
        """The same for every recipient but for the token: rendered once per rules
        version, sender identity and kind of message."""
        url = self.unsubscribe.url_prefix + TOKEN_SHOWN
        footer = render_footer(rules, identity, url, self.unsubscribe.url_prefix, _nobody)
        if template:
            where = "the template model: " + ", ".join((*TEMPLATE_FOOTER_KEYS, TEMPLATE_URL_KEY))
        else:
            where = "every text and HTML body shown to a reader"
        mailbox = self.unsubscribe.mailbox
        mailto = mailto_link(mailbox, TOKEN_SHOWN) if mailbox else None
        return (
            {"kind": "footer", "where": where, "text": footer.text},
            *(
                {"kind": "header", "name": name, "value": value}
                for name, value in one_click_headers(url, mailto)
            ),
        )

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> Receipt:
        email = message.email
        if email is not None and email.template is not None:
            return Receipt(await self.upstream.send_template(recipient, json.loads(payload)))
        if email is not None and email.fields is not None and self.postmark_api is not None:
            return Receipt(await self.postmark_api.send_api_email(json.loads(payload)))
        return Receipt(
            await self.upstream.send_email(message.envelope_sender, recipient, payload)
        )


def _nobody(token: str) -> bool:
    return False
