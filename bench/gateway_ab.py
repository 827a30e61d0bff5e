"""What a change costs the whole gateway per message, measured between two source trees: each
round starts `gateway serve` (workers = 2, SQLite) from one tree, then from the other
(alternating which goes first), offers the same open-loop load below capacity (`--rate`
requests/s for `--seconds`), and reads the CPU time the gateway's processes spent per
answered request from /proc. CPU per message, unlike throughput, hardly depends on how busy
the machine is, so a shared machine still compares the two trees; throughput follows from
it where the gateway is the bottleneck.

    python bench/gateway_ab.py BEFORE_TREE AFTER_TREE [--rounds 3] [--rate 100] [--seconds 10]

Each tree must hold this bench/ directory (harness.py, bench_http.py, bench_twilio_http.py):
the run in each tree imports its own copy, and its gateway runs from that tree
(PYTHONPATH). Kinds: `email` (POST /email to the outbox upstream, as bench_http.py) and
`text` (Messages.json to the fake Twilio, each number with an express written consent, as
bench_twilio_http.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from harness import alternating, change, paired_changes

CHILD = r'''
import asyncio, contextlib, json, sys, tempfile
from pathlib import Path
import bench_twilio_http as twilio
from bench_http import email_request
from harness import GATEWAY_SECRET, HOST, cpu_used_s, fake, free_port, gateway, open_loop_http

kind, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
twilio.CONSENTED = int(rate * seconds) + 1000  # the numbers this run texts, not 300,000

async def load(request, servers):
    await open_loop_http(request, min(rate, 20), 1)  # warm-up: first imports, connections
    before = cpu_used_s(servers)
    result = await open_loop_http(request, rate, seconds)
    after = cpu_used_s(servers)
    return result, {name: after[name] - before[name] for name in servers}

with tempfile.TemporaryDirectory(prefix="bench-ab-") as name, contextlib.ExitStack() as stack:
    directory = Path(name)
    if kind == "email":
        served = stack.enter_context(gateway(directory, workers=2))
        request = email_request(f"http://{HOST}:{served['http']}", GATEWAY_SECRET)
    else:
        port = free_port()
        stack.enter_context(fake("fake_twilio.py", directory, port))
        served = stack.enter_context(gateway(
            directory, twilio.GATEWAY_UPSTREAM.format(fake=port), now=twilio.NOON_IN_NEW_YORK,
            workers=2, prepare=twilio.record_consents))
        request = twilio.messages_request(f"http://{HOST}:{served['http']}",
                                          twilio.basic("bench", GATEWAY_SECRET))
    result, spent = asyncio.run(load(request, {"gateway": served["pid"]}))
    print(json.dumps({"ok": result["ok"], "errors": result["errors"],
                      "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                      "cpu_ms": spent["gateway"] / max(result["ok"], 1) * 1000}))
'''


def measure(tree: Path, kind: str, rate: float, seconds: float) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(rate), str(seconds)],
        env={**os.environ, "PYTHONPATH": f"{tree}:{tree / 'bench'}"}, cwd=tree / "bench",
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree} {kind}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kinds", default="email,text")
    arguments = parser.parse_args()
    trees = {"before": arguments.before.resolve(), "after": arguments.after.resolve()}
    kinds = arguments.kinds.split(",")
    runs: dict[tuple[str, str], list[dict]] = {}
    for number, kind, name, tree in alternating(trees, arguments.rounds, kinds):
        result = measure(tree, kind, arguments.rate, arguments.seconds)
        runs.setdefault((kind, name), []).append(result)
        print(f"round {number} {kind} {name}: {result['cpu_ms']:.3f} ms CPU a message, "
              f"{result['ok']} ok, {result['errors']} errors, p50 {result['p50_ms']} ms",
              flush=True)
    report = {}
    for kind in kinds:
        before, after = runs[kind, "before"], runs[kind, "after"]
        cpu = {name: round(statistics.median(r["cpu_ms"] for r in runs[kind, name]), 3)
               for name in trees}
        report[kind] = {"cpu_ms_median": cpu,
                        "cpu_change": change(cpu["after"], cpu["before"]),
                        "paired_cpu_changes": paired_changes(
                            (r["cpu_ms"] for r in after), (r["cpu_ms"] for r in before)),
                        "errors": sum(r["errors"] for r in before + after)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
