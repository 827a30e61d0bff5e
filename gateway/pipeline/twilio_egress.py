"""The calls-and-texts channel's egress: one recipient's form, handed to the Twilio upstream."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from gateway.model import Decision, OutboundMessage, Receipt
from gateway.policy import SMS_OPT_OUT_NOTICE
from gateway.rewrite.sms_notice import sms_notice, with_notice
from gateway.rules.ruleset import RuleSet
from gateway.upstream.twilio import RESOURCES, TwilioUpstream


class TwilioEgress:
    """Forwards the agent's form with the gateway's changes: the recipient's own To, and the
    opt-out notice appended to a marketing text's body when the decision requires it."""

    def __init__(self, upstream: TwilioUpstream) -> None:
        self.upstream = upstream
        self.name = upstream.name

    def render(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> bytes:
        assert message.telephony is not None
        form = [(k, v) for k, v in message.telephony.form if k != "To"]
        form.insert(0, ("To", recipient))
        if SMS_OPT_OUT_NOTICE in decision.obligations:
            notice = sms_notice(rules, message.account.identity)
            if not any(k == "Body" for k, _ in form):
                form.append(("Body", ""))
            form = [(k, with_notice(v, notice) if k == "Body" else v) for k, v in form]
        return urlencode(form).encode()

    def rewrites(
        self, message: OutboundMessage, recipient: str, decision: Decision, rules: RuleSet
    ) -> list[dict[str, str]]:
        """What `render` changes in the form, for the decision log: the opt-out notice
        appended to the body (its text)."""
        if SMS_OPT_OUT_NOTICE not in decision.obligations:
            return []
        return [{"kind": "sms_notice", "text": sms_notice(rules, message.account.identity)}]

    async def send(self, message: OutboundMessage, recipient: str, payload: bytes) -> Receipt:
        form = parse_qsl(payload.decode(), keep_blank_values=True)
        return await self.upstream.create(RESOURCES[message.channel], form)
