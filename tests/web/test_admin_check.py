"""POST /v1/check: an agent asks before it dials, with its own account's bearer token."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from gateway.model import Suppression
from gateway.runtime.clock import Clock
from gateway.store.base import BlockQuery
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, record_written_consents

NY = "+12125550123"


async def post_check(gateway, body, token: str | None = DEMO_SECRET):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://127.0.0.1:{gateway.http_port}/v1/check"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()


async def test_check_answers_like_the_cli(gateway_factory) -> None:
    gateway = await gateway_factory(clock=Clock(datetime(2026, 6, 2, 16, tzinfo=UTC)))
    status, result = await post_check(gateway, {"channel": "call", "to": NY})
    assert status == 200
    assert [r["rule"] for r in result["reasons"]] == ["tcpa.consent.artificial_voice"]
    await record_written_consents(gateway, [NY])
    status, result = await post_check(gateway, {"channel": "call", "to": NY})
    assert result["decision"] == "allow"
    assert result["account"] == "demo"
    status, result = await post_check(
        gateway, {"channel": "sms", "to": NY, "at": "2026-06-03T02:30:00Z"}
    )
    assert result["decision"] == "block"
    assert result["reasons"][0]["code"] == "QUIET_HOURS"
    await gateway.services.store.add_suppressions(
        [Suppression("bob@client.example.net", "t", "t", gateway.clock.now())]
    )
    status, result = await post_check(
        gateway, {"channel": "email", "to": "bob@client.example.net", "from": "k@example.com"}
    )
    assert [r["code"] for r in result["reasons"]] == ["SUPPRESSED"]
    assert await gateway.services.store.query_blocks(BlockQuery()) == []


async def test_check_needs_a_valid_bearer_token(gateway) -> None:
    assert (await post_check(gateway, {"channel": "call", "to": NY}, token=None))[0] == 401
    assert (await post_check(gateway, {"channel": "call", "to": NY}, token="nope"))[0] == 401
    assert (await post_check(gateway, {"channel": "call", "to": NY}, MANAGER_SECRET))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "fax", "to": NY},
        {"channel": "call"},
        {"channel": "call", "to": NY, "at": "soon"},
        {"channel": "call", "to": NY, "timezone": "Nowhere/Land"},
        {"channel": "call", "to": NY, "extra": 1},
        {"channel": "email", "to": "a@b.example.net"},
        ["not", "an", "object"],
    ],
)
async def test_bad_check_requests_are_400_with_a_reason(gateway, body) -> None:
    status, result = await post_check(gateway, body)
    assert status == 400
    assert result["error"]


async def test_invalid_json_is_400(gateway) -> None:
    url = f"http://127.0.0.1:{gateway.http_port}/v1/check"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{nope", headers={
            "Authorization": f"Bearer {DEMO_SECRET}", "Content-Type": "application/json",
        }) as response:
            assert response.status == 400
