"""A real Prometheus (Debian's `prometheus`, installed by `make test` as root) scrapes a running
gateway on loopback and loads deploy/prometheus/alerts.yml; its HTTP API shows what it saw."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.server import Gateway
from tests.conftest import DEMO_SECRET

PROMETHEUS = shutil.which("prometheus")
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
JOB = "compliance-gateway"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not found: it comes with Debian's `prometheus` package, which "
    "`make test` installs when run as root",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def prometheus(gateway: Gateway, tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus scraping `gateway` every second, with the alert rules; its API base URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway.http_port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
        log.close()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    """The instant vector for `promql`; empty while Prometheus is starting or has no data."""
    try:
        async with http.get(f"{base}/api/v1/query", params={"query": promql}) as response:
            if response.status != 200:
                return []
            return (await response.json())["data"]["result"]
    except aiohttp.ClientConnectionError:
        return []


async def wait_for_series(
    http: aiohttp.ClientSession, base: str, promql: str, count: int
) -> list[dict]:
    """Poll (bounded: 600 times 100 ms) until `promql` returns `count` series."""
    for _ in range(600):
        result = await query(http, base, promql)
        if len(result) >= count:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"Prometheus never returned {count} series for {promql}")


async def post_email(http: aiohttp.ClientSession, gateway: Gateway, subject: str) -> int:
    async with http.post(
        f"http://127.0.0.1:{gateway.http_port}/email",
        json={
            "From": "katie@example.com",
            "To": "bob@client.example.net",
            "Subject": subject,
            "TextBody": "Hi Bob, would a call work?",
        },
        headers={"X-Postmark-Server-Token": DEMO_SECRET},
    ) as response:
        return response.status


async def test_prometheus_scrapes_message_counts_and_loads_the_alert_rules(
    gateway: Gateway, prometheus: str
) -> None:
    async with aiohttp.ClientSession() as http:
        assert await post_email(http, gateway, "Fleet maintenance costs") == 200
        assert await post_email(http, gateway, "Re: our call") == 422
        series = await wait_for_series(http, prometheus, "gateway_messages_total", 2)
        async with http.get(f"{prometheus}/api/v1/rules") as response:
            groups = (await response.json())["data"]["groups"]
        store_up = await wait_for_series(http, prometheus, "gateway_store_up", 1)

    by_outcome = {s["metric"]["outcome"]: s for s in series}
    allowed, blocked = by_outcome["allowed"], by_outcome["blocked"]
    instance = f"127.0.0.1:{gateway.http_port}"
    assert allowed["metric"] == {
        "__name__": "gateway_messages_total",
        "job": JOB,
        "instance": instance,
        "channel": "email",
        "outcome": "allowed",  # reason="" is no label in Prometheus
    }
    assert blocked["metric"]["reason"] == "DECEPTIVE_SUBJECT"
    assert blocked["metric"]["channel"] == "email"
    assert (allowed["value"][1], blocked["value"][1]) == ("1", "1")
    assert store_up[0]["value"][1] == "1"
    assert {g["name"] for g in groups} == {
        "compliance-gateway-recording", "compliance-gateway", "compliance-gateway-keys"
    }
    rules = [r for g in groups for r in g["rules"]]
    assert "GatewayCallingWindowBlocksSurge" in {r["name"] for r in rules}
    assert all(r["health"] in ("ok", "unknown") for r in rules), rules
