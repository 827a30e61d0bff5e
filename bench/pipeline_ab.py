"""What a change costs the send path, measured so that a busy machine moves both sides alike:
two source trees (`git archive` of two commits), each timed in a process of its own sending
messages through `Pipeline.process` in process (SQLite store with fsync on, the outbox
upstreams, a consent for every number texted), taking turns for several rounds; the median of
each tree's rounds is compared. No sockets and no load generator, so what is left is the
pipeline: facts, decision, records, rendering, the outbox write.

    python bench/pipeline_ab.py BEFORE_TREE AFTER_TREE [--rounds 5] [--messages 2000]
        [--before-config FILE] [--after-config FILE]

Each round sends `--messages` of each kind (a 2 KB email as SMTP's DATA gives it, a text
as Twilio's API gives it), one at a time and 32 at once. `--before-config` and
`--after-config` append a TOML file to that side's configuration, so one tree given twice
compares two settings (`[encryption] enabled = false` and `true`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from harness import HERE, alternating, change, paired_changes

CHILD = r'''
import asyncio, json, sys, tempfile, time
from datetime import UTC, datetime
from pathlib import Path
from gateway.config.settings import load_config
from gateway.mail.parse import parse_email
from gateway.model import Channel, Consent, ConsentKind, OutboundMessage, TelephonyContent
from gateway.pipeline.process import delivery_key
from gateway.runtime.clock import Clock
from gateway.server import Services
from harness import free_port, gateway_config

NOON_NY = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
# nothing listens on the ports; argv[3]: TOML appended (one side's settings)
CONFIG = gateway_config({"smtp": free_port(), "http": free_port()}) + sys.argv[3]
BODY = "Hi Bob,\n\n" + "Would a short call next week work for you? " * 40 + "\n\nKatie\n"

def email(n, account):
    raw = (f"From: Katie <katie@example.com>\r\nTo: lead{n}@client.example.net\r\n"
           f"Subject: Fleet costs {n}\r\nMessage-ID: <m{n}@example.com>\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\n{BODY}").replace("\n", "\r\n").encode()
    return OutboundMessage(
        id=f"e{n}", channel=Channel.EMAIL, ingress="smtp", account=account,
        envelope_sender="katie@example.com", recipients=(f"lead{n}@client.example.net",),
        received_at=NOON_NY, idempotency_key=delivery_key("bench", "katie@example.com", raw),
        email=parse_email(raw))

def number(n):
    return f"+1212{420 + n // 10000 % 80}{n % 10000:04d}"

def text(n, account):
    form = (("To", number(n)), ("From", "+14155550100"), ("Body", "Is fleet upkeep on your list?"))
    return OutboundMessage(
        id=f"t{n}", channel=Channel.SMS, ingress="twilio", account=account,
        envelope_sender="+14155550100", recipients=(number(n),), received_at=NOON_NY,
        telephony=TelephonyContent("+14155550100", form[2][1], form))

async def main(kind, count):
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "gateway.toml").write_text(CONFIG)
        config = load_config(Path(directory) / "gateway.toml")
        services = Services(config, Clock(NOON_NY))
        await services.open()
        await services.start_upstreams()
        account = config.accounts[0]
        obtained = datetime(2020, 1, 1, tzinfo=UTC)
        await services.store.add_consents([
            Consent(number(n), Channel.SMS, ConsentKind.EXPRESS_WRITTEN, obtained, None, "bench")
            for n in range(4 * count)])
        make = email if kind == "email" else text
        results = {}
        offset = 0
        for label, concurrency in (("one at a time", 1), ("32 at once", 32)):
            messages = [make(offset + n, account) for n in range(count)]
            offset += count
            started, cpu = time.perf_counter(), time.process_time()
            queue = iter(messages)
            async def worker():
                for message in queue:
                    outcome = await services.pipeline.process(message)
                    assert outcome.delivered, outcome.decision
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall, spent = time.perf_counter() - started, time.process_time() - cpu
            results[label] = {"per_s": count / wall, "cpu_ms": spent / count * 1000}
        await services.close()
        print(json.dumps(results))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def measure(tree: Path, kind: str, messages: int, extra: str) -> dict[str, dict[str, float]]:
    """The tree's gateway package, this bench/'s harness (the same configuration for both,
    and `extra` appended to it)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(messages), extra],
        env={**os.environ, "PYTHONPATH": f"{tree}:{HERE}"}, cwd=tree,
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--before-config", type=Path, help="TOML appended on the before side")
    parser.add_argument("--after-config", type=Path, help="TOML appended on the after side")
    arguments = parser.parse_args()
    trees = {"before": arguments.before, "after": arguments.after}
    extra = {name: path.read_text() if path else ""
             for name, path in (("before", arguments.before_config),
                                ("after", arguments.after_config))}
    rounds: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for number, kind, name, tree in alternating(trees, arguments.rounds, ("email", "text")):
        for label, result in measure(tree, kind, arguments.messages, extra[name]).items():
            rounds.setdefault((kind, label, name), []).append(result)
            print(f"round {number} {kind} {label} {name}: {result['per_s']:.0f}/s, "
                  f"{result['cpu_ms']:.3f} ms CPU", flush=True)
    report = {}
    for kind in ("email", "text"):
        for label in ("one at a time", "32 at once"):
            row = {}
            for name in trees:
                results = rounds[kind, label, name]
                row[name] = {
                    "per_s": round(statistics.median(r["per_s"] for r in results), 1),
                    "cpu_ms": round(statistics.median(r["cpu_ms"] for r in results), 3),
                }
            row["change"] = change(row["after"]["per_s"], row["before"]["per_s"])
            row["cpu_change"] = change(row["after"]["cpu_ms"], row["before"]["cpu_ms"])
            row["paired_changes"] = paired_changes(
                (r["per_s"] for r in rounds[kind, label, "after"]),
                (r["per_s"] for r in rounds[kind, label, "before"]),
            )
            report[f"{kind}, {label}"] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
