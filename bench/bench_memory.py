"""Resident memory of the gateway process idle, under SMTP load, and taking ten 10 MB
messages at once; the raw aiosmtpd relay (fake_smtp_relay.py) goes through the same three
phases as the baseline. Sizes come from /proc/PID/status: VmRSS sampled every 50 ms while
a phase runs, and VmHWM (the kernel's own peak) at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import bench_smtp
from bench_smtp import GATEWAY_UPSTREAM, MESSAGES, POOL_SIZE, Target, measured
from harness import fake, free_port, gateway, memory_kb

LOAD_SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "5"))
LOAD_CONCURRENCY = 10
BIG_MESSAGES = 10
BIG_BYTES = 10 * 2**20


def big_message() -> bytes:
    """About BIG_BYTES on the wire: a short text and one large (base64) attachment."""
    message = bench_smtp.headed_message()
    message.set_content("Hi Bob,\n\nThe full catalogue is attached.\n\nKatie\n")
    message.add_attachment(os.urandom(BIG_BYTES * 3 // 4 - 4096), maintype="application",
                           subtype="pdf", filename="catalogue.pdf")
    return message.as_bytes(policy=bench_smtp.SMTP_POLICY)


async def sampled(pid: int, work: Awaitable[dict]) -> dict:
    """Run `work` while sampling the process's VmRSS; its result plus the memory figures."""
    peak = 0
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, memory_kb(pid)["VmRSS"])
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        result = await work
    finally:
        done = True
        await sampler
    now = memory_kb(pid)
    return {**result, "rss_peak_kb": max(peak, now["VmRSS"]), "rss_after_kb": now["VmRSS"],
            "hwm_kb": now["VmHWM"]}


async def phases(pid: int, target: Target, sink_port: int, ids: Iterator[int]) -> dict:
    await measured(target, sink_port, MESSAGES["2 KB plain"], 1, True, ids, seconds=0.5)
    await asyncio.sleep(1)
    idle = memory_kb(pid)["VmRSS"]
    load = await sampled(pid, measured(target, sink_port, MESSAGES["20 KB multipart + attachment"],
                                       LOAD_CONCURRENCY, True, ids, seconds=LOAD_SECONDS))
    big = await sampled(pid, send_big(target, sink_port, ids))
    return {"idle_rss_kb": idle, "load": load, "big": big}


async def send_big(target: Target, sink_port: int, ids: Iterator[int]) -> dict:
    """Each of BIG_MESSAGES connections sends one big message, all at the same moment."""
    template = big_message()
    started = time.perf_counter()
    result = await measured(target, sink_port, template, BIG_MESSAGES, False, ids,
                            per_worker=1)
    return {**result, "message_bytes": len(template),
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> dict:
    ids = itertools.count()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as name, \
            contextlib.ExitStack() as stack:
        directory = Path(name)
        sink_port, relay_port = free_port(), free_port()
        stack.enter_context(fake("fake_smtp_sink.py", directory, sink_port))
        relay_pid = stack.enter_context(
            fake("fake_smtp_relay.py", directory, relay_port, sink_port, POOL_SIZE)
        )
        served = stack.enter_context(
            gateway(directory, GATEWAY_UPSTREAM.format(sink=sink_port, pool=POOL_SIZE))
        )
        for target, pid in ((Target("gateway", served["smtp"], login=True), served["pid"]),
                            (Target("relay", relay_port, login=True), relay_pid)):
            results[target.name] = asyncio.run(phases(pid, target, sink_port, ids))
            print(f"memory {target.name}: idle {results[target.name]['idle_rss_kb']} KiB, "
                  f"load peak {results[target.name]['load']['rss_peak_kb']} KiB, "
                  f"10 x 10 MB peak {results[target.name]['big']['hwm_kb']} KiB", flush=True)
    return {"benchmark": "resident memory (SMTP)", "load_concurrency": LOAD_CONCURRENCY,
            "load_seconds": LOAD_SECONDS, "big_messages": BIG_MESSAGES, "results": results}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
