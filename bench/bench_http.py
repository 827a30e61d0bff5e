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
    compare_http,
    fake,
    free_port,
    gateway,
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


def outbox_files(directory: Path) -> int:
    return len(list((directory / "var" / "outbox" / "email").glob("*.eml")))


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name, \
            contextlib.ExitStack() as stack:
        directory = Path(name)
        fake_port = free_port()
        fake_pid = stack.enter_context(fake("fake_postmark.py", directory, fake_port))
        direct = email_request(f"http://{HOST}:{fake_port}", "baseline")
        one_worker = directory / "one-worker"
        one_worker.mkdir()
        with gateway(one_worker) as served:
            single = email_request(f"http://{HOST}:{served['http']}", GATEWAY_SECRET)
            one_worker_max = asyncio.run(closed_loop_http(single, CONCURRENCY, SECONDS))
        served = stack.enter_context(gateway(directory, workers=WORKERS))
        through_gateway = email_request(f"http://{HOST}:{served['http']}", GATEWAY_SECRET)
        results = asyncio.run(compare_http(
            through_gateway, direct, concurrency=CONCURRENCY, seconds=SECONDS,
            rates=OFFERED_RATES, label="/email",
            servers={"gateway": served["pid"], "fake upstream": fake_pid},
        ))
        results["gateway_one_worker_max"] = one_worker_max
        written = outbox_files(directory) + outbox_files(one_worker)
    answered = results["gateway_ok_total"] + one_worker_max["ok"]
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
