"""HTTP throughput and added latency of the gateway's Postmark-shaped `/email`.

The gateway (`python -m gateway serve`, outbox upstream with durable writes, SQLite) runs
as an operator would run it on this 2-core machine, `workers = 2`, and again with one worker
for comparison; the baseline is the same request sent to a minimal fake Postmark
(fake_postmark.py) in another process, as an agent without the gateway would. The load comes
from this process. Each request goes to a new recipient at one of a few hundred domains, as
a campaign would (no cache sees the same address twice). Only 200 answers count, and the
outbox must hold one `.eml` per 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path

import aiohttp
from harness import (
    GATEWAY_SECRET,
    HOST,
    Request,
    closed_loop_http,
    fake,
    free_port,
    gateway,
    open_loop_http,
)

SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "10"))
CONCURRENCY = 64
OFFERED_RATES = (100, 300, 1500)
WORKERS = 2
TEXT = "Hi {name},\n\nWould a 15 minute call next week work to talk about fleet costs?\n\nKatie\n"
HTML = ("<html><body><p>Hi {name},</p><p>Would a 15 minute call next week work to talk about "
        "fleet costs?</p><p>Katie</p></body></html>")


def email_request(base_url: str, token: str) -> Request:
    url = f"{base_url}/email"
    headers = {"X-Postmark-Server-Token": token, "Accept": "application/json"}

    async def send(http: aiohttp.ClientSession, index: int) -> bool:
        name = f"prospect{index}"
        message = {
            "From": "Katie <katie@example.com>", "To": f"{name}@client{index % 300}.example.net",
            "Subject": "Fleet costs", "TextBody": TEXT.format(name=name),
            "HtmlBody": HTML.format(name=name), "MessageStream": "outbound",
        }
        async with http.post(url, json=message, headers=headers) as response:
            await response.read()
            return response.status == 200

    return send


async def measure(through_gateway: Request, direct: Request) -> dict:
    results = {
        "warmup": await closed_loop_http(through_gateway, 8, 2),
        "gateway_max": await closed_loop_http(through_gateway, CONCURRENCY, SECONDS),
        "baseline_max": await closed_loop_http(direct, CONCURRENCY, SECONDS / 2),
    }
    for rate in OFFERED_RATES:
        gateway_run = await open_loop_http(through_gateway, rate, SECONDS)
        baseline_run = await open_loop_http(direct, rate, SECONDS)
        results[f"gateway_at_{rate}"] = gateway_run
        results[f"baseline_at_{rate}"] = baseline_run
        results[f"added_p99_ms_at_{rate}"] = round(
            gateway_run["p99_ms"] - baseline_run["p99_ms"], 2
        )
        print(f"/email at {rate}/s: gateway p99 {gateway_run['p99_ms']} ms, "
              f"baseline p99 {baseline_run['p99_ms']} ms", flush=True)
    return results


def outbox_files(directory: Path) -> int:
    return len(list((directory / "var" / "outbox" / "email").glob("*.eml")))


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name, \
            contextlib.ExitStack() as stack:
        directory = Path(name)
        fake_port = free_port()
        stack.enter_context(fake("fake_postmark.py", directory, fake_port))
        direct = email_request(f"http://{HOST}:{fake_port}", "baseline")
        one_worker = directory / "one-worker"
        one_worker.mkdir()
        with gateway(one_worker) as served:
            single = email_request(f"http://{HOST}:{served['http']}", GATEWAY_SECRET)
            one_worker_max = asyncio.run(closed_loop_http(single, CONCURRENCY, SECONDS))
        served = stack.enter_context(gateway(directory, workers=WORKERS))
        through_gateway = email_request(f"http://{HOST}:{served['http']}", GATEWAY_SECRET)
        results = asyncio.run(measure(through_gateway, direct))
        results["gateway_one_worker_max"] = one_worker_max
        written = outbox_files(directory) + outbox_files(one_worker)
    answered = sum(
        run["ok"] for key, run in results.items()
        if key.startswith(("warmup", "gateway_")) and isinstance(run, dict)
    )
    print(f"/email: max {results['gateway_max']['requests_per_s']} requests/s through the "
          f"gateway ({WORKERS} workers), {one_worker_max['requests_per_s']} with one, "
          f"{results['baseline_max']['requests_per_s']} direct", flush=True)
    return {
        "benchmark": f"HTTP /email (Postmark-shaped), outbox upstream, workers = {WORKERS}",
        "concurrency": CONCURRENCY, "seconds": SECONDS, "offered_rates": list(OFFERED_RATES),
        "workers": WORKERS, "answered_200": answered, "outbox_files": written,
        "results": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
