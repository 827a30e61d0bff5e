"""Load with faults: 10,000 messages through SMTP, and 10,000 through the Postmark-shaped
API, while the fake upstream fails 10% of its deliveries at random and the store goes down
for a stretch in the middle.

Agents retry what was refused temporarily, as real ones do. Afterwards: every message the
gateway answered with success arrived at the fake upstream exactly once; no message was
answered with success while the store was down; nothing arrived unrewritten. No timing is
asserted; each test holds its own deadline only so that a hang fails instead of stalling CI.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import aiosmtplib
import pytest

from gateway.config.settings import Config
from gateway.pipeline.process import STALE_DELIVERY_CLAIM_S
from gateway.runtime.clock import Clock
from gateway.server import Gateway
from gateway.store import open_store
from tests.conftest import DEMO_SECRET
from tests.fakes.clock import SteppingClock
from tests.fakes.postmark import SERVER_TOKEN, FakePostmark
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.store import FlakyStore

MESSAGES = 10_000
FAILURE_RATE = 0.10
OUTAGE = range(4_000, 4_300)  # the store is down from the 4,000th answer to the 4,300th
MAX_ATTEMPTS = len(OUTAGE) + 50
"""An agent retrying at once may spend the whole outage on one message while the others'
sends are slow (a loaded machine): it must never give up for that alone. Beyond the
outage, 50 attempts each failing at FAILURE_RATE do not all fail."""
DEADLINE_S = 600


@dataclass
class Ledger:
    """What the agents were told, and whether the store was down the whole time."""

    store: FlakyStore
    answers: int = 0
    outages: int = 0
    successes: list[str] = field(default_factory=list)
    during_outage: list[tuple[str, int]] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)

    async def attempt(self, key: str, send: Callable[[], Awaitable[int]]) -> int:
        down_at_start, outage_at_start = self.store.down, self.outages
        status = await send()
        if down_at_start and self.store.down and self.outages == outage_at_start:
            self.during_outage.append((key, status))
        self.answers += 1
        self._move_outage()
        return status

    def _move_outage(self) -> None:
        if self.answers in (OUTAGE.start, OUTAGE.stop):
            self.store.down = self.answers == OUTAGE.start
            self.outages += 1

    async def until_success(self, key: str, send: Callable[[], Awaitable[int]]) -> None:
        for _ in range(MAX_ATTEMPTS):
            if await self.attempt(key, send) == 200:
                self.successes.append(key)
                return
        self.gave_up.append(key)


def check(ledger: Ledger, arrived: Counter[str]) -> None:
    assert ledger.during_outage, "the outage never overlapped a whole request"
    assert all(status != 200 for _, status in ledger.during_outage)
    assert ledger.gave_up == []
    assert sorted(ledger.successes) == [f"m{n:05d}" for n in range(MESSAGES)]
    assert {key: arrived[key] for key in ledger.successes} == dict.fromkeys(ledger.successes, 1)
    assert set(arrived) == set(ledger.successes)


Starter = Callable[..., Awaitable[tuple[Gateway, FlakyStore]]]


@pytest.fixture
async def flaky(config_factory) -> AsyncIterator[Starter]:
    started: list[tuple[Gateway, FlakyStore]] = []

    async def start(extra: str, clock: Clock | None = None) -> tuple[Gateway, FlakyStore]:
        config: Config = config_factory(extra)
        store = FlakyStore(open_store(config.store_url))
        gateway = Gateway(config, clock=clock, store=store)  # type: ignore[arg-type]
        await gateway.start()
        started.append((gateway, store))
        return gateway, store

    yield start
    for gateway, store in started:
        store.down = False
        await gateway.stop()


async def smtp_agent(gateway: Gateway, ledger: Ledger, keys: list[str]) -> None:
    """One agent connection sending its share, retrying each 4xx on the same connection."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("demo", DEMO_SECRET)
    for key in keys:
        recipient = f"lead-{key}@client.example.net"
        content = (
            f"From: Katie <katie@example.com>\r\nTo: {recipient}\r\nSubject: Fleet costs {key}"
            f"\r\nMessage-ID: <{key}@example.com>\r\n\r\nHi, would a call work? {key}\r\n"
        ).encode()

        async def send(recipient: str = recipient, content: bytes = content) -> int:
            try:
                await smtp.sendmail("katie@example.com", [recipient], content)
            except aiosmtplib.SMTPRecipientsRefused as refused:
                return refused.recipients[0].code
            except aiosmtplib.SMTPResponseException as failed:
                assert failed.code // 100 == 4, failed.message
                return failed.code
            return 200

        await ledger.until_success(key, send)
    await smtp.quit()


async def test_ten_thousand_smtp_messages_with_upstream_failures_and_a_store_outage(
    flaky,
) -> None:
    async with SmtpSink(failure_rate=FAILURE_RATE, seed=7) as sink:
        clock = SteppingClock()
        gateway, store = await flaky(f"""
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {sink.port}
starttls = false
pool_size = 8
""", clock)
        ledger = Ledger(store)
        keys = [f"m{n:05d}" for n in range(MESSAGES)]
        agents = 16
        await asyncio.wait_for(
            asyncio.gather(*(smtp_agent(gateway, ledger, keys[i::agents]) for i in range(agents))),
            DEADLINE_S,
        )
        # A claim whose release was lost in the outage holds its message ("being delivered
        # right now") until it goes stale; then the agent's retry goes through, once.
        held, ledger.gave_up = ledger.gave_up, []
        clock.advance(STALE_DELIVERY_CLAIM_S + 1)
        await asyncio.wait_for(smtp_agent(gateway, ledger, held), DEADLINE_S)
    for message in sink.messages:
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in message.data
    arrived = Counter(m.rcpt_tos[0].split("-", 1)[1].split("@")[0] for m in sink.accepted)
    check(ledger, arrived)
    failed = len(sink.messages) - len(sink.accepted)
    assert failed > MESSAGES * FAILURE_RATE / 2  # the faults really happened


async def http_agent(
    http: aiohttp.ClientSession, url: str, ledger: Ledger, keys: list[str]
) -> None:
    for key in keys:
        item = {
            "From": "katie@example.com", "To": f"lead-{key}@client.example.net",
            "Subject": f"Fleet costs {key}", "TextBody": f"Hi, would a call work? {key}",
            "Metadata": {"load": key},
        }

        async def send(item: dict = item) -> int:
            async with http.post(url, json=item) as response:
                answer = await response.json()
            if response.status == 503:
                assert "nothing was sent; retry" in answer["Message"], answer
            else:
                assert response.status == 200 and answer["ErrorCode"] == 0, answer
            return response.status

        await ledger.until_success(key, send)


async def test_ten_thousand_api_messages_with_upstream_failures_and_a_store_outage(
    flaky,
) -> None:
    async with FakePostmark(failure_rate=FAILURE_RATE, seed=11) as fake:
        gateway, store = await flaky(f"""
[upstream.email]
kind = "postmark"
server_token = "{SERVER_TOKEN}"
base_url = "{fake.url}"
""")
        ledger = Ledger(store)
        keys = [f"m{n:05d}" for n in range(MESSAGES)]
        url = f"http://127.0.0.1:{gateway.http_port}/email"
        headers = {"X-Postmark-Server-Token": DEMO_SECRET, "Accept": "application/json"}
        agents = 16
        async with aiohttp.ClientSession(headers=headers) as http:
            await asyncio.wait_for(
                asyncio.gather(
                    *(http_agent(http, url, ledger, keys[i::agents]) for i in range(agents))
                ),
                DEADLINE_S,
            )
    for request in fake.requests_to("/email"):
        assert "548 Market St" in request.json["TextBody"]
    arrived = Counter(m["Metadata"]["load"] for m in fake.accepted)
    check(ledger, arrived)
    assert len(fake.requests_to("/email")) - len(fake.accepted) > MESSAGES * FAILURE_RATE / 2
    assert {h["Name"] for h in fake.accepted[0]["Headers"]} == {
        "List-Unsubscribe", "List-Unsubscribe-Post"
    }
