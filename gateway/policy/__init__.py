"""The decision, as a pure function: no I/O, no clock reads, no globals.

`decide` is the single entry point every channel goes through; each channel's rules live
in their own module.
"""

from __future__ import annotations

from datetime import datetime

from gateway.model import Channel, Decision, Facts, OutboundMessage
from gateway.policy.calling import SMS_OPT_OUT_NOTICE, decide_telephony
from gateway.policy.email import EMAIL_FOOTER, decide_email
from gateway.rules.ruleset import RuleSet

__all__ = ["EMAIL_FOOTER", "SMS_OPT_OUT_NOTICE", "decide"]


def decide(message: OutboundMessage, facts: Facts, rules: RuleSet, now: datetime) -> Decision:
    if message.channel is Channel.EMAIL:
        return decide_email(message, facts, rules)
    return decide_telephony(message, facts, rules.calling, now, rules.version)
