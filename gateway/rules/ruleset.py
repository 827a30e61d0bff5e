"""The rule set a decision reads: email rules by id, the calling rules, and which spellings
reach one mailbox.

Pure data; `gateway.rules.loader` builds it from the files under `rules/`. Its version is a
content hash of every file, so each stored decision can be tied to the exact data that
produced it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.model import Purpose
from gateway.rules.calling import CallingRules
from gateway.rules.mailboxes import MailboxRules

CONFIDENCE_LEVELS = ("high", "med")


@dataclass(frozen=True)
class Rule:
    id: str
    code: str
    purposes: frozenset[Purpose]
    citation: str
    confidence: str


@dataclass(frozen=True)
class RuleSet:
    version: str
    rules: Mapping[str, Rule]
    deceptive_subject: re.Pattern[str]  # matched against gateway.lookalikes.fold(subject)
    postal_address: re.Pattern[str]
    footer_text: str
    footer_html: str
    calling: CallingRules
    mailboxes: MailboxRules

    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def applies(self, rule_id: str, purpose: Purpose) -> bool:
        return purpose in self.rules[rule_id].purposes


REQUIRED_EMAIL_RULES = (
    "email.malformed",
    "email.recipient.syntax",
    "email.suppression",
    "email.sender.domain",
    "email.subject.deceptive",
    "email.identity.canspam",
    "email.identity.casl",
    "email.footer.unsubscribe",
    "email.footer.template",
    "email.footer.visible",
)


