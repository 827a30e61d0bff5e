"""The console attacked over HTTP, as the gateway wires it (Gateway.http_app, the real
SQLite store, people signed in through the configured provider): each test here failed
before the fix its docstring names."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.config.settings import Config
from gateway.runtime.clock import Clock
from gateway.server import Gateway
from gateway.store.base import ConsentQuery, Store
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.web.console_helpers import csrf_of, person_session
from tests.web.test_review import NOW, SSO, decision, review_app

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
    services = gateway.services
    return await person_session(services.people, services.sessions, f"{group}@acme.example",
                                group)


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

    monkeypatch.setattr(console.gateway.services.store, "query_decisions", broken)
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


async def page_csrf(console: Console, path: str) -> str:
    return csrf_of(await (await console.get(path)).text())


async def post(console: Console, path: str, data: Any) -> ClientResponse:
    return await console.client.post(
        path, data=data, allow_redirects=False,
        headers={"Cookie": f"{SESSION_COOKIE}={console.tokens['admin']}"})


def csv_upload(csrf: str, text: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    form.add_field("file", text.encode(), filename="consents.csv", content_type="text/csv")
    return form


HEADER = "subject,channel,kind,obtained_at,source\n"
ROW = "+14155550100,sms,express-written,2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(("text", "named"), [
    (HEADER + ROW + "\n", "line 2: no cell for source"),
    (HEADER + ROW + "," + "a" * 140_000 + "\n", "not readable as CSV"),
    (HEADER + ROW + ",web form \x00\n", "must not contain NUL"),
])
async def test_a_consent_file_the_csv_module_or_the_store_cannot_take_is_a_400(
    console: Console, text: str, named: str
) -> None:
    """A row short of its source cell was a 500 (AttributeError on None), a cell over the
    csv module's 128 KiB field limit a 500 (csv.Error), and a NUL in a source was stored
    on SQLite but a 503 on PostgreSQL, whose text cannot hold it."""
    csrf = await page_csrf(console, "/review/consents")
    response = await post(console, "/review/consents/import", csv_upload(csrf, text))
    assert response.status == 400
    assert named in await response.text()
    store = console.gateway.services.store
    assert await store.consent_page(ConsentQuery(None, None, None, 10)) == []


async def test_a_control_character_in_a_form_or_a_search_is_a_400(console: Console) -> None:
    """A NUL in a suppression's reason or in a list's search was a 503 on PostgreSQL."""
    csrf = await page_csrf(console, "/review/suppressions")
    response = await post(console, "/review/suppressions/add", {
        "csrf": csrf, "addresses": "ann@example.com", "reason": "asked \x00 to stop"})
    assert response.status == 400
    assert "reason: must not contain control characters" in await response.text()
    assert not await console.gateway.services.store.suppressed(("ann@example.com",))
    response = await post(console, "/review/suppressions/add", {
        "csrf": csrf, "addresses": "ann@example.com", "reason": "asked\r\n\tto stop"})
    assert response.status == 303, "a typed line break or tab stays allowed"
    for path in ("/review/suppressions", "/review/consents"):
        response = await console.get(f"{path}?q=ann%00")
        assert response.status == 400
        assert "q: must not contain control characters" in await response.text()
    forged = base64.urlsafe_b64encode(json.dumps(["a\x00", "console"]).encode()).decode()
    response = await console.get(f"/review/suppressions?after={forged}")
    assert response.status == 400
    assert "after: not a page link this console gave out" in await response.text()


@pytest.mark.parametrize("path", [
    "/v1/decisions?limit=" + "9" * 5000,
    "/v1/decisions?since=" + "9" * 5000 + "d",
    "/review?since=" + "9" * 5000 + "d",
    "/review/audit?since=" + "9" * 5000 + "d",
])
async def test_a_number_of_thousands_of_digits_is_a_400(console: Console, path: str) -> None:
    """int() refuses more than 4300 digits with a ValueError, which the limit and span
    checks did not expect: a 500 from the API and the console alike."""
    response = await console.get(path)
    assert response.status == 400
    assert ("limit: must be a whole number" in await response.text()
            or "since: that span reaches beyond the calendar" in await response.text())


async def chunked(head: bytes, size: int) -> AsyncIterator[bytes]:
    """A form body of `size` bytes sent without Content-Length (chunked)."""
    yield head
    for _ in range(size // 65536):
        yield b"a" * 65536


@pytest.mark.parametrize(("path", "signed_in"), [
    ("/review/logout", False),
    ("/auth/logout", False),
    ("/u/not-a-token", False),
    ("/webhooks/twilio", False),
    ("/review/suppressions/add", True),
])
async def test_a_chunked_form_is_read_no_further_than_its_limit(
    console: Console, path: str, signed_in: bool
) -> None:
    """Each form checked Content-Length only: a chunked body has none, and was read up to
    the application's 64 MiB limit, by anyone (sign-in, sign-out, unsubscribe, Twilio's
    webhook) before any check of who sent it."""
    cookie = {"Cookie": f"{SESSION_COOKIE}={console.tokens['admin']}"} if signed_in else {}
    response = await console.client.post(
        path, data=chunked(b"List-Unsubscribe=One-Click&secret=x&reason=r&addresses=",
                           4 * 1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded", **cookie},
        allow_redirects=False)
    assert response.status == 413


async def test_a_chunked_sign_in_form_is_read_no_further_than_its_limit(
    config_factory: Callable[..., Config], store: Store
) -> None:
    """The secret sign-in form (open without single sign-on) had the same hole: half a
    MiB, under this test app's 1 MiB limit, was read and its secret checked (401)."""
    async with TestClient(TestServer(review_app(store, config_factory()))) as client:
        response = await client.post(
            "/review/login", data=chunked(b"secret=", 512 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            allow_redirects=False)
        assert response.status == 413


@pytest.mark.parametrize(("kind", "obtained_at"), [
    ("implied-purchase", "9999-06-01T00:00:00+00:00"),  # its expiry, 24 months on
    ("express-written", "9999-12-31T23:00:00-05:00"),  # in UTC
    ("express-written", "0001-01-01T00:00:00+05:00"),
])
async def test_a_consent_at_the_calendars_edge_is_a_400(
    console: Console, kind: str, obtained_at: str
) -> None:
    """Was a 500: the expiry or the UTC time fell past year 9999 or before year 1."""
    csrf = await page_csrf(console, "/review/consents")
    response = await post(console, "/review/consents/add", {
        "csrf": csrf, "subject": "+14155550100", "channel": "sms", "kind": kind,
        "obtained_at": obtained_at, "source": "web form"})
    assert response.status == 400
    assert "obtained_at is too close to year 1 or 9999" in await response.text()


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/decisions?account=demo", "/v1/blocks"])
async def test_a_person_with_the_rep_role_reads_no_account_through_the_api(
    console: Console, path: str
) -> None:
    """A rep's reading is scoped to its account by name; a person is no account, so their
    session must not stand in for one (an account named like their email would open)."""
    refused = await console.get(path, "rep")
    assert refused.status == 403, await refused.text()
    assert "rep" in (await refused.json())["error"]
    assert (await console.get("/v1/decisions", "manager")).status == 200
