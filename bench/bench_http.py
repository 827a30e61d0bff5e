"""HTTP throughput and added latency of the gateway's Postmark-shaped `/email`.

The gateway runs as its own process (`compliance-gateway serve`, outbox upstream, SQLite);
the baseline is a minimal fake Postmark in another process; the load comes from this one.
Two measurements: closed-loop maximum requests/s, and latency at a fixed offered load
(open loop, requests sent on a schedule whatever the answers do).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
TOKEN = "bench-secret-0123456789"
CONFIG = """
[gateway]
data_dir = "var"
public_url = "https://gw.example.com"
[smtp]
listen = "127.0.0.1:{smtp}"
[http]
listen = "127.0.0.1:{http}"
[sender]
name = "Example Corp"
postal_address = "548 Market St #12345, San Francisco, CA 94104"
email = "privacy@example.com"
[[accounts]]
name = "bench"
secret = "{token}"
sender_domains = ["example.com"]
[tokens]
keys = {{ k1 = "{key}" }}
"""
MESSAGE = {
    "From": "katie@example.com", "To": "bob@client.example.net", "Subject": "Fleet costs",
    "TextBody": "Hi Bob,\n\nWould a 15 minute call next week work?\n\nKatie\n" * 8,
    "HtmlBody": "<html><body><p>Hi Bob,</p><p>Would a call next week work?</p></body></html>",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never came up")


async def closed_loop(url: str, concurrency: int, seconds: float) -> dict:
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds
    headers = {"X-Postmark-Server-Token": TOKEN}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                async with http.post(url, json=MESSAGE) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests_per_s": round(done / elapsed, 1), "errors": errors, "seconds": seconds,
            "concurrency": concurrency}


async def open_loop(url: str, rate: float, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    headers = {"X-Postmark-Server-Token": TOKEN}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            async with http.post(url, json=MESSAGE) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

        tasks = []
        begin = time.perf_counter()
        for index in range(int(rate * seconds)):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {"offered_per_s": rate, "requests": len(latencies), "errors": errors,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


OFFERED_RATES = (50, 100)


async def measure(gateway_url: str, baseline_url: str) -> dict:
    await closed_loop(gateway_url, 16, 2)  # warm-up
    results = {
        "gateway_max": await closed_loop(gateway_url, 32, 10),
        "baseline_max": await closed_loop(baseline_url, 32, 5),
    }
    for rate in OFFERED_RATES:
        results[f"gateway_at_{rate}"] = await open_loop(gateway_url, rate, 10)
        results[f"baseline_at_{rate}"] = await open_loop(baseline_url, rate, 10)
        results[f"added_p99_ms_at_{rate}"] = round(
            results[f"gateway_at_{rate}"]["p99_ms"] - results[f"baseline_at_{rate}"]["p99_ms"], 2
        )
    return results


def main() -> dict:
    with tempfile.TemporaryDirectory() as directory:
        smtp, http, base = free_port(), free_port(), free_port()
        config = Path(directory) / "gateway.toml"
        config.write_text(CONFIG.format(smtp=smtp, http=http, token=TOKEN, key="k" * 40))
        env = dict(os.environ)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        baseline = subprocess.Popen([sys.executable, str(HERE / "fake_postmark.py"), str(base)])
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{http}/healthz"))
            asyncio.run(wait_ready(f"http://127.0.0.1:{base}/email"))
            results = asyncio.run(measure(f"http://127.0.0.1:{http}/email",
                                          f"http://127.0.0.1:{base}/email"))
        finally:
            for process in (gateway, baseline):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    return {"benchmark": "HTTP /email (Postmark-shaped), outbox upstream", "results": results}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
