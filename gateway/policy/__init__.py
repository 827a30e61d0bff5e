"""The decision, as a pure function: no I/O, no clock reads, no globals.

`decide` is the single entry point every channel goes through; each channel's rules live
in their own module.
"""

from __future__ import annotations

from datetime import datetime

from gateway.model import Channel, Decision, Facts, OutboundMessage
from gateway.policy.email import decide_email
from gateway.rules import RuleSet


def decide(message: OutboundMessage, facts: Facts, rules: RuleSet, now: datetime) -> Decision:
    """`now` is part of the signature for the time-dependent channels (calls, texts)."""
    if message.channel is Channel.EMAIL:
        return decide_email(message, facts, rules)
    raise ValueError(f"no rules for channel {message.channel}")
