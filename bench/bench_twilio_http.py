"""HTTP throughput and added latency of the gateway's Twilio-shaped `Messages.json`.

The gateway (`python -m gateway serve`, `[upstream.twilio] kind = "twilio"`, SQLite,
`workers = 2` as on this 2-core machine) forwards
to a minimal fake Twilio (fake_twilio.py) in another process; the baseline is the same
request sent to that fake directly, as an agent without the gateway would. The load comes
from this process. The gateway's clock starts on a Tuesday at noon in New York (`--now`) so
that every text to a 212 number is inside the calling window; each request goes to a new
number, as a campaign would, so no frequency cap applies. A marketing text needs a recorded
consent (47 CFR 64.1200(a)(2)): the first CONSENTED numbers get an express written one
(`consent import`, before the gateway starts), as a campaign's list would have, so every
text is checked against a real consent record. Only 201 answers count, and the fake's own
count must match.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import aiohttp
from harness import (
    GATEWAY_SECRET,
    HOST,
    Request,
    compare_http,
    fake,
    free_port,
    gateway,
)

SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-twilio-auth-token-0123"
NOON_IN_NEW_YORK = "2026-06-02T16:00:00+00:00"
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "10"))
CONCURRENCY = 32
OFFERED_RATES = (100, 300)
WORKERS = 2  # as an operator runs it on this 2-core machine (`gateway.workers`)
# More numbers than a run texts (the baseline's closed loop takes the most, ~60,000).
CONSENTED = 300_000
GATEWAY_UPSTREAM = f"""
[upstream.twilio]
kind = "twilio"
base_url = "http://127.0.0.1:{{fake}}"
account_sid = "{SID}"
auth_token = "{AUTH_TOKEN}"
"""


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def number(index: int) -> str:
    """A different Manhattan number for every request (exchanges 420-499)."""
    return f"+1212{420 + index // 10_000 % 80}{index % 10_000:04d}"


def messages_request(base_url: str, authorization: str) -> Request:
    url = f"{base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    headers = {"Authorization": authorization}

    async def send(http: aiohttp.ClientSession, index: int) -> bool:
        form = {"To": number(index), "From": "+14155550100",
                "Body": "Hi, this is Katie from Example Corp: is fleet maintenance on your list?"}
        async with http.post(url, data=form, headers=headers) as response:
            await response.read()
            return response.status == 201

    return send


def record_consents(config: Path) -> None:
    """Express written consent for the first CONSENTED numbers, through the CLI."""
    consents = config.parent / "consents.csv"
    with consents.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["subject", "channel", "kind", "obtained_at", "source", "evidence"])
        writer.writerows(
            [number(index), "sms", "express-written", "2020-01-01T00:00:00+00:00", "bench", ""]
            for index in range(CONSENTED)
        )
    subprocess.run(
        [sys.executable, "-m", "gateway", "consent", "import", str(consents),
         "--config", str(config)],
        check=True, capture_output=True,
    )


def forwarded(fake_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{fake_port}/stats", timeout=10) as answer:
        return json.load(answer)["created"]


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-twilio-") as name, \
            contextlib.ExitStack() as stack:
        directory = Path(name)
        fake_port = free_port()
        fake_pid = stack.enter_context(fake("fake_twilio.py", directory, fake_port))
        served = stack.enter_context(
            gateway(directory, GATEWAY_UPSTREAM.format(fake=fake_port), now=NOON_IN_NEW_YORK,
                    workers=WORKERS, prepare=record_consents)
        )
        through_gateway = messages_request(f"http://{HOST}:{served['http']}",
                                           basic("bench", GATEWAY_SECRET))
        direct = messages_request(f"http://{HOST}:{fake_port}", basic(SID, AUTH_TOKEN))
        results = asyncio.run(compare_http(
            through_gateway, direct, concurrency=CONCURRENCY, seconds=SECONDS,
            rates=OFFERED_RATES, label="twilio",
            servers={"gateway": served["pid"], "fake upstream": fake_pid},
        ))
        created = forwarded(fake_port)
    answered = results["gateway_ok_total"] + results["baseline_ok_total"]
    print(f"twilio: max {results['gateway_max']['requests_per_s']} requests/s through the "
          f"gateway, {results['baseline_max']['requests_per_s']} direct", flush=True)
    return {
        "benchmark": "HTTP Messages.json (Twilio-shaped), fake Twilio upstream",
        "concurrency": CONCURRENCY, "seconds": SECONDS, "offered_rates": list(OFFERED_RATES),
        "workers": WORKERS,
        "answered_201": answered, "fake_twilio_created": created,
        "results": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
