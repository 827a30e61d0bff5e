"""The opt-out notice a marketing text carries, rendered from the rule data."""

from __future__ import annotations

from string import Template

from gateway.model import SenderIdentity
from gateway.rules.ruleset import RuleSet


def sms_notice(rules: RuleSet, identity: SenderIdentity) -> str:
    return Template(rules.calling.sms_opt_out_notice).substitute(sender_name=identity.name)


def with_notice(body: str, notice: str) -> str:
    return f"{body}\n{notice}" if body else notice
