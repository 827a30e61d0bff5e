"""Review sessions live in the store, so ending one is seen at once: a SIGHUP reload that
removes an account or changes its secret or role ends that account's sessions (perhaps the
secret leaked), and leaves everyone else signed in. Real HTTP to a running gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from gateway.config.settings import load_config
from gateway.server import Gateway
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.conftest import MANAGER_SECRET, write_config

AUDITOR_SECRET = "auditor-secret-0123456789"
AUDITOR = f"""
[[accounts]]
name = "auditor"
secret = "{AUDITOR_SECRET}"
role = "manager"
sender_domains = []
"""


async def signed_in_cookie(gateway: Gateway, secret: str) -> str:
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/review/login", data={"secret": secret},
                             headers={"Origin": base}, allow_redirects=False) as response:
            assert response.status == 303
            return response.cookies[SESSION_COOKIE].value


async def is_signed_in(gateway: Gateway, cookie: str) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gateway.http_port}/review",
                            headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}) as response:
            return "<h1>Activity</h1>" in await response.text()


async def test_a_reload_that_changes_an_account_ends_its_sessions_only(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    path = write_config(tmp_path, AUDITOR)
    gateway = await start_gateway(load_config(path))
    boss = await signed_in_cookie(gateway, MANAGER_SECRET)
    auditor = await signed_in_cookie(gateway, AUDITOR_SECRET)
    assert await is_signed_in(gateway, boss) and await is_signed_in(gateway, auditor)

    path.write_text(path.read_text().replace(MANAGER_SECRET, "a-new-secret-after-a-leak-0123"))
    await gateway.reload_accounts()
    assert not await is_signed_in(gateway, boss)
    assert await is_signed_in(gateway, auditor)

    path.write_text(path.read_text().replace(AUDITOR, ""))
    await gateway.reload_accounts()
    assert not await is_signed_in(gateway, auditor)
