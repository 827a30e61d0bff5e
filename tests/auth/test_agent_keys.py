"""Agent keys: made by `keys create`, accepted wherever an account secret is (SMTP AUTH,
Postmark's server token, Twilio's Basic auth, the admin API), never refused for someone
else's failed guesses, and guessed at no faster than a source prefix's budget allows.

The CLI runs as a real process on the gateway's configuration; the gateway runs in this
process on real sockets, with a clock the test steps.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from postmarker.core import PostmarkClient
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client as TwilioClient

from gateway.auth.agent_keys import AgentKeys
from gateway.config.settings import ConfigError, load_config
from gateway.runtime.metrics import Metrics
from gateway.server import Gateway
from gateway.services.store_gauges import StoreGauges
from gateway.store import open_store
from tests.auth.test_login_limits import attempt, config_with, send_with_secret
from tests.conftest import DEMO_SECRET, write_config
from tests.fakes.clock import SteppingClock
from tests.fakes.store import FlakyStore
from tests.test_cli import cli

TWILIO = '''
[upstream.twilio]
kind = "outbox"
account_sid = "AC00000000000000000000000000000000"
auth_token = "gateway-twilio-auth-token-0123"
'''
LIMITS = (
    "max_failed_logins = 3\nfailed_login_window_s = 60\nlogin_lockout_s = 300\n"
    "max_failed_keys_per_prefix = 3\n"
)
KEY = re.compile(r"^cgk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
SID = "AC" + "0" * 32


def create_key(config: Path, *arguments: str) -> str:
    made = cli(config, "keys", "create", *arguments)
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    assert KEY.match(key), made.stdout
    return key


@pytest.fixture
async def keyed(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> tuple[Gateway, SteppingClock, str]:
    """A running gateway and a key for account `demo` made by the CLI on its store."""
    config = config_with(tmp_path, LIMITS, TWILIO)
    assert config.source is not None
    key = create_key(Path(config.source), "--account", "demo")
    clock = SteppingClock()
    return await start_gateway(config, clock=clock), clock, key


def test_create_prints_the_key_once_and_stores_only_a_digest(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key = create_key(config, "--account", "demo", "--expires", "90d")
    listed = cli(config, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    key_id = key.split("_")[1]
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(key_id)]
    assert line.split()[1:4] == ["demo", "active", "0.0"]
    assert key not in listed.stdout
    database = (tmp_path / "var" / "gateway.db").read_bytes()
    assert key.encode() not in database and key.split("_", 2)[2].encode() not in database
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit")]
    assert "key.created" in actions


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--account", "nobody"), "no account named 'nobody'"),
        (("--account", "demo", "--expires", "0d"), "is not in the future"),
        (("--account", "demo", "--expires", "soon"), "soon"),
    ],
)
def test_create_refuses_what_it_cannot_honour(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    made = cli(write_config(tmp_path), "keys", "create", *arguments)
    assert made.returncode == 2
    assert message in made.stderr and "cgk_" not in made.stdout


def test_key_commands_refuse_without_a_configuration(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--account", "demo"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert made.returncode == 2
    assert "no configuration file was found" in made.stderr
    assert list(tmp_path.iterdir()) == []


async def test_a_key_opens_smtp_postmark_twilio_and_the_admin_api(keyed) -> None:
    gateway, _, key = keyed
    assert await attempt(gateway, "demo", key) == 235
    assert await attempt(gateway, "boss", key) == 535  # the key is demo's, not boss's
    client = PostmarkClient(server_token=key, root_api_url=f"http://127.0.0.1:{gateway.http_port}/")
    sent = await asyncio.to_thread(
        client.emails.send, From="katie@example.com", To="bob@client.example.net",
        Subject="Fleet costs", TextBody="Hi Bob",
    )
    assert sent["ErrorCode"] == 0
    twilio = TwilioClient("demo", key, account_sid=SID)
    twilio.api.base_url = f"http://127.0.0.1:{gateway.http_port}"
    with pytest.raises(TwilioRestException) as refused:
        await asyncio.to_thread(
            twilio.messages.create, to="+14155550123", from_="+14155550100", body="Hi"
        )
    assert refused.value.status == 400 and "NO_CONSENT" in refused.value.msg  # signed in
    twilio = TwilioClient("demo", DEMO_SECRET[:-1] + "x", account_sid=SID)
    twilio.api.base_url = f"http://127.0.0.1:{gateway.http_port}"
    with pytest.raises(TwilioRestException) as refused:
        await asyncio.to_thread(
            twilio.messages.create, to="+14155550123", from_="+14155550100", body="Hi"
        )
    assert refused.value.status == 401
    status, _, _ = await send_with_secret(gateway, "admin", key, "127.0.0.1")
    assert status == 403  # demo is a rep: authenticated, then refused by role


async def test_a_valid_key_is_accepted_from_a_prefix_locked_out_for_passwords(keyed) -> None:
    """Behind a NAT every agent shares an address: one agent's bad password must not stop
    the others' keys."""
    gateway, _, key = keyed
    for n in range(3):
        assert await attempt(gateway, "nobody", f"a-guess-{n:04}", "127.0.30.1") == 535
    assert await attempt(gateway, "demo", DEMO_SECRET, "127.0.30.2") == 454
    assert await attempt(gateway, "demo", key, "127.0.30.2") == 235
    status, _, _ = await send_with_secret(gateway, "postmark", key, "127.0.30.3")
    assert status not in (401, 429)


async def test_wrong_keys_use_up_the_prefix_budget_and_are_then_answered_429(keyed) -> None:
    gateway, clock, key = keyed
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    statuses = [
        (await send_with_secret(gateway, "postmark", wrong, f"127.0.31.{n}"))[0]
        for n in range(1, 5)
    ]
    assert statuses == [401, 401, 429, 429]
    status, retry_after, body = await send_with_secret(gateway, "postmark", wrong, "127.0.31.9")
    assert (status, retry_after) == (429, "300") and '"ErrorCode": 429' in body
    assert await attempt(gateway, "demo", key, "127.0.31.9") == 235  # the real key still works
    assert (await send_with_secret(gateway, "postmark", wrong, "127.0.32.1"))[0] == 401
    await gateway.services.login_limits.flush()
    locked = [e.subject for e in await gateway.services.store.audit_events()
              if e.action == "login.locked_out"]
    assert locked == ["keys 127.0.31.0/24"]
    clock.advance(301)
    assert (await send_with_secret(gateway, "postmark", wrong, "127.0.31.1"))[0] == 401


async def test_a_revoked_or_expired_key_is_refused_at_once(tmp_path: Path) -> None:
    config = config_with(tmp_path, LIMITS)
    assert config.source is not None
    source = Path(config.source)
    revoked = create_key(source, "--account", "demo")
    expiring = create_key(source, "--account", "demo", "--expires", "1h")
    clock = SteppingClock(datetime.now(UTC))  # the CLI dated the expiry by the real clock
    gateway = Gateway(config, clock=clock)
    await gateway.start()
    try:
        assert await attempt(gateway, "demo", revoked) == 235
        done = await asyncio.to_thread(cli, source, "keys", "revoke", revoked)
        assert done.returncode == 0, done.stderr
        assert await attempt(gateway, "demo", revoked) == 535
        again = await asyncio.to_thread(cli, source, "keys", "revoke", revoked.split("_")[1])
        assert again.returncode == 2
        assert await attempt(gateway, "demo", expiring) == 235
        clock.advance(3601)
        assert await attempt(gateway, "demo", expiring) == 535
    finally:
        await gateway.stop()


async def test_the_review_page_takes_no_agent_key(keyed) -> None:
    gateway, _, key = keyed
    url = f"http://127.0.0.1:{gateway.http_port}/review/login"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"secret": key}, allow_redirects=False,
                             headers={"Origin": f"http://127.0.0.1:{gateway.http_port}"}) as page:
            assert page.status == 401


def test_an_account_secret_may_not_look_like_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.secret.*cgk_"):
        load_config(write_config(tmp_path, demo_secret="cgk_looks-like-a-key-0123"))


async def test_sign_in_fails_closed_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    """Neither a key nor a password is checked while the counts and keys cannot be read:
    a temporary failure, which the agent retries."""
    config = config_with(tmp_path, LIMITS)
    assert config.source is not None
    key = create_key(Path(config.source), "--account", "demo")
    store = FlakyStore(open_store(config.store_url))
    gateway = Gateway(config, store=store)  # type: ignore[arg-type]
    await gateway.start()
    try:
        store.down = True
        assert await attempt(gateway, "demo", key) == 454
        assert await attempt(gateway, "demo", DEMO_SECRET) == 454
        status, retry_after, body = await send_with_secret(
            gateway, "postmark", DEMO_SECRET, "127.0.0.1"
        )
        assert (status, retry_after) == (503, "30") and "STORE_UNAVAILABLE" in body
        store.down = False
        assert await attempt(gateway, "demo", key) == 235
    finally:
        store.down = False
        await gateway.stop()


async def test_each_usable_key_s_age_is_a_metric_beside_the_configured_maximum(
    tmp_path: Path,
) -> None:
    """For the operations alert on keys due for rotation (GatewayAgentKeyTooOld)."""
    store = open_store(f"sqlite:///{tmp_path}/gateway.db")
    await store.open()
    clock = SteppingClock()
    keys = AgentKeys(store, clock)
    keys.use_pepper(b"pepper-for-this-test-0123456789")
    metrics = Metrics()
    gauges = StoreGauges(metrics, store, clock=clock, max_age_days={"agent": 30})
    try:
        old, _ = await keys.create("demo", None)
        clock.advance(86400)
        new, _ = await keys.create("demo", None)
        expiring, _ = await keys.create("boss", clock.now() + timedelta(hours=1))
        clock.advance(600)
        await gauges.refresh()

        def age(key_id: str) -> float | None:
            return metrics.registry.get_sample_value(
                "gateway_key_age_seconds", {"kind": "agent", "id": key_id}
            )

        assert age(old.key_id) == pytest.approx(86400 + 600, abs=5)
        assert age(new.key_id) == pytest.approx(600, abs=5)
        assert metrics.registry.get_sample_value(
            "gateway_key_max_age_seconds", {"kind": "agent"}
        ) == 30 * 86400
        await keys.revoke(old.key_id)
        clock.advance(3600)
        await gauges.refresh()
        assert age(old.key_id) is None and age(expiring.key_id) is None
        assert age(new.key_id) == pytest.approx(4200, abs=5)
    finally:
        await store.close()
