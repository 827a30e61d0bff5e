"""Replicas configured as the quick start has it (no `[tokens]`, no erasure key, each with
its own data_dir; one `[encryption]` key, the one thing replicas must be given since data
keys never live in the store) on one PostgreSQL database share what must be shared: an
unsubscribe link or a review session issued by one works on the other, erased opt-outs
match on both, and sign-in counts are one count. A configured key that differs from its
peers' stops start-up, and so does a data key each replica generated for itself.

Each replica is a gateway on its own ports in this process; every request is real HTTP or
SMTP.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.auth.unsubscribe_tokens import UnsubscribeTokens
from gateway.config.settings import Config, ConfigError, load_config
from gateway.model import Channel
from gateway.server import Gateway
from gateway.web.people_sign_in import SESSION_COOKIE
from tests.auth.test_login_limits import attempt
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, write_config

RECIPIENT = "bob@client.example.net"
QUICK_START_LIMITS = "max_failed_logins = 3\n"
SHARED_DATA_KEY = '[encryption]\nkeys = { r1 = "' + base64.b64encode(b"r" * 32).decode() + '" }\n'


def replica_config(
    directory: Path, store_url: str, tokens: str = "", encryption: str = SHARED_DATA_KEY
) -> Config:
    """The test configuration without its `[tokens]` table (or with `tokens` instead), and
    with the data key every replica is given (`encryption`)."""
    directory.mkdir(exist_ok=True)
    path = write_config(directory, encryption)
    text = re.sub(r"\[tokens\]\n[^\[]*", tokens, path.read_text())
    text = text.replace('url = "sqlite:///var/gateway.db"', f'url = "{store_url}"')
    text = text.replace("[smtp]\n", "[smtp]\n" + QUICK_START_LIMITS, 1)
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def start_replica(
    postgres_url: str, tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> Callable[..., Awaitable[Gateway]]:
    async def start(name: str, tokens: str = "", prepare: Callable[[Path], None] | None = None,
                    encryption: str = SHARED_DATA_KEY) -> Gateway:
        config = replica_config(tmp_path / name, postgres_url, tokens, encryption)
        if prepare is not None:
            prepare(config.data_dir)
        return await start_gateway(config)

    return start


def base(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


async def test_a_link_issued_by_one_replica_unsubscribes_on_the_other(start_replica) -> None:
    a: Gateway = await start_replica("a")
    b: Gateway = await start_replica("b")
    link = a.services.unsubscribe.links(RECIPIENT, "katie@example.com", Channel.EMAIL)
    path = link.url.removeprefix(a.config.public_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(base(b) + path) as page:
            assert page.status == 200, await page.text()
        async with http.post(
            base(b) + path, data={"List-Unsubscribe": "One-Click"}
        ) as confirmed:
            assert confirmed.status == 200
    assert await a.services.store.suppressed([RECIPIENT]) == {RECIPIENT}
    for replica in (a, b):
        assert not (replica.config.data_dir / "token-keys.json").exists()
        assert not (replica.config.data_dir / "erasure-key").exists()
    assert a.services.erasure_key == b.services.erasure_key


async def test_a_review_session_opened_on_one_replica_holds_on_the_other(start_replica) -> None:
    a: Gateway = await start_replica("a")
    b: Gateway = await start_replica("b")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            base(a) + "/review/login", data={"secret": MANAGER_SECRET},
            headers={"Origin": base(a)}, allow_redirects=False,
        ) as signed_in:
            assert signed_in.status == 303
            cookie = signed_in.cookies[SESSION_COOKIE].value
        async with http.get(
            base(b) + "/review", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
            allow_redirects=False,
        ) as page:
            assert page.status == 200 and "Sign in" not in await page.text()


async def test_failed_sign_ins_on_one_replica_lock_out_on_the_other(start_replica) -> None:
    a: Gateway = await start_replica("a")
    b: Gateway = await start_replica("b")
    for n, replica in enumerate((a, b, a)):
        assert await attempt(replica, "demo", f"wrong-password-{n}", "127.0.40.1") == 535
    assert await attempt(b, "demo", DEMO_SECRET, "127.0.41.1") == 454
    assert await attempt(a, "boss", MANAGER_SECRET, "127.0.41.1") == 235


async def test_a_configured_token_key_that_differs_from_the_peers_stops_start_up(
    start_replica,
) -> None:
    await start_replica("a", '[tokens]\nkeys = { k1 = "' + "a" * 40 + '" }\n')
    with pytest.raises(ConfigError, match=r"tokens\.keys\.k1.*differs"):
        await start_replica("b", '[tokens]\nkeys = { k1 = "' + "b" * 40 + '" }\n')


async def test_data_keys_each_replica_generated_stop_the_second_naming_the_key(
    start_replica,
) -> None:
    """Without `[encryption] keys` each replica generates its own data key into its data_dir:
    the second would seal what the first cannot open, so it refuses, naming the key and the
    file, and generates no key of its own."""
    a: Gateway = await start_replica("a", encryption="")
    assert (a.config.data_dir / "data-keys.json").exists()
    with pytest.raises(ConfigError, match=r"encryption\.keys\.d1 \(.*data-keys\.json\).*missing"):
        await start_replica("b", encryption="")
    assert not (a.config.data_dir.parent.parent / "b" / "var" / "data-keys.json").exists()


def legacy_key_file(key: str) -> Callable[[Path], None]:
    """The token key an earlier version generated into data_dir."""
    def write(data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "token-keys.json").write_text(json.dumps({"active": "g1", "keys": {"g1": key}}))
    return write


async def test_links_signed_with_keys_replicas_generated_before_sharing_keep_working(
    start_replica,
) -> None:
    """Upgrading replicas that each generated a key: every link ever sent still works on
    every replica, including one that started before its peer shared its old key."""
    old_a, old_b = "old-key-of-replica-a-" + "a" * 30, "old-key-of-replica-b-" + "b" * 30
    a: Gateway = await start_replica("a", prepare=legacy_key_file(old_a))
    b: Gateway = await start_replica("b", prepare=legacy_key_file(old_b))
    issued_at = a.clock.now()
    async with aiohttp.ClientSession() as http:
        for old_key in (old_a, old_b):
            token = UnsubscribeTokens({"g1": old_key.encode()}, "g1").issue(
                RECIPIENT, "katie@example.com", Channel.EMAIL, issued_at
            )
            for replica in (a, b):
                async with http.get(f"{base(replica)}/u/{token}") as page:
                    assert page.status == 200, (old_key, replica.config.data_dir)
        forged = UnsubscribeTokens({"g1": b"never-a-key-of-any-replica-0123456789"}, "g1")
        token = forged.issue(RECIPIENT, "katie@example.com", Channel.EMAIL, issued_at)
        async with http.get(f"{base(a)}/u/{token}") as page:
            assert page.status == 404


CONFIGURED = '[tokens]\nkeys = { k1 = "' + "c" * 40 + '" }\n'


@pytest.mark.parametrize("configured_first", [True, False])
async def test_configured_and_generated_token_keys_never_mix(
    start_replica, configured_first: bool
) -> None:
    """Half the replicas signing with one key and half with another would make every link
    fail on the other half: whichever starts second refuses, naming the key."""
    first, second = (CONFIGURED, "") if configured_first else ("", CONFIGURED)
    await start_replica("a", first)
    expected = "tokens.keys" + (r"\b" if configured_first else r"\.g1")
    with pytest.raises(ConfigError, match=expected):
        await start_replica("b", second)


async def test_a_generated_key_kept_in_the_configuration_goes_on_verifying(
    start_replica,
) -> None:
    """Moving from the generated key to configured ones: the generated key, kept as g1."""
    a: Gateway = await start_replica("a")
    generated = (await a.services.store.settings_named("key:unsubscribe-token:g1"))[
        "key:unsubscribe-token:g1"
    ]
    link = a.services.unsubscribe.links(RECIPIENT, "katie@example.com", Channel.EMAIL)
    b: Gateway = await start_replica(
        "b", f'[tokens]\nkeys = {{ g1 = "{generated}", k2 = "{"d" * 40}" }}\nactive = "k2"\n'
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(base(b) + link.url.removeprefix(a.config.public_url)) as page:
            assert page.status == 200


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"active": "g1"}', b'{"keys": ["a"]}', b"\xff\xfe",
     b'{"keys": {"g1": null}}', b'{"keys": {"g1": "short"}}', b'{"keys": {}}'],
)
async def test_a_damaged_key_file_of_an_earlier_version_stops_start_up(
    start_replica, content: bytes
) -> None:
    def damaged(data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "token-keys.json").write_bytes(content)

    with pytest.raises(ConfigError, match=r"gateway\.data_dir.*token-keys\.json.*damaged"):
        await start_replica("a", prepare=damaged)


async def test_an_empty_erasure_key_file_stops_start_up_and_claims_nothing(
    start_replica,
) -> None:
    def empty(data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "erasure-key").write_text("\n")

    with pytest.raises(ConfigError, match=r"gateway\.data_dir.*erasure-key"):
        await start_replica("a", prepare=empty)
    a: Gateway = await start_replica("b")
    assert len(a.services.erasure_key) >= 32
