"""What encryption at rest costs the send path: the same gateway with `[encryption] enabled =
false` and `enabled = true` (explicit keys, bench_store.ENCRYPTION), in the same run on the
same machine.

Both gateways (`workers = 2`, SQLite, as an operator runs them on this 2-core machine) stay
up for the whole comparison, each delivering email to one shared SMTP sink (as
bench_smtp.py) and texts to one shared fake Twilio (as bench_twilio_http.py), with the same
express written consents imported before it starts. Every round measures each kind on
each gateway, the one that goes first taking turns (`harness.alternating`), so drift in the
machine's speed falls on both. Kinds:
- `smtp`: 20 KB multipart messages over 10 reused aiosmtplib connections with AUTH, each
  checked against the sink's count (bench_smtp.measured);
- `email`: POST /email, 64 connections back to back (bench_http.email_request);
- `text`: POST Messages.json, 32 connections back to back, each gateway texting its own
  first consented numbers in numeric order (bench_twilio_http.messages_request);
- `text_any_order`: the same, to the second half of the consented numbers in an order
  unrelated to their value (a stride through them). Every table a text looks its
  recipient up in is keyed by it: in numeric order, consecutive texts land on the same
  index pages with encryption off, while blind indexes scatter them either way. Both
  kinds are measured so that the texts' cost is not read off that locality alone.
Each run is a closed loop for SECONDS: messages/s, and the CPU the gateway's processes spent
per answered message (read from /proc), which depends far less on how busy the machine is.
The cost is judged on the median of the rounds' own changes (run.py): a round's two runs were
back to back, so a slow spell on the machine falls on both.

    python bench/bench_encryption.py  (BENCH_ENCRYPTION_ROUNDS, BENCH_ENCRYPTION_SECONDS)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import bench_smtp
import bench_twilio_http as twilio
from bench_http import email_request
from bench_store import ENCRYPTION
from harness import (
    GATEWAY_SECRET,
    HOST,
    Request,
    alternating,
    change,
    closed_loop_http,
    fake,
    free_port,
    gateway,
    paired_changes,
    with_cpu_per_message,
)

ROUNDS = int(os.environ.get("BENCH_ENCRYPTION_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_ENCRYPTION_SECONDS", "8"))
WORKERS = 2
SETTINGS = {"off": "\n[encryption]\nenabled = false\n", "on": ENCRYPTION}
KINDS = ("smtp", "email", "text", "text_any_order")
CONCURRENCY = {"smtp": 10, "email": 64, "text": 32, "text_any_order": 32}
ANY_ORDER_STRIDE = 7_919
"""A prime not dividing half of bench_twilio_http.CONSENTED: the stride visits every number
of that half once before repeating."""
SMTP_SIZE = "20 KB multipart + attachment"


def own_numbering(request: Request, place: Callable[[int], int] = int) -> Request:
    """`request` numbered from 0 by its own count (then `place`d): each gateway texts its
    own consented numbers, whatever the other gateway's runs sent."""
    indices = itertools.count()

    async def send(http: aiohttp.ClientSession, _index: int) -> bool:
        return await request(http, place(next(indices)))

    return send


def any_order(count: int) -> int:
    """The count-th number of the second half of the consented ones, by stride."""
    half = twilio.CONSENTED // 2
    return half + count * ANY_ORDER_STRIDE % half


@contextlib.contextmanager
def gateways(directory: Path) -> Iterator[dict[str, dict]]:
    """The sink, the fake Twilio and a gateway per setting, all stopped on the way out."""
    with contextlib.ExitStack() as stack:
        sink_port, twilio_port = free_port(), free_port()
        stack.enter_context(fake("fake_smtp_sink.py", directory, sink_port))
        stack.enter_context(fake("fake_twilio.py", directory, twilio_port))
        upstreams = (bench_smtp.GATEWAY_UPSTREAM.format(
            sink=sink_port, pool=bench_smtp.POOL_SIZE // WORKERS)
            + twilio.GATEWAY_UPSTREAM.format(fake=twilio_port))
        served = {}
        for name, section in SETTINGS.items():
            home = directory / name
            home.mkdir()
            running = stack.enter_context(gateway(
                home, upstreams + section, now=twilio.NOON_IN_NEW_YORK, workers=WORKERS,
                prepare=twilio.record_consents))
            base = f"http://{HOST}:{running['http']}"
            served[name] = {
                "pid": running["pid"], "sink": sink_port,
                "smtp": bench_smtp.Target(f"gateway, encryption {name}", running["smtp"],
                                          login=True, pid=running["pid"]),
                "email": email_request(base, GATEWAY_SECRET),
                "text": own_numbering(twilio.messages_request(
                    base, twilio.basic("bench", GATEWAY_SECRET))),
                "text_any_order": own_numbering(twilio.messages_request(
                    base, twilio.basic("bench", GATEWAY_SECRET)), any_order),
            }
        yield served


async def run_once(served: dict, kind: str, ids: Iterator[int], seconds: float) -> dict:
    """One closed-loop run of `kind` against one gateway: messages/s, errors, CPU/message."""
    if kind == "smtp":
        load = bench_smtp.measured(served["smtp"], served["sink"],
                                   bench_smtp.MESSAGES[SMTP_SIZE], CONCURRENCY[kind], True,
                                   ids, seconds=seconds)
    else:
        load = closed_loop_http(served[kind], CONCURRENCY[kind], seconds)
    result = await with_cpu_per_message({"gateway": served["pid"]}, load)
    lost = result["ok"] - result.get("delivered_to_sink", result["ok"])
    return {"per_s": result.get("messages_per_s", result.get("requests_per_s")),
            "cpu_ms": result["cpu_ms_per_message"].get("gateway", 0.0), "ok": result["ok"],
            "errors": result["errors"] + lost, "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"]}


async def compare(directory: Path, served: dict[str, dict]) -> dict[str, dict[str, list[dict]]]:
    ids = itertools.count()
    for kind in KINDS:  # warm-up: imports, pools, SQLite pages, the upstream connections
        for name in SETTINGS:
            await run_once(served[name], kind, ids, 1.0)
    runs: dict[str, dict[str, list[dict]]] = {kind: {name: [] for name in SETTINGS}
                                              for kind in KINDS}
    homes = {name: directory / name for name in SETTINGS}
    for number, kind, name, _ in alternating(homes, ROUNDS, KINDS):
        result = await run_once(served[name], kind, ids, SECONDS)
        runs[kind][name].append(result)
        print(f"encryption round {number} {kind:5} {name:3}: {result['per_s']:8} msg/s, "
              f"{result['cpu_ms']:.3f} ms CPU/message, {result['errors']} errors",
              flush=True)
    return runs


def summary(runs: dict[str, list[dict]]) -> dict:
    """Medians of each side's rounds, the cost of encryption in throughput and in CPU, and
    each round's own change (its two runs were back to back: their spread is the noise)."""
    median = {name: {"per_s": round(statistics.median(r["per_s"] for r in side), 1),
                     "cpu_ms": round(statistics.median(r["cpu_ms"] for r in side), 3)}
              for name, side in runs.items()}
    off, on = median["off"], median["on"]
    return {
        "off": off, "on": on,
        "throughput_change": change(on["per_s"], off["per_s"]),
        "cpu_change": change(on["cpu_ms"], off["cpu_ms"]),
        "paired_throughput_changes": paired_changes((r["per_s"] for r in runs["on"]),
                                                    (r["per_s"] for r in runs["off"])),
        "paired_cpu_changes": paired_changes((r["cpu_ms"] for r in runs["on"]),
                                             (r["cpu_ms"] for r in runs["off"])),
        "errors": sum(r["errors"] for side in runs.values() for r in side),
        "runs": runs,
    }


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as name, \
            gateways(Path(name)) as served:
        runs = asyncio.run(compare(Path(name), served))
    return {
        "benchmark": "encryption at rest off vs on, same run, gateway workers = "
                     f"{WORKERS}, SQLite",
        "rounds": ROUNDS, "seconds_per_run": SECONDS, "concurrency": CONCURRENCY,
        "smtp_size": SMTP_SIZE, "message_bytes": len(bench_smtp.MESSAGES[SMTP_SIZE]),
        "results": {kind: summary(runs[kind]) for kind in KINDS},
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
