"""Operating the gateway: SIGTERM drain, SIGHUP reloads, probes and the operational metrics.

Signals go to a real `compliance-gateway serve` process over real sockets; the fake upstream
SMTP server stalls so that work is in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from gateway.config.settings import ConfigError, ListenAddress, load_config
from gateway.model import Suppression
from gateway.runtime.metrics import Metrics
from gateway.runtime.processes import ListenError
from gateway.server import Gateway
from gateway.services.store_gauges import StoreGauges
from gateway.store.sqlite import SqliteStore
from tests import conftest
from tests.conftest import DEMO_SECRET, write_config
from tests.fakes.smtp_sink import SmtpSink
from tests.ingress.smtp.test_submission import first_touch
from tests.store.test_store import T0
from tests.test_cli import ServeProcess, cli, free_port

NEW_SECRET = "newbie-secret-0123456789"
SMTP_UPSTREAM = """
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {port}
starttls = false
"""
NEW_ACCOUNT = f"""
[[accounts]]
name = "newbie"
secret = "{NEW_SECRET}"
sender_domains = ["example.com"]
"""
POSTMARK_EMAIL = {
    "From": "katie@example.com",
    "To": "bob@client.example.net",
    "Subject": "Fleet maintenance costs",
    "TextBody": "Hi Bob, would a call work?",
}


def gateway_settings(monkeypatch: pytest.MonkeyPatch, lines: str) -> None:
    """Replace the test configuration's `drain_timeout_s = 5` line in [gateway]."""
    monkeypatch.setattr(
        conftest, "BASE_CONFIG", conftest.BASE_CONFIG.replace("drain_timeout_s = 5", lines)
    )


async def eventually(
    probe: Callable[[], bool | Awaitable[bool]], what: str, tries: int = 200
) -> None:
    """Poll `probe` (bounded: `tries` times 50 ms) until it holds."""
    for _ in range(tries):
        result = probe()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def post_email(http_port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{http_port}/email",
            json=POSTMARK_EMAIL,
            headers={"X-Postmark-Server-Token": DEMO_SECRET},
        ) as response:
            return response.status, await response.json()


async def metrics_text(http_port: int) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{http_port}/metrics") as response:
            return await response.text()


async def refuses_connections(port: int) -> bool:
    """Refused, or reset: a connection caught in the backlog of a listener being closed is
    reset, which is the same refusal a moment earlier."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    writer.close()
    return False


def drained_event(stderr: str) -> dict:
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return next(e for e in events if e["event"] == "drained")


def test_sigterm_lets_an_http_request_in_flight_finish_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, dict, bool, int, str, int]:
        async with SmtpSink() as sink:
            extra = SMTP_UPSTREAM.format(port=sink.port)
            server = await asyncio.to_thread(ServeProcess, tmp_path, extra)
            sink.stall_next("data", 3)
            sending = asyncio.create_task(post_email(server.http_port))
            await eventually(lambda: bool(sink.messages), "the upstream got the copy")
            server.process.send_signal(signal.SIGTERM)
            await eventually(
                lambda: refuses_connections(server.http_port), "new connections refused"
            )
            still_in_flight = not sending.done()
            status, answer = await sending
            code = await asyncio.to_thread(server.process.wait, 30)
            stderr = server.process.stderr.read()
            return status, answer, still_in_flight, code, stderr, len(sink.accepted)

    status, answer, still_in_flight, code, stderr, accepted = asyncio.run(scenario())
    assert still_in_flight, "the request should still be running when connections are refused"
    assert status == 200
    assert answer["ErrorCode"] == 0
    assert accepted == 1
    assert code == 0
    drained = drained_event(stderr)
    assert (drained["http_cut_off"], drained["smtp_cut_off"]) == (0, 0)


def test_sigterm_cuts_off_work_still_running_at_the_deadline_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both upstream copies stall far longer than `drain_timeout_s`: the process exits long
    before the stall ends and logs one HTTP request and one SMTP transaction cut off."""

    gateway_settings(monkeypatch, "drain_timeout_s = 1")

    async def scenario() -> tuple[int, str, object, object]:
        async with SmtpSink() as sink:
            extra = SMTP_UPSTREAM.format(port=sink.port)
            server = await asyncio.to_thread(ServeProcess, tmp_path, extra)
            sink.stall_next("data", 40)
            sink.stall_next("data", 40)
            http_send = asyncio.create_task(post_email(server.http_port))
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.smtp_port, timeout=60)
            await smtp.connect()
            await smtp.login("demo", DEMO_SECRET)
            smtp_send = asyncio.create_task(smtp.send_message(first_touch()))
            await eventually(lambda: len(sink.messages) == 2, "both copies upstream")
            server.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.process.wait, 30)
            stderr = server.process.stderr.read()
            results = await asyncio.gather(http_send, smtp_send, return_exceptions=True)
            return code, stderr, results[0], results[1]

    code, stderr, http_result, smtp_result = asyncio.run(scenario())
    assert code == 0
    drained = drained_event(stderr)
    assert (drained["http_cut_off"], drained["smtp_cut_off"]) == (1, 1)
    assert drained["drain_timeout_s"] == 1
    assert not (isinstance(http_result, tuple) and http_result[0] == 200)
    assert isinstance(smtp_result, Exception)


def test_sighup_reloads_accounts_without_dropping_connections(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await asyncio.to_thread(ServeProcess, tmp_path)
        try:
            port = server.smtp_port
            held = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
            await held.connect()
            await held.login("demo", DEMO_SECRET)

            server.config.write_text(
                server.config.read_text().replace('name = "boss"', 'name = "chief"') + NEW_ACCOUNT
            )
            server.process.send_signal(signal.SIGHUP)
            await eventually(
                lambda: reloads_counted(server.http_port, "accounts", "ok", 1), "reload"
            )
            errors, reply = await held.send_message(first_touch())
            assert errors == {} and reply.startswith("2.0.0"), "held session survives"
            await held.quit()
            assert await logs_in(port, "newbie", NEW_SECRET)
            assert not await logs_in(port, "boss", "manager-secret-0123456789")

            good = server.config.read_text()
            server.config.write_text(good.replace(NEW_SECRET, "short"))
            server.process.send_signal(signal.SIGHUP)
            await eventually(
                lambda: reloads_counted(server.http_port, "accounts", "failed", 1), "failure"
            )
            await eventually(
                lambda: reloads_counted(server.http_port, "rules", "ok", 2), "rules reloaded"
            )
            assert await logs_in(port, "newbie", NEW_SECRET), "a broken file keeps accounts"
            server.config.write_text(good)
        finally:
            code, stderr = await asyncio.to_thread(server.stop)
        assert code == 0
        assert "accounts-reload-failed" in stderr
        assert NEW_SECRET not in stderr

    asyncio.run(scenario())
    audit = [
        json.loads(line)
        for line in cli(tmp_path / "gateway.toml", "audit", "list").stdout.splitlines()
    ]
    [reloaded] = [e for e in audit if e["action"] == "accounts.reload"]
    assert reloaded["details"]["added"] == ["chief", "newbie"]
    assert reloaded["details"]["removed"] == ["boss"]
    assert reloaded["actor"] == "operator"
    [failed] = [e for e in audit if e["action"] == "accounts.reload_failed"]
    assert "accounts[2].secret" in failed["details"]["error"]
    assert sum(e["action"] == "rules.reload" for e in audit) == 2
    assert NEW_SECRET not in json.dumps(audit)


async def reloads_counted(http_port: int, kind: str, result: str, count: int) -> bool:
    line = f'gateway_config_reloads_total{{kind="{kind}",result="{result}"}} {count:.1f}'
    return line in await metrics_text(http_port)


async def logs_in(port: int, user: str, secret: str) -> bool:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await smtp.connect()
    try:
        await smtp.login(user, secret)
    except aiosmtplib.SMTPAuthenticationError:
        return False
    finally:
        await smtp.quit()
    return True


async def test_readyz_names_an_unreachable_store_while_healthz_stays_alive(
    gateway: Gateway,
) -> None:
    database = gateway.config.data_dir / "gateway.db"
    moved = database.with_suffix(".moved")
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        database.rename(moved)
        try:
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                body = await response.json()
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
        finally:
            moved.rename(database)
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            ready = await response.json()
    assert body["status"] == "not ready"
    assert body["not_ready"] == ["store"]
    assert body["checks"]["store"] == "unavailable"
    assert str(database) not in json.dumps(body), "no store detail on an open endpoint"
    assert body["checks"]["rules"] == gateway.services.ruleset.version
    assert ready["checks"] == {"store": "ok", "rules": gateway.services.ruleset.version}


async def test_store_gauges_are_refreshed_in_the_background(
    gateway_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_settings(monkeypatch, "metrics_refresh_s = 1")
    gateway = await gateway_factory()
    now = gateway.clock.now()
    await gateway.services.store.add_suppressions(
        [
            Suppression("bob@client.example.net", "operator", "asked", now),
            Suppression("bob@client.example.net", "twilio-stop", "STOP", now),
            Suppression("+14155550123", "operator", "asked", now),
        ]
    )
    await eventually(
        lambda: _contains(gateway.http_port, "gateway_suppressions 2.0"), "count", tries=100
    )
    text = await metrics_text(gateway.http_port)
    assert "gateway_store_up 1.0" in text
    database = gateway.config.data_dir / "gateway.db"
    database.rename(database.with_suffix(".moved"))
    try:
        await eventually(
            lambda: _contains(gateway.http_port, "gateway_store_up 0.0"), "down", tries=100
        )
    finally:
        database.with_suffix(".moved").rename(database)
    assert "gateway_suppressions 2.0" in await metrics_text(gateway.http_port), "last count kept"


async def test_the_suppression_count_is_repeated_only_as_often_as_its_cost_allows(
    tmp_path: Path,
) -> None:
    """A count that took one second (ten million entries) is not repeated for fifty, so it
    takes at most 2% of the store's time; the ping still runs on every refresh."""
    clock = [0.0]
    counted_at: list[float] = []

    class OneSecondCount(SqliteStore):
        async def count_suppressed(self) -> int:
            counted_at.append(clock[0])
            clock[0] += 1.0
            return await super().count_suppressed()

    store = OneSecondCount(tmp_path / "gateway.db")
    await store.open()
    metrics = Metrics()
    gauges = StoreGauges(metrics, store, monotonic=lambda: clock[0])
    try:
        await gauges.refresh()
        await store.add_suppressions([Suppression("a@x.com", "operator", "asked", T0)])
        for _ in range(4):
            clock[0] += 10
            await gauges.refresh()
        assert counted_at == [0.0]
        assert metrics.registry.get_sample_value("gateway_suppressions") == 0
        assert metrics.registry.get_sample_value("gateway_store_up") == 1
        clock[0] += 10
        await gauges.refresh()
        assert counted_at == [0.0, 51.0]
        assert metrics.registry.get_sample_value("gateway_suppressions") == 1
    finally:
        await store.close()


async def _contains(http_port: int, line: str) -> bool:
    return line in (await metrics_text(http_port)).splitlines()


async def test_http_requests_in_progress_counts_the_scrape_itself(gateway: Gateway) -> None:
    lines = (await metrics_text(gateway.http_port)).splitlines()
    assert "gateway_http_requests_in_progress 1.0" in lines
    assert "gateway_smtp_sessions_in_progress 0.0" in lines


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("drain_timeout_s = -1", "gateway.drain_timeout_s"),
        ('drain_timeout_s = "soon"', "gateway.drain_timeout_s"),
        ("drain_timeout_s = 5\nmetrics_refresh_s = 0", "gateway.metrics_refresh_s"),
        ("drain_timeout_s = 5\nmetrics_refresh_s = 1.5", "gateway.metrics_refresh_s"),
    ],
)
def test_operational_keys_are_validated(tmp_path: Path, line: str, key: str) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("drain_timeout_s = 5", line))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.key == key


def test_operational_keys_default(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("drain_timeout_s = 5\n", ""))
    config = load_config(path)
    assert (config.drain_timeout_s, config.metrics_refresh_s) == (30.0, 30)


# Listeners that cannot be had --------------------------------------------------------------

def listening_config(tmp_path: Path, smtp_port: int, http_port: int, workers: int = 1) -> Path:
    path = write_config(tmp_path)
    text = path.read_text().replace("drain_timeout_s = 5", f"workers = {workers}")
    text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{smtp_port}"', 1)
    path.write_text(text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{http_port}"'))
    return path


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )


def human_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("taken", ["smtp.listen", "http.listen"])
def test_serve_on_a_port_in_use_says_which_setting_in_one_line(
    tmp_path: Path, taken: str, workers: int
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        port = occupant.getsockname()[1]
        other = free_port()
        ports = (port, other) if taken == "smtp.listen" else (other, port)
        result = serve(listening_config(tmp_path, *ports, workers=workers))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert human_lines(result.stderr) == [
        f"error: {taken} 127.0.0.1:{port}: cannot listen: Address already in use"
    ]


def test_serve_with_smtp_and_http_on_one_port_is_a_config_error(tmp_path: Path) -> None:
    port = free_port()
    result = serve(listening_config(tmp_path, port, port))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"config error: http.listen: 127.0.0.1:{port} takes the port of smtp.listen "
        f"(127.0.0.1:{port}): give SMTP and HTTP one each"
    ]


async def test_a_gateway_that_cannot_listen_raises_one_line_and_leaves_nothing_open(
    config_factory
) -> None:
    """HTTP's port is taken after SMTP's was bound: SMTP's is let go again, and the store
    and upstreams `start` opened are closed."""
    smtp_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        http_port = occupant.getsockname()[1]
        config = config_factory()
        config = replace(
            config,
            smtp=replace(config.smtp, listen=ListenAddress("127.0.0.1", smtp_port)),
            http=replace(config.http, listen=ListenAddress("127.0.0.1", http_port)),
        )
        gateway = Gateway(config)
        with pytest.raises(ListenError) as error:
            await gateway.start()
    assert str(error.value) == (
        f"http.listen 127.0.0.1:{http_port}: cannot listen: Address already in use"
    )
    with socket.create_server(("127.0.0.1", smtp_port)):
        pass
    again = Gateway(config)
    await again.start()
    await again.stop()
