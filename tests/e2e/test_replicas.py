"""Two real gateway processes on one PostgreSQL database agree, as replicas behind a load
balancer must: an opt-out taken by one holds on the other's next message, a frequency cap
holds across both under concurrent sends, and the audit chain stays linear."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import DEMO_SECRET, start_postgres_server, write_config
from tests.postgres_server import PostgresServer, free_port
from tests.test_cli import cli

# A Tuesday, 16:00 UTC: noon in New York and Florida, inside every calling window.
NOW = "2026-06-02T16:00:00+00:00"
SID = "AC00000000000000000000000000000000"
NY = "+12125550123"
FL = "+13055550123"
FROM = "+14155550100"
ADMIN_SECRET = "admin-secret-0123456789"
ERASURE_KEY = "replicas-share-one-erasure-key-0123456789"
DATA_KEY = base64.b64encode(b"replicas share one data key 0123").decode()
TWILIO_AUTH_TOKEN = "gateway-twilio-auth-token-0123"

EXTRA = f"""
[upstream.twilio]
kind = "outbox"
account_sid = "{SID}"
auth_token = "{TWILIO_AUTH_TOKEN}"

[privacy]
erasure_key = "{ERASURE_KEY}"

[encryption]
keys = {{ r1 = "{DATA_KEY}" }}

[[accounts]]
name = "ops"
secret = "{ADMIN_SECRET}"
role = "admin"
sender_domains = []
"""


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


DEMO_AUTH = basic("demo", DEMO_SECRET)
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_SECRET}"}


@dataclass
class Replica:
    directory: Path
    config: Path
    http_port: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def outbox(self) -> list[Path]:
        return sorted((self.directory / "var" / "outbox" / "twilio").glob("*.json"))


def start_replica(directory: Path, store_url: str) -> Replica:
    """One `compliance-gateway serve` process with its own data_dir and ports; the same
    database, token keys, erasure key and data key as its peers."""
    directory.mkdir()
    http_port = free_port()
    config = write_config(directory, EXTRA)
    text = config.read_text().replace('url = "sqlite:///var/gateway.db"', f'url = "{store_url}"')
    listen = '[http]\nlisten = "127.0.0.1:{}"'
    text = text.replace(listen.format(0), listen.format(http_port))
    config.write_text(text)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--now", NOW],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=(directory / "stderr.log").open("wb"),
    )
    assert process.stdout is not None
    banner = process.stdout.readline().decode()
    if "listening" not in banner:
        process.kill()
        raise RuntimeError(f"replica did not start: {(directory / 'stderr.log').read_text()}")
    return Replica(directory, config, http_port, process)


def record_written_consents(replica: Replica) -> None:
    """Marketing texts of an AI agent need prior express written consent (FCC 24-17)."""
    for number in (NY, FL):
        added = cli(replica.config, "consent", "add", number, "--channel", "sms", "--kind",
                    "express-written", "--obtained-at", "2025-01-01T00:00:00+00:00",
                    "--source", "signed web form")
        assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def replicas(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    postgres_server.sql("CREATE DATABASE replicas")
    url = postgres_server.url("replicas")
    root = tmp_path_factory.mktemp("replicas")
    started = [start_replica(root / name, url) for name in ("a", "b")]
    record_written_consents(started[0])
    yield started[0], started[1]
    for replica in started:
        replica.process.send_signal(signal.SIGTERM)
    for replica in started:
        replica.process.wait(timeout=30)
    postgres_server.sql("DROP DATABASE replicas WITH (FORCE)")


async def send_sms(http: aiohttp.ClientSession, replica: Replica, to: str, body: str):
    url = f"{replica.base}/2010-04-01/Accounts/{SID}/Messages.json"
    form = {"To": to, "From": FROM, "Body": body}
    async with http.post(url, data=form, headers=DEMO_AUTH) as response:
        return response.status, await response.json()


async def suppress(http: aiohttp.ClientSession, replica: Replica, *addresses: str) -> int:
    async with http.post(
        f"{replica.base}/v1/suppressions",
        json={"addresses": list(addresses), "reason": "asked by phone"},
        headers=ADMIN_AUTH,
    ) as response:
        return response.status


async def test_an_opt_out_taken_by_one_replica_holds_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    async with aiohttp.ClientSession() as http:
        status, _ = await send_sms(http, b, NY, "Hi, a quick question?")
        assert status == 201
        assert await suppress(http, a, NY) == 200
        status, refused = await send_sms(http, b, NY, "Hi again")
    assert status == 400
    assert refused["code"] == 21610
    assert len(b.outbox()) == 1


async def test_a_frequency_cap_holds_across_replicas_under_concurrent_sends(
    replicas: tuple[Replica, Replica],
) -> None:
    """Florida allows three marketing texts a day; twenty arrive at once, half at each."""
    async with aiohttp.ClientSession() as http:
        results = await asyncio.gather(
            *(send_sms(http, replicas[n % 2], FL, f"offer {n}") for n in range(20))
        )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 3 + [400] * 17
    assert all("FREQUENCY_CAP" in body["message"] for status, body in results if status == 400)
    sent = [json.loads(p.read_text()) for replica in replicas for p in replica.outbox()]
    assert sum(message["To"] == FL for message in sent) == 3


async def test_the_audit_chain_stays_linear_with_concurrent_writers(
    replicas: tuple[Replica, Replica],
) -> None:
    """Each suppression is audited by the replica that took it; both write at once."""
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(
            *(suppress(http, replicas[n % 2], f"user{n}@client.example.net") for n in range(40))
        )
    assert statuses == [200] * 40
    config = str(replicas[0].config)
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", config],
        cwd=replicas[0].directory, capture_output=True, text=True, timeout=60, check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain intact" in verified.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "list", "--config", config],
        cwd=replicas[0].directory, capture_output=True, text=True, timeout=60, check=True,
    )
    subjects = [json.loads(line)["subject"] for line in listed.stdout.splitlines()]
    assert sum("@client.example.net" in subject for subject in subjects) == 40


async def signed_webhook(
    http: aiohttp.ClientSession, replica: Replica, params: dict[str, str]
) -> tuple[int, str]:
    """Signed as Twilio signs it, for the URL Twilio was given: the shared public_url."""
    url = "https://gw.example.com/webhooks/twilio"
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, params)
    async with http.post(f"{replica.base}/webhooks/twilio", data=params,
                         headers={"X-Twilio-Signature": signature}) as response:
        return response.status, await response.text()


async def test_a_webhook_replayed_to_the_other_replica_changes_nothing(
    replicas: tuple[Replica, Replica],
) -> None:
    """Replicas share the processed MessageSids through the database (issue 18, item 14): a
    STOP taken by one and lifted by an operator is not taken again when the same signed
    request reaches the other."""
    a, b = replicas
    number = "+12025550147"
    stop = {"MessageSid": "SM" + "5" * 32, "From": number, "To": FROM, "Body": "STOP"}
    async with aiohttp.ClientSession() as http:
        status, reply = await signed_webhook(http, a, stop)
        assert (status, reply.count("<Message>")) == (200, 1)
        async with http.delete(f"{b.base}/v1/suppressions/{number}", headers=ADMIN_AUTH) as r:
            assert r.status == 200

        status, reply = await signed_webhook(http, b, stop)
        assert (status, "<Message>" in reply) == (200, False)
        async with http.get(f"{a.base}/v1/suppressions", params={"address": number},
                            headers=ADMIN_AUTH) as r:
            assert (await r.json())["suppressions"] == []


async def test_a_replica_fails_closed_while_postgresql_is_down_and_recovers(
    tmp_path: Path,
) -> None:
    """A server of its own, stopped under a running gateway: texts get a temporary failure
    (never sent unchecked), /readyz turns unready, and both come back with the database."""
    server = start_postgres_server()
    replica = start_replica(tmp_path / "solo", server.url())
    record_written_consents(replica)
    try:
        async with aiohttp.ClientSession() as http:
            server.stop()
            status, _ = await send_sms(http, replica, NY, "while the database is down")
            assert status == 503
            async with http.get(f"{replica.base}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["checks"]["store"] == "unavailable"
            assert replica.outbox() == []

            server.start()
            async with http.get(f"{replica.base}/readyz") as response:
                assert response.status == 200
            status, _ = await send_sms(http, replica, NY, "the database is back")
            assert status == 201
            assert len(replica.outbox()) == 1
    finally:
        replica.process.send_signal(signal.SIGTERM)
        replica.process.wait(timeout=30)
        server.destroy()
