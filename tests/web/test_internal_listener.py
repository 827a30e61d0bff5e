"""`[http] internal_listen`: the main listener serves only the public paths (unsubscribe
links, provider webhooks, probes) and 404s everything else as if it did not exist; the
internal listener serves every path. `[http] metrics_token` guards /metrics. Real sockets,
a gateway started in-process on ephemeral ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from gateway.config.settings import load_config
from gateway.model import Channel
from gateway.server import Gateway
from tests import conftest
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, write_config
from tests.ingress.test_twilio import AUTH_TOKEN, TWILIO_CONFIG
from tests.test_cli import ServeProcess, free_port

SCIM_TOKEN = "scim-token-0123456789abcdef0123456789"
METRICS_TOKEN = "metrics-token-0123456789abcdef0123456789"
SCIM = f"""
[scim]
token = "{SCIM_TOKEN}"
roles = {{ "gateway-admins" = "admin" }}
"""
EMAIL = {
    "From": "katie@example.com", "To": "bob@client.example.net",
    "Subject": "Fleet maintenance costs", "TextBody": "Hi Bob, would a call work?",
}
Request = tuple[str, str, dict[str, str], dict[str, object] | None]
# (method, path, headers, JSON body): each answered by a route on the internal listener.
INTERNAL_REQUESTS: list[Request] = [
    ("GET", "/v1/blocks", {"Authorization": f"Bearer {MANAGER_SECRET}"}, None),
    ("GET", "/review/login", {}, None),
    ("GET", "/review", {}, None),
    ("GET", "/metrics", {}, None),
    ("GET", "/scim/v2/Users", {"Authorization": f"Bearer {SCIM_TOKEN}"}, None),
    ("POST", "/email", {"X-Postmark-Server-Token": DEMO_SECRET}, EMAIL),
    ("POST", "/auth/logout", {}, None),
]


def http_config(tmp_path: Path, http_lines: str, extra: str = "") -> Path:
    path = write_config(tmp_path, TWILIO_CONFIG + SCIM + extra)
    path.write_text(path.read_text().replace(
        '[http]\nlisten = "127.0.0.1:0"', '[http]\nlisten = "127.0.0.1:0"\n' + http_lines
    ))
    return path


async def answer(port: int, request: Request) -> tuple[int, str]:
    method, path, headers, body = request
    async with aiohttp.ClientSession() as http, http.request(
        method, f"http://127.0.0.1:{port}{path}", headers=headers, json=body,
        allow_redirects=False,
    ) as response:
        return response.status, await response.text()


async def twilio_stop(port: int) -> tuple[int, str]:
    params = {
        "MessageSid": "SM" + "1" * 32, "AccountSid": "AC" + "0" * 32, "From": "+12125550123",
        "To": "+14155550100", "Body": "STOP", "NumMedia": "0",
    }
    url = f"http://127.0.0.1:{port}/webhooks/twilio"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with aiohttp.ClientSession() as http, http.post(
        url, data=params, headers={"X-Twilio-Signature": signature}
    ) as response:
        return response.status, await response.text()


@pytest.fixture
async def split(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> Gateway:
    return await start_gateway(
        load_config(http_config(tmp_path, 'internal_listen = "127.0.0.1:0"'))
    )


async def test_the_public_listener_hides_every_internal_path(split: Gateway) -> None:
    assert split.internal_port and split.internal_port != split.http_port
    for request in INTERNAL_REQUESTS:
        public_status, public_body = await answer(split.http_port, request)
        assert (public_status, public_body) == (404, "404: Not Found"), request[1]
        internal_status, body = await answer(split.internal_port, request)
        assert internal_status in (200, 303), (request[1], internal_status, body)


async def test_spellings_of_an_internal_path_stay_hidden(split: Gateway) -> None:
    for path in ("/u/../v1/blocks", "/webhooks/%2e%2e/v1/blocks", "/healthz/../metrics",
                 "//v1/blocks", "/V1/blocks"):
        status, _ = await answer(
            split.http_port, ("GET", path, {"Authorization": f"Bearer {DEMO_SECRET}"}, None)
        )
        assert status == 404, path


async def test_the_public_listener_serves_links_webhooks_and_probes(split: Gateway) -> None:
    link = split.services.unsubscribe.links(
        "bob@client.example.net", "katie@example.com", Channel.EMAIL
    )
    token = link.url.rpartition("/u/")[2]
    for port in (split.http_port, split.internal_port):
        status, page = await answer(port, ("GET", f"/u/{token}", {}, None))
        assert status == 200 and "unsubscribe" in page.lower()
        for probe in ("/healthz", "/readyz"):
            assert (await answer(port, ("GET", probe, {}, None)))[0] == 200
    status, reply = await twilio_stop(split.http_port)
    assert status == 200, reply


async def test_one_listener_serves_everything_without_internal_listen(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    gateway = await start_gateway(load_config(http_config(tmp_path, "")))
    assert gateway.internal_port == 0
    for request in INTERNAL_REQUESTS:
        status, body = await answer(gateway.http_port, request)
        assert status in (200, 303), (request[1], status, body)


@pytest.fixture
async def guarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> Gateway:
    monkeypatch.setenv("GATEWAY_TEST_METRICS_TOKEN", METRICS_TOKEN)
    return await start_gateway(load_config(http_config(
        tmp_path, 'metrics_token = "${GATEWAY_TEST_METRICS_TOKEN}"'
    )))


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-token-0123456789abcdef0123456789", f"Basic {METRICS_TOKEN}", "Bearer ",
    f"Bearer {METRICS_TOKEN}x", "Bearer ${GATEWAY_TEST_METRICS_TOKEN}",
])
async def test_metrics_refuses_a_missing_or_wrong_bearer_token(
    guarded: Gateway, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{guarded.http_port}/metrics", headers=headers
    ) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "gateway_" not in await response.text()


async def test_metrics_answers_the_right_bearer_token(guarded: Gateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{guarded.http_port}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
    ) as response:
        assert response.status == 200
        assert "gateway_config_reloads_total" in await response.text()
    status, _ = await answer(guarded.http_port, ("GET", "/healthz", {}, None))
    assert status == 200, "the token guards /metrics only"


def test_every_worker_serves_both_listeners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    internal_port = free_port()
    monkeypatch.setattr(conftest, "BASE_CONFIG", conftest.BASE_CONFIG.replace(
        "drain_timeout_s = 5", "drain_timeout_s = 5\nworkers = 2",
    ).replace(
        '[http]\nlisten = "127.0.0.1:0"',
        f'[http]\nlisten = "127.0.0.1:0"\ninternal_listen = "127.0.0.1:{internal_port}"',
    ))
    server = ServeProcess(tmp_path)

    async def requests() -> None:
        # Each connection lands on either worker (SO_REUSEPORT): a handful reach both.
        for _ in range(10):
            assert (await answer(server.http_port, ("GET", "/metrics", {}, None)))[0] == 404
            assert (await answer(server.http_port, ("GET", "/healthz", {}, None)))[0] == 200
            assert (await answer(internal_port, ("GET", "/metrics", {}, None)))[0] == 200

    try:
        assert f"HTTP internal 127.0.0.1:{internal_port}" in server.banner
        asyncio.run(requests())
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
