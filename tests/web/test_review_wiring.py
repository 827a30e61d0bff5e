"""The review page as the running gateway serves it (routes wired, session key derived)."""

from __future__ import annotations

import aiohttp

from tests.conftest import DEMO_SECRET, MANAGER_SECRET


async def sign_in(gateway, secret: str) -> tuple[int, str, str]:
    """The cookie is Secure (https public URL), so it is sent back by hand over loopback."""
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.post(f"{base}/review/login", data={"secret": secret},
                             allow_redirects=False) as response:
            cookie = response.headers.get("Set-Cookie", "")
            status = response.status
        session = cookie.split(";", 1)[0]
        async with http.get(f"{base}/review", headers={"Cookie": session}) as page:
            return status, cookie, await page.text()


async def test_manager_signs_in_on_the_running_gateway(gateway) -> None:
    status, cookie, page = await sign_in(gateway, MANAGER_SECRET)
    assert status == 303
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" in cookie  # public_url is https in the test configuration
    assert "Signed in as" in page
    actions = [e.action for e in await gateway.services.store.audit_events()]
    assert "review.signin" in actions


async def test_rep_is_refused(gateway) -> None:
    status, cookie, _ = await sign_in(gateway, DEMO_SECRET)
    assert status == 403
    assert "review_session" not in cookie
