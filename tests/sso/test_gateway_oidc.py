"""Signing in to /review with OpenID Connect, against the real OpenID Provider (oidc-provider):
over HTTP and in Chromium; people whose groups map to no role refused and audited; a callback
that was not started in this browser, or replayed, refused; the provider's key rotation; the
provider down (a clear page, sending unaffected)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.config.settings import load_config
from gateway.server import Gateway
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.browser import browser_missing, launch_options
from tests.conftest import DEMO_SECRET, write_config
from tests.e2e.test_operations import POSTMARK_EMAIL
from tests.postgres_server import free_port
from tests.sso.oidc_provider import OidcProvider, http_session, sign_in_over_http

ROLES = '{ "compliance-managers" = "manager", "gateway-admins" = "admin", "security" = "owner" }'

StartGateway = Callable[..., Awaitable[Gateway]]


async def gateway_for(
    provider: OidcProvider, start_gateway: StartGateway, tmp_path: Path, *,
    issuer: str | None = None, client_auth: str = "client_secret_basic",
) -> tuple[Gateway, str]:
    """A gateway on a port known beforehand (its public URL is the redirect URI's origin),
    with the provider as `[[sso.oidc]]` "test" and a client registered for it there."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client = provider.add_client([f"{base}/auth/oidc/test/callback"], client_auth)
    path = write_config(tmp_path, f"""
        [[sso.oidc]]
        name = "test"
        issuer = "{issuer or provider.issuer}"
        client_id = "{client.client_id}"
        client_secret = "{client.client_secret}"
        client_auth = "{client_auth}"
        roles = {ROLES}
        """)
    path.write_text(
        path.read_text()
        .replace('public_url = "https://gw.example.com"', f'public_url = "{base}"')
        .replace('[http]\nlisten = "127.0.0.1:0"', f'[http]\nlisten = "127.0.0.1:{port}"')
    )
    return await start_gateway(load_config(path)), base


async def sign_in(
    http: aiohttp.ClientSession, base: str, login: str
) -> tuple[aiohttp.ClientResponse, str]:
    """Through the provider's sign-in form to the callback, which is then fetched; the
    callback's answer and the page it leads to (or its own text when it does not redirect)."""
    callback = await sign_in_over_http(
        http, f"{base}/auth/oidc/test/login", login, until=f"{base}/auth/oidc/test/callback"
    )
    response = await http.get(callback, allow_redirects=False)
    if response.status != 303:
        return response, await response.text()
    page = await http.get(URL(base).join(URL(response.headers["Location"])))
    return response, await page.text()


async def audit(gateway: Gateway, action: str) -> list:
    return [e for e in await gateway.services.store.audit_events() if e.action == action]


@pytest.mark.parametrize("client_auth", ["client_secret_basic", "client_secret_post"])
async def test_a_manager_signs_in_and_out_over_http(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path,
    client_auth: str,
) -> None:
    gateway, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path,
                                      client_auth=client_auth)
    async with http_session() as http:
        response, page = await sign_in(http, base, "alice")
        assert response.status == 303 and response.headers["Location"] == "/review"
        cookie = response.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert "Signed in as <strong>Alice Manager</strong> (manager)" in page
        assert "<h1>Activity</h1>" in page

        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        out = await http.post(f"{base}/auth/logout", data={"csrf": csrf},
                              allow_redirects=False)
        assert out.status == 303
        again = await (await http.get(f"{base}/review")).text()
        assert "Signed in as" not in again and 'href="/auth/oidc/test/login"' in again

    [signed_in] = await audit(gateway, "review.signin")
    person = await gateway.services.store.person_by_user_name("alice@example.com")
    assert person is not None and person.external_id == "alice" and person.role == "manager"
    assert signed_in.actor == "alice@example.com"
    assert signed_in.details["person_id"] == person.person_id
    assert signed_in.details["method"] == "oidc:test"
    [signed_out] = await audit(gateway, "review.signout")
    assert signed_out.details["person_id"] == person.person_id


async def test_the_highest_mapped_role_wins(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with http_session() as http:
        _, page = await sign_in(http, base, "olga")  # security (owner) and gateway-admins
    assert "(owner)</p>" in page


@pytest.mark.parametrize("login", ["nina", "sam"])  # no groups; a group mapped to nothing
async def test_a_person_whose_groups_map_to_no_role_is_refused_and_audited(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path,
    login: str,
) -> None:
    gateway, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with http_session() as http:
        response, page = await sign_in(http, base, login)
        assert response.status == 403
        assert "none of this person&#x27;s groups is given a role" in page
        assert SESSION_COOKIE not in response.cookies
        assert "Signed in as" not in await (await http.get(f"{base}/review")).text()
    [refused] = await audit(gateway, "review.signin_failed")
    assert refused.details["method"] == "oidc:test" and refused.details["person_id"]
    assert await audit(gateway, "review.signin") == []


async def test_a_deactivated_person_is_refused_and_their_session_ends(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with http_session() as http:
        _, page = await sign_in(http, base, "bob")
        assert "(admin)</p>" in page
        person = await gateway.services.store.person_by_user_name("bob@example.com")
        await gateway.services.people.set_active(person.person_id, False)
        assert "Signed in as" not in await (await http.get(f"{base}/review")).text()
        response, page = await sign_in(http, base, "bob")
    assert response.status == 403 and "deactivated" in page


async def test_a_callback_not_started_in_this_browser_or_replayed_is_refused(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with http_session() as http:
        callback = await sign_in_over_http(
            http, f"{base}/auth/oidc/test/login", "alice", until=f"{base}/auth/oidc/test/callback"
        )
        pending = http.cookie_jar.filter_cookies(URL(f"{base}/auth/oidc/test/"))["oidc_test"]
        # the victim's browser (no pending sign-in) is handed the attacker's callback
        async with http_session() as victim:
            forced = await victim.get(callback, allow_redirects=False)
            assert forced.status == 400
            assert "not started in this browser" in await forced.text()
        wrong_state = callback.update_query(state="x" * 43)
        response = await http.get(wrong_state, allow_redirects=False)
        assert response.status == 400
        http.cookie_jar.update_cookies({"oidc_test": pending.value}, URL(f"{base}/auth/oidc/test/"))
        first = await http.get(callback, allow_redirects=False)
        assert first.status == 303
        http.cookie_jar.update_cookies({"oidc_test": pending.value}, URL(f"{base}/auth/oidc/test/"))
        replayed = await http.get(callback, allow_redirects=False)
        assert replayed.status == 400 and "already used" in await replayed.text()
    assert len(await audit(gateway, "review.signin")) == 1


async def test_an_error_from_the_provider_is_shown_as_its_code_and_audited(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    callback = f"{base}/auth/oidc/test/callback"
    async with http_session() as http:
        # not started in this browser: refused, and nothing audited (anyone may send it)
        stranger = await http.get(f"{callback}?error=access_denied", allow_redirects=False)
        assert stranger.status == 400
        login = await http.get(f"{base}/auth/oidc/test/login", allow_redirects=False)
        state = URL(login.headers["Location"]).query["state"]
        response = await http.get(
            URL(callback).with_query(state=state, error="access_denied\u202e<b>",
                                     error_description="<b>Call +1 555 0100 to sign in</b>"),
            allow_redirects=False,
        )
        page = await response.text()
    assert response.status == 403
    assert "access_denied" in page and "<b>" not in page and "555" not in page
    [refused] = await audit(gateway, "review.signin_failed")
    assert refused.details["method"] == "oidc:test" and "555" not in str(refused.details)


async def test_sign_in_keeps_working_when_the_provider_rotates_its_keys(
    oidc_provider: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider, start_gateway, tmp_path)
    async with http_session() as http:
        assert "(manager)</p>" in (await sign_in(http, base, "alice"))[1]
    oidc_provider.rotate_keys(retire=True)  # the key the gateway holds is gone
    async with http_session() as http:
        response, page = await sign_in(http, base, "bob")
    assert response.status == 303 and "(admin)</p>" in page


async def test_a_provider_that_is_down_gives_a_clear_page_and_sending_goes_on(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path,
                                issuer=f"http://127.0.0.1:{free_port()}")
    async with aiohttp.ClientSession() as http:
        response = await http.get(f"{base}/auth/oidc/test/login", allow_redirects=False)
        page = await response.text()
        assert response.status == 503 and response.headers["Retry-After"] == "60"
        assert "cannot be used just now" in page and "Sending is not affected" in page
        async with http.post(f"{base}/email", json=POSTMARK_EMAIL,
                             headers={"X-Postmark-Server-Token": DEMO_SECRET}) as sent:
            assert sent.status == 200, await sent.text()


async def test_an_unknown_provider_name_is_not_found(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with aiohttp.ClientSession() as http:
        for path in ("/auth/oidc/other/login", "/auth/oidc/other/callback?code=x&state=y"):
            assert (await http.get(f"{base}{path}", allow_redirects=False)).status == 404


async def test_a_manager_signs_in_with_chromium(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/review/login")
            await page.get_by_role("link", name="Sign in with test").click()
            await page.get_by_label(re.compile("login|email", re.I)).first.fill("alice")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/review")
            header = await page.locator("header").inner_text()
            assert "Signed in as Alice Manager (manager)" in header
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url(f"{base}/review/login")
            assert await page.get_by_role("link", name="Sign in with test").count() == 1
        finally:
            await browser.close()


async def test_a_signed_in_person_reads_the_admin_api_with_their_role(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    async with http_session() as http:
        assert (await http.get(f"{base}/v1/blocks")).status == 401  # not signed in
        await sign_in(http, base, "alice")  # a manager
        blocks = await http.get(f"{base}/v1/blocks")
        assert blocks.status == 200, await blocks.text()
        audit_log = await http.get(f"{base}/v1/audit")
        assert audit_log.status == 403 and "needs admin" in (await audit_log.json())["error"]
        change = await http.post(f"{base}/v1/suppressions", json={"addresses": ["a@b.example"]})
        assert change.status == 401  # a change needs a bearer token, not the browser's cookie


async def test_another_providers_user_with_the_same_sub_or_email_gets_nobodys_record(
    start_oidc_provider: Callable[..., OidcProvider], start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    """Two providers with the same people (same `sub`s, same emails): the partner's alice is
    not the company's alice, and takes over neither her record nor her role."""
    company, partner = start_oidc_provider(), start_oidc_provider()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sections = ""
    for name, provider, roles in (("company", company, ROLES),
                                  ("partner", partner, '{ "sales" = "rep" }')):
        client = provider.add_client([f"{base}/auth/oidc/{name}/callback"])
        sections += f"""
            [[sso.oidc]]
            name = "{name}"
            issuer = "{provider.issuer}"
            client_id = "{client.client_id}"
            client_secret = "{client.client_secret}"
            roles = {roles}
            """
    path = write_config(tmp_path, sections)
    path.write_text(
        path.read_text()
        .replace('public_url = "https://gw.example.com"', f'public_url = "{base}"')
        .replace('[http]\nlisten = "127.0.0.1:0"', f'[http]\nlisten = "127.0.0.1:{port}"')
    )
    gateway = await start_gateway(load_config(path))
    async with http_session() as http:
        callback = await sign_in_over_http(http, f"{base}/auth/oidc/company/login", "alice",
                                           until=f"{base}/auth/oidc/company/callback")
        assert (await http.get(callback, allow_redirects=False)).status == 303
    alice = await gateway.services.store.person_by_user_name("alice@example.com")
    assert alice.external_id == "company|alice"
    async with http_session() as http:
        callback = await sign_in_over_http(http, f"{base}/auth/oidc/partner/login", "alice",
                                           until=f"{base}/auth/oidc/partner/callback")
        response = await http.get(callback, allow_redirects=False)
        assert response.status == 403
        assert "another identity" in await response.text()
        assert "Signed in as" not in await (await http.get(f"{base}/review")).text()
    after = await gateway.services.store.person(alice.person_id)
    assert (after.external_id, after.role) == ("company|alice", "manager")


async def raw_request(base: str, request: bytes) -> bytes:
    host, port = URL(base).host, URL(base).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


async def test_undecodable_cookies_and_form_values_are_refused_not_crashed_on(
    oidc_provider_session: OidcProvider, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, base = await gateway_for(oidc_provider_session, start_gateway, tmp_path)
    pending = b"oidc_test=" + b"\xff" * 43 + b"." + b"a" * 43 + b"." + b"b" * 43
    answer = await raw_request(base, b"GET /auth/oidc/test/callback?code=c&state=x HTTP/1.1\r\n"
                               b"Host: 127.0.0.1\r\nCookie: " + pending
                               + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    answer = await raw_request(base, b"POST /auth/logout HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"Cookie: review_session=\xff\xfe\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n"
                               b"Content-Length: 6\r\nConnection: close\r\n\r\ncsrf=a")
    assert answer.startswith(b"HTTP/1.1 403 ")
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{base}/auth/logout", data={"csrf": "\u00e9"},
                                   headers={"Cookie": "review_session=anything"},
                                   allow_redirects=False)
        assert response.status == 403
