"""Password guessing: too many failed sign-ins with an account secret lock the source
prefix (IPv4 /24) or the account for a while.

Each test drives real SMTP clients (bound to distinct loopback addresses, which Linux
routes to 127.0.0.1's listener; 127.0.N.x is one /24 per N) or the review page over HTTP,
and reads the audit log and /metrics of the running gateway. Time moves with a clock the
test steps, never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from gateway.config.settings import Config, ConfigError, load_config
from gateway.server import Gateway
from gateway.store import open_store
from gateway.store.base import StoreUnavailable
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, write_config
from tests.fakes.clock import SteppingClock

LIMITS = "max_failed_logins = 3\nfailed_login_window_s = 60\nlogin_lockout_s = 300\n"


def config_with(tmp_path: Path, smtp_keys: str, extra: str = "") -> Config:
    """The test configuration with more keys in its [smtp] table (and `extra` tables)."""
    path = write_config(tmp_path, extra)
    path.write_text(path.read_text().replace("[smtp]\n", "[smtp]\n" + smtp_keys, 1))
    return load_config(path)


async def attempt(gateway: Gateway, user: str, secret: str, source: str = "127.0.0.1") -> int:
    """One AUTH PLAIN on a fresh connection from `source`; the reply code."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False, source_address=(source, 0)
    )
    await smtp.connect()
    await smtp.ehlo()
    try:
        return (await smtp.auth_plain(user, secret)).code
    except aiosmtplib.SMTPAuthenticationError as refused:
        return refused.code
    except aiosmtplib.SMTPResponseException as refused:
        return refused.code
    finally:
        smtp.close()


async def metrics_text(gateway: Gateway) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.http_port}/metrics") as response:
            return await response.text()


async def lockouts(gateway: Gateway) -> list[tuple[str, dict]]:
    await gateway.services.login_limits.flush()
    return [
        (event.subject, event.details)
        for event in await gateway.services.store.audit_events()
        if event.action == "login.locked_out"
    ]


@pytest.fixture
async def limited(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> tuple[Gateway, SteppingClock]:
    clock = SteppingClock()
    return await start_gateway(config_with(tmp_path, LIMITS), clock=clock), clock


async def test_a_prefix_guessing_is_locked_out_even_with_the_right_password(limited) -> None:
    gateway, clock = limited
    for guess in ("a-guess-0001", "a-guess-0002", "a-guess-0003"):
        assert await attempt(gateway, "nobody", guess, "127.0.5.5") == 535
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.5.5") == 454
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.6.5") == 235
    assert await lockouts(gateway) == [
        ("prefix 127.0.5.0/24", {"ingress": "smtp", "peer": "127.0.5.5", "failures": 3,
                                 "window_s": 60.0, "lockout_s": 300.0}),
    ]
    text = await metrics_text(gateway)
    assert 'gateway_login_failures_total{ingress="smtp"} 3.0' in text
    assert 'gateway_login_lockouts_total{ingress="smtp",scope="prefix"} 1.0' in text
    clock.advance(301)
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.5.5") == 235


async def test_guesses_spread_over_the_addresses_of_one_prefix_are_locked_out(limited) -> None:
    """The review's finding: a budget per address let a /24 guess eight times as often."""
    gateway, _ = limited
    for n in range(3):
        assert await attempt(gateway, "nobody", f"a-guess-{n:04}", f"127.0.7.{n + 1}") == 535
    for n in range(4, 12):
        assert await attempt(gateway, "nobody", f"a-guess-{n:04}", f"127.0.7.{n}") == 454
    assert [subject for subject, _ in await lockouts(gateway)] == ["prefix 127.0.7.0/24"]


async def test_an_account_guessed_from_many_addresses_is_locked_out(limited) -> None:
    gateway, clock = limited
    for n in range(3):
        assert await attempt(gateway, "demo", f"wrong-password-{n}", f"127.{n + 1}.1.1") == 535
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.1.9") == 454
    assert await attempt(gateway, "boss", MANAGER_SECRET, "127.0.1.9") == 235
    assert [subject for subject, _ in await lockouts(gateway)] == ["account demo"]
    clock.advance(301)
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.1.9") == 235


async def test_failures_spread_beyond_the_window_do_not_lock(limited) -> None:
    gateway, clock = limited
    for n in range(4):
        assert await attempt(gateway, "demo", f"wrong-password-{n}", "127.0.2.1") == 535
        clock.advance(31)
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.2.1") == 235
    assert await lockouts(gateway) == []


async def test_many_guesses_on_one_connection_are_locked_out(limited) -> None:
    gateway, _ = limited
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.ehlo()
    codes = []
    for n in range(5):
        try:
            codes.append((await smtp.auth_plain("demo", f"wrong-password-{n}")).code)
        except aiosmtplib.SMTPResponseException as refused:
            codes.append(refused.code)
    assert codes == [535, 535, 535, 454, 454]
    await smtp.quit()


async def test_review_sign_in_shares_the_limiter(limited) -> None:
    gateway, _ = limited
    url = f"http://127.0.0.1:{gateway.http_port}/review/login"
    origin = {"Origin": f"http://127.0.0.1:{gateway.http_port}"}
    async with aiohttp.ClientSession() as http:
        statuses = []
        for secret in ("guess-1", "guess-2", "guess-3", MANAGER_SECRET):
            async with http.post(url, data={"secret": secret}, headers=origin,
                                 allow_redirects=False) as response:
                statuses.append(response.status)
                retry_after = response.headers.get("Retry-After")
                page = await response.text()
    assert statuses == [401, 401, 401, 429]
    assert retry_after == "300"
    assert "too many failed logins" in page
    [(subject, details)] = await lockouts(gateway)
    assert subject == "prefix 127.0.0.0/24" and details["ingress"] == "review"
    assert 'gateway_login_lockouts_total{ingress="review",scope="prefix"} 1.0' in (
        await metrics_text(gateway)
    )


def test_limits_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    config = config_with(tmp_path, LIMITS)
    limits = config.login_limits
    assert (limits.max_failed_logins, limits.login_lockout_s) == (3, 300.0)
    assert load_config(write_config(tmp_path)).login_limits.max_failed_logins == 5
    with pytest.raises(ConfigError, match=r"smtp\.max_failed_logins"):
        config_with(tmp_path, "max_failed_logins = 0\n")


def _secret_headers(ingress: str, secret: str, user: str) -> dict[str, str]:
    if ingress == "postmark":
        return {"X-Postmark-Server-Token": secret, "Accept": "application/json"}
    if ingress == "twilio":
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}
    return {"Authorization": f"Bearer {secret}"}


async def send_with_secret(
    gateway: Gateway, ingress: str, secret: str, source: str, user: str = "demo"
) -> tuple[int, str | None, str]:
    """One request to `ingress`'s secret-bearing API from `source` (Twilio's user name
    `user`): status, Retry-After, body."""
    sid = gateway.config.twilio_upstream.account_sid
    method, path, body = {
        "postmark": ("POST", "/email", {"json": {}}),
        "twilio": ("POST", f"/2010-04-01/Accounts/{sid}/Messages.json", {"data": {}}),
        "admin": ("GET", "/v1/suppressions", {}),
    }[ingress]
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(
            method, f"http://127.0.0.1:{gateway.http_port}{path}",
            headers=_secret_headers(ingress, secret, user), **body,
        ) as response:
            return response.status, response.headers.get("Retry-After"), await response.text()


@pytest.mark.parametrize(
    ("ingress", "right_secret", "shape"),
    [
        ("postmark", DEMO_SECRET, '"ErrorCode": 429'),
        ("twilio", DEMO_SECRET, '"code": 20429'),
        ("admin", MANAGER_SECRET, '"error"'),
    ],
)
async def test_http_secrets_are_locked_out_like_smtp_auth(
    limited, ingress: str, right_secret: str, shape: str
) -> None:
    """Without this, the APIs would be an unlimited oracle for the secrets SMTP AUTH guards."""
    gateway, clock = limited
    for guess in ("a-guess-0001", "a-guess-0002", "a-guess-0003"):
        status, _, _ = await send_with_secret(gateway, ingress, guess, "127.0.9.9", "nobody")
        assert status == 401
    status, retry_after, body = await send_with_secret(
        gateway, ingress, right_secret, "127.0.9.10"
    )
    assert (status, retry_after) == (429, "300")
    assert shape in body and "too many failed logins" in body
    other_status, _, _ = await send_with_secret(gateway, ingress, right_secret, "127.0.10.9")
    assert other_status not in (401, 429)
    [(subject, details)] = await lockouts(gateway)
    assert subject == "prefix 127.0.9.0/24" and details["ingress"] == ingress
    clock.advance(301)
    status, _, _ = await send_with_secret(gateway, ingress, right_secret, "127.0.9.9")
    assert status not in (401, 429)


async def test_failures_on_smtp_and_http_count_together(limited) -> None:
    gateway, _ = limited
    assert await attempt(gateway, "nobody", "a-guess-0001", "127.0.11.1") == 535
    assert await attempt(gateway, "nobody", "a-guess-0002", "127.0.11.1") == 535
    status, _, _ = await send_with_secret(gateway, "admin", "a-guess-0003", "127.0.11.1")
    assert status == 401
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.11.1") == 454
    status, _, _ = await send_with_secret(gateway, "postmark", DEMO_SECRET, "127.0.11.1")
    assert status == 429


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_parallel_guesses_are_counted_one_at_a_time(
    request: pytest.FixtureRequest, tmp_path: Path,
    start_gateway: Callable[..., Awaitable[Gateway]], backend: str,
) -> None:
    """Forty wrong tokens at once from one address: no more are checked than the limit
    allows, however they interleave (the check and the count are one step per prefix;
    on PostgreSQL every step awaits the network, the widest window)."""
    config = config_with(tmp_path, LIMITS)
    if backend == "postgres":
        config = replace(config, store_url=request.getfixturevalue("postgres_url"))
    gateway = await start_gateway(config)
    connections = [
        await asyncio.open_connection("127.0.0.1", gateway.http_port, local_addr=("127.0.50.1", 0))
        for _ in range(40)
    ]
    for n, (_, writer) in enumerate(connections):  # every request out before any answer
        writer.write(
            f"POST /email HTTP/1.1\r\nHost: gw\r\nX-Postmark-Server-Token: a-guess-{n:04}\r\n"
            "Accept: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
            .encode()
        )
    statuses = []
    for reader, writer in connections:
        statuses.append(int((await reader.readline()).split()[1]))
        writer.close()
    assert Counter(statuses) == {401: 3, 429: 37}


async def test_a_locked_account_opens_on_no_ingress(limited) -> None:
    """Token-only ingresses name no account, so they cannot count against one; but a
    locked account's secret must not open it there either, and must be answered as a
    wrong secret is (any other answer would tell the guess was right)."""
    gateway, clock = limited
    for n in range(3):
        assert await attempt(gateway, "demo", f"wrong-password-{n}", f"127.{n + 1}.51.1") == 535
    sid = gateway.config.twilio_upstream.account_sid  # Twilio's SDK sends it as the user
    for ingress in ("postmark", "twilio"):
        right, _, _ = await send_with_secret(gateway, ingress, DEMO_SECRET, "127.0.52.1", sid)
        wrong, _, _ = await send_with_secret(gateway, ingress, "a-guess-0001", "127.0.53.1", sid)
        assert right == wrong == 401, ingress
    clock.advance(301)
    status, _, _ = await send_with_secret(gateway, "postmark", DEMO_SECRET, "127.0.54.1")
    assert status not in (401, 429)


async def test_requests_without_credentials_are_not_guesses(limited) -> None:
    gateway, _ = limited
    for _ in range(5):
        assert (await send_with_secret(gateway, "postmark", "", "127.0.55.1"))[0] == 401
    status, _, _ = await send_with_secret(gateway, "postmark", DEMO_SECRET, "127.0.55.1")
    assert status not in (401, 429)


class CountsUnwritable:
    """The real store, except that failures cannot be recorded (a full disk, a read-only
    standby, the writer lock held elsewhere) while everything reads."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.counts_tried = 0
        self.writable = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def count_login_failure(self, *args: object) -> tuple[str, ...]:
        self.counts_tried += 1
        if not self.writable:
            raise StoreUnavailable("injected: the failure could not be written")
        return await self.inner.count_login_failure(*args)  # type: ignore[attr-defined]


@pytest.fixture
async def unwritable(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> tuple[Gateway, CountsUnwritable]:
    config = config_with(tmp_path, LIMITS + "max_failed_keys_per_prefix = 3\n")
    store = CountsUnwritable(open_store(config.store_url))
    return await start_gateway(config, store=store), store


async def test_a_failure_that_cannot_be_recorded_locks_its_prefix_here(unwritable) -> None:
    """Otherwise wrong guesses would be answered "try later" uncounted while the right one
    is accepted: an unlimited oracle."""
    gateway, _ = unwritable
    status, retry_after, _ = await send_with_secret(gateway, "postmark", "a-guess", "127.0.56.1")
    assert (status, retry_after) == (503, "30")
    for source in ("127.0.56.1", "127.0.56.2"):
        status, _, _ = await send_with_secret(gateway, "postmark", DEMO_SECRET, source)
        assert status == 429, source
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.56.3") == 454
    status, _, _ = await send_with_secret(gateway, "postmark", DEMO_SECRET, "127.0.57.1")
    assert status not in (401, 429, 503)


async def test_wrong_keys_from_a_locked_prefix_write_nothing(unwritable) -> None:
    gateway, store = unwritable
    store.writable = True
    wrong_key = "cgk_0123456789abcdef_" + "A" * 43
    statuses = [(await send_with_secret(gateway, "postmark", wrong_key, "127.0.58.1"))[0]
                for _ in range(10)]
    assert statuses == [401, 401] + [429] * 8
    assert store.counts_tried == 3
