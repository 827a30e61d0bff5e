"""Decisions per second of the pure policy, in process, for email, calls and texts.

Facts are built beforehand (as the pipeline does), so this measures `decide` alone. The
baseline in the same run is the cost of building an allow `Decision` with no rules at all:
what a gateway that checks nothing would pay.
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from gateway.config.settings import PACKAGE_RULES_DIR
from gateway.model import (
    Account,
    Channel,
    Consent,
    ConsentKind,
    Decision,
    EmailContent,
    Facts,
    OutboundMessage,
    Purpose,
    RecipientDecision,
    Role,
    SenderIdentity,
    TelephonyContent,
)
from gateway.policy import decide
from gateway.policy.callee import locate
from gateway.rules.loader import load_rules

RESULTS = Path(__file__).with_name("results.json")
NOW = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
IDENTITY = SenderIdentity("Example Corp", "548 Market St #12345, San Francisco, CA", "p@ex.com")
ACCOUNT = Account("bench", "x" * 16, Role.REP, ("example.com",), Purpose.MARKETING, IDENTITY)


def email_case() -> tuple[OutboundMessage, Facts]:
    content = EmailContent(("katie@example.com",), "Fleet costs", False, "<m@x>", 2000)
    message = OutboundMessage("b", Channel.EMAIL, "bench", ACCOUNT, "katie@example.com",
                              ("bob@client.example.net",), NOW, email=content)
    return message, Facts()


def email_new_subjects(count: int = 8192) -> Callable[[], object]:
    """A subject never seen before on every decision: more distinct subjects than the
    policy remembers folded, so each one is folded afresh (Unicode UTS #39 skeleton)."""
    rules = load_rules(PACKAGE_RULES_DIR)
    base, facts = email_case()
    messages = itertools.cycle([
        replace(base, email=replace(
            base.email, subject=f"Fleet maintenance costs for Q{n % 4 + 1}, fleet {n}"
        ))
        for n in range(count)
    ])
    return lambda: decide(next(messages), facts, rules, NOW)


def telephony_case(channel: Channel, number: str) -> tuple[OutboundMessage, Facts]:
    """The facts of a lawful contact (a written consent, an earlier purchase, contacts
    counted for every cap window), so that every rule is evaluated down to the allow."""
    rules = load_rules(PACKAGE_RULES_DIR)
    message = OutboundMessage("b", channel, "bench", ACCOUNT, "+14155550100", (number,), NOW,
                              telephony=TelephonyContent("+14155550100", "hi"))
    consents = tuple(
        Consent(number, channel, kind, datetime(2026, 1, 5, tzinfo=UTC), None, "bench")
        for kind in (ConsentKind.EXPRESS_WRITTEN, ConsentKind.EBR)
    )
    return message, Facts(
        callees={number: locate(number, None, rules.calling.area_codes)},
        consents={number: consents},
        recent_contacts={number: dict.fromkeys(rules.calling.cap_windows_s, 1)},
    )


def per_call_us(function: Callable[[], object], number: int = 20000, repeat: int = 7) -> dict:
    runs = [t / number * 1e6 for t in timeit.repeat(function, number=number, repeat=repeat)]
    return {"best_us": round(min(runs), 2), "median_us": round(statistics.median(runs), 2)}


def main() -> dict:
    rules = load_rules(PACKAGE_RULES_DIR)
    cases = {
        "email": email_case(),
        "call, New York (one zone)": telephony_case(Channel.CALL, "+12125550123"),
        "sms, Florida panhandle 850 (two zones, cap, notice)": telephony_case(
            Channel.SMS, "+18505550123"
        ),
        "call, Utah (holiday calendar)": telephony_case(Channel.CALL, "+18015550123"),
        "sms, Oregon (dated rules, exemption, cap)": telephony_case(Channel.SMS, "+15035550123"),
        "call, Pennsylvania (statute's own holidays)": telephony_case(
            Channel.CALL, "+12155550123"
        ),
    }
    baseline_message, _ = cases["email"]

    def no_policy() -> Decision:
        return Decision((), (RecipientDecision(baseline_message.recipients[0]),), (), "")

    results = {"baseline: allow without rules": per_call_us(no_policy)}
    for name, (message, facts) in cases.items():
        decide(message, facts, rules, NOW)
        results[name] = per_call_us(lambda m=message, f=facts: decide(m, f, rules, NOW))
        if name == "email":
            results["email, a new subject every time"] = per_call_us(email_new_subjects())
    return {
        "benchmark": "policy decisions in process",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "results": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
