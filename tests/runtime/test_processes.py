"""`[gateway] workers = 2`: a supervisor and two worker processes on the same listeners.

Real `compliance-gateway serve` processes over real sockets: every request is answered
whichever worker takes it, the metrics any worker serves count every worker's messages,
signals reach every worker, and a worker that dies takes the service down with a failure
status (for the service manager to restart) rather than leaving half of it running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from tests.conftest import DEMO_SECRET
from tests.e2e.test_operations import NEW_ACCOUNT, NEW_SECRET, gateway_settings
from tests.test_cli import ServeProcess

WORKERS = 2


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def wait_for_children(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, found {children(pid)}")


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return status != "Z"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServeProcess:
    gateway_settings(monkeypatch, f"drain_timeout_s = 5\nworkers = {WORKERS}")
    server = ServeProcess(tmp_path)
    yield server
    if server.process.poll() is None:
        server.stop()


async def send_emails(port: int, count: int) -> list[int]:
    async with aiohttp.ClientSession(
        headers={"X-Postmark-Server-Token": DEMO_SECRET}
    ) as http:

        async def one(index: int) -> int:
            message = {"From": "katie@example.com", "To": f"prospect{index}@client.example.net",
                       "Subject": "Fleet costs", "TextBody": "Would a call work?"}
            async with http.post(f"http://127.0.0.1:{port}/email", json=message) as answer:
                return answer.status

        return await asyncio.gather(*(one(index) for index in range(count)))


async def allowed_in_metrics(port: int) -> float:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        text = await answer.text()
    for line in text.splitlines():
        if line.startswith('gateway_messages_total{channel="email",outcome="allowed"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_workers_share_the_listeners_and_every_scrape_counts_them_all(
    served: ServeProcess, tmp_path: Path
) -> None:
    workers = wait_for_children(served.process.pid, WORKERS)
    statuses = asyncio.run(send_emails(served.http_port, 40))
    scrapes = [asyncio.run(allowed_in_metrics(served.http_port)) for _ in range(6)]
    code, _ = served.stop()

    assert statuses == [200] * 40
    assert len(list((tmp_path / "var" / "outbox" / "email").glob("*.eml"))) == 40
    assert scrapes == [40.0] * 6
    assert code == 0
    assert not any(alive(pid) for pid in workers)


def test_sighup_reaches_every_worker(served: ServeProcess) -> None:
    wait_for_children(served.process.pid, WORKERS)
    for _ in range(WORKERS - 1):  # every worker prints its banner once its handlers are set
        banner = served.process.stdout.readline()
        if not banner:  # the gateway stopped: say why (seen once, in a clean-clone run)
            served.process.wait(timeout=30)
            pytest.fail(f"the gateway stopped before every worker was up (exit "
                        f"{served.process.returncode}): {served.process.stderr.read()[-3000:]}")
        assert "listening" in banner
    served.config.write_text(served.config.read_text() + NEW_ACCOUNT)
    served.process.send_signal(signal.SIGHUP)

    async def logins() -> list[bool]:
        results = []
        for _ in range(12):  # new connections each time: the kernel spreads them
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=served.smtp_port)
            await client.connect()
            try:
                await client.login("newbie", NEW_SECRET)
                results.append(True)
            except aiosmtplib.SMTPAuthenticationError:
                results.append(False)
            finally:
                await client.quit()
        return results

    deadline = time.monotonic() + 20
    results = asyncio.run(logins())
    while not all(results) and time.monotonic() < deadline:  # each worker reloads on its own
        time.sleep(0.2)
        results = asyncio.run(logins())
    assert all(results)


def test_a_dead_worker_takes_the_service_down_with_a_failure_status(
    served: ServeProcess,
) -> None:
    first, second = wait_for_children(served.process.pid, WORKERS)
    os.kill(first, signal.SIGKILL)

    code = served.process.wait(timeout=30)
    stderr = served.process.stderr.read()

    assert code != 0
    assert "worker-died" in stderr
    deadline = time.monotonic() + 10
    while alive(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(second)
