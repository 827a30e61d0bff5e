"""The client behind a reverse proxy, over real sockets: a gateway whose `http.trusted_proxies`
names the test's own address (127.0.0.1) takes the client from X-Forwarded-For, in the
audit log, the sign-in limits and the logs; one that does not trust it never reads the
header."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.config.settings import load_config
from gateway.server import Gateway
from tests.conftest import MANAGER_SECRET, write_config


@pytest.fixture
def start(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> Callable[..., Awaitable[Gateway]]:
    """Start a gateway with these lines added to its [http] and [smtp] tables."""
    async def make(http_keys: str, smtp_keys: str = "") -> Gateway:
        path = write_config(tmp_path)
        path.write_text(path.read_text()
                        .replace("[http]\n", "[http]\n" + http_keys, 1)
                        .replace("[smtp]\n", "[smtp]\n" + smtp_keys, 1))
        return await start_gateway(load_config(path))

    return make


async def failed_sign_in(gateway: Gateway, headers: dict[str, str], secret: str = "a-guess"
                         ) -> int:
    """One /review sign-in; its status."""
    origin = {"Origin": f"http://127.0.0.1:{gateway.http_port}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{gateway.http_port}/review/login", data={"secret": secret},
            headers={**origin, **headers}, allow_redirects=False,
        ) as response:
            return response.status


async def audited_remotes(gateway: Gateway) -> list[str]:
    """The client each refused sign-in was audited with, in order."""
    return [
        str(event.details["remote"])
        for event in await gateway.services.store.audit_events()
        if event.action == "review.signin_failed"
    ]


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.66, 203.0.113.7", "203.0.113.7"),  # the left-most one the client wrote
        ("203.0.113.7, 127.0.0.1", "203.0.113.7"),  # two proxies
        ("not-an-address", "127.0.0.1"),
        ("203.0.113.7, not-an-address", "127.0.0.1"),
    ],
)
async def test_a_trusted_proxy_names_the_client(start, forwarded_for: str, client: str) -> None:
    gateway = await start('trusted_proxies = ["127.0.0.1"]\n')
    assert await failed_sign_in(gateway, {"X-Forwarded-For": forwarded_for}) == 401
    assert await audited_remotes(gateway) == [client]


async def test_anyone_else_is_not_believed(start) -> None:
    gateway = await start('trusted_proxies = ["10.0.0.0/8", "::1"]\n')
    assert await failed_sign_in(gateway, {"X-Forwarded-For": "203.0.113.7"}) == 401
    assert await failed_sign_in(gateway, {}) == 401
    assert await audited_remotes(gateway) == ["127.0.0.1", "127.0.0.1"]


async def test_sign_in_limits_count_each_client_behind_the_proxy(start) -> None:
    """A guesser behind the proxy is locked out; the proxy's other clients are not."""
    gateway = await start('trusted_proxies = ["127.0.0.1"]\n',
                          "max_failed_logins = 3\nlogin_lockout_s = 300\n")
    guesser, colleague = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}
    assert [await failed_sign_in(gateway, guesser) for _ in range(4)] == [401, 401, 401, 429]
    assert await failed_sign_in(gateway, guesser, MANAGER_SECRET) == 429
    assert await failed_sign_in(gateway, colleague, MANAGER_SECRET) == 303


async def test_a_refused_webhook_names_the_client(start, caplog) -> None:
    gateway = await start('trusted_proxies = ["127.0.0.1"]\n')
    with caplog.at_level(logging.WARNING, logger="gateway"):
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{gateway.http_port}/webhooks/twilio",
                data={"From": "+12125550123", "Body": "STOP"},
                headers={"X-Twilio-Signature": "forged", "X-Forwarded-For": "203.0.113.7"},
            ) as response:
                assert response.status == 403
    [refused] = [r for r in caplog.records if r.getMessage() == "webhook-signature-invalid"]
    assert refused.fields["peer"] == "203.0.113.7"
