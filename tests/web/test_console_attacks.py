"""The console attacked over HTTP, as the gateway wires it (Gateway.http_app, the real
SQLite store, people signed in through the configured provider): each test here failed
before the fix its docstring names."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.config.settings import Config
from gateway.model import Role
from gateway.runtime.clock import Clock
from gateway.server import Gateway
from gateway.services.people import Identity
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.web.test_review import NOW, SSO, decision

ROLES = {"admins": Role.ADMIN, "managers": Role.MANAGER, "reps": Role.REP}
MARKUP = '"><svg onload=alert(1)></title></style>'


@dataclass
class Console:
    client: TestClient
    gateway: Gateway
    tokens: dict[str, str]

    async def get(self, path: str, role: str = "admin", **headers: str) -> ClientResponse:
        return await self.client.get(
            path, allow_redirects=False,
            headers={"Cookie": f"{SESSION_COOKIE}={self.tokens[role]}", **headers},
        )


async def signed_in(gateway: Gateway, group: str) -> str:
    email = f"{group}@acme.example"
    person, _ = await gateway.services.people.signed_in(
        Identity(email, f"okta|{email}", group.title(), (group,)), ROLES)
    return await gateway.services.sessions.open(
        role=ROLES[group].name.lower(), method="oidc:okta", person_id=person.person_id)


@pytest.fixture
async def console(config_factory: Callable[..., Config]) -> AsyncIterator[Console]:
    gateway = Gateway(dataclasses.replace(config_factory(), sso=SSO), clock=Clock(NOW))
    await gateway.services.open()
    try:
        await gateway.services.store.record_decisions([
            decision(1, f"x{MARKUP}@example.com", "QUIET_HOURS", subject=MARKUP),
        ])
        tokens = {role: await signed_in(gateway, f"{role}s")
                  for role in ("admin", "manager", "rep")}
        async with TestClient(TestServer(gateway.http_app())) as client:
            yield Console(client, gateway, tokens)
    finally:
        await gateway.services.close()


def assert_console_headers(response: ClientResponse) -> None:
    assert response.headers.get("Cache-Control") == "no-store"
    assert "default-src 'none'" in response.headers.get("Content-Security-Policy", "")
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize(("query", "named"), [
    ("since=0001-01-02T00:00:00Z", "since: must be 1970-01-01 or later"),
    ("until=9999-12-31T23:00:00Z", "until: must be before 9000-01-01"),
    ("since=2000-01-01T00:00:00Z&until=8000-01-01T00:00:00Z", "since: at most"),
])
async def test_an_activity_window_past_the_calendar_or_of_millennia_is_a_400(
    console: Console, query: str, named: str
) -> None:
    """Was a 500 (ValueError: year 0 / year 10000 out of range while the chart's buckets
    were cut), and a window of millennia counted one index range per bucket: some 40,000
    SQLite queries, 1.6 s for an empty log."""
    response = await console.get(f"/review?{query}")
    assert response.status == 400
    assert named in await response.text()
    assert_console_headers(response)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/review/decisions/abc", 404),
    ("GET", "/review/nowhere", 404),
    ("GET", "/review/suppressions/add", 405),
    ("GET", "/review/audit/verify", 405),
])
async def test_a_console_address_the_router_refuses_is_a_console_page(
    console: Console, method: str, path: str, status: int
) -> None:
    """aiohttp's own "404: Not Found" and "405: Method Not Allowed" carried none of the
    console's headers: no no-store, no CSP, no frame refusal."""
    response = await console.client.request(
        method, path, headers={"Cookie": f"{SESSION_COOKIE}={console.tokens['admin']}"},
        allow_redirects=False)
    assert response.status == status
    assert response.content_type == "text/html"
    assert_console_headers(response)
    if status == 405:
        assert response.headers["Allow"] == "POST"


async def test_a_failing_console_page_is_a_500_page_with_the_headers(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(console.gateway.services.store, "decision_summary", broken)
    response = await console.get("/review")
    assert response.status == 500
    assert "bug" not in await response.text()
    assert_console_headers(response)


@pytest.mark.parametrize("path", [
    "/v1/decisions", "/v1/decisions?format=csv", "/v1/decisions?format=json",
    "/v1/decisions/1/evidence",
])
async def test_the_exports_the_activity_page_links_are_not_cached(
    console: Console, path: str
) -> None:
    """The CSV and JSON exports and the evidence JSON had no Cache-Control: recipients,
    subjects and evidence could stay in a browser's or proxy's cache after sign-out."""
    response = await console.get(path, role="manager")
    assert response.status == 200
    assert response.headers.get("Cache-Control") == "no-store"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
