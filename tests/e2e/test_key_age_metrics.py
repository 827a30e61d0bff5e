"""Every key the running gateway holds has an age at /metrics (issue 21, item 4): the
unsubscribe-token keys, agent keys (`keys create`), `[[dkim]]` keys and the SAML sign-in
binding key and the data keys, each from a creation time kept in the store, beside a
maximum per kind.

Ages are checked against creation times seeded into the store long before the test, so no
assertion depends on how long the test takes."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth.saml import NONCE_KEY_SETTING
from gateway.config.settings import Config, load_config
from gateway.model import DkimKey
from gateway.server import Gateway
from gateway.services.data_keys import CREATED as DATA_KEY_CREATED
from gateway.services.key_ages import (
    DKIM_CREATED,
    TOKEN_CREATED,
    dkim_created_setting,
    session_created_setting,
)
from gateway.store import open_store
from tests.auth.test_agent_keys import create_key
from tests.conftest import write_config
from tests.e2e.test_operations import eventually
from tests.rewrite.test_dkim import rsa_pem
from tests.test_cli import cli

DAY = 86400.0
SETTINGS = """
[[dkim]]
domain = "example.com"
selector = "gw2026"
private_key = "dkim-example.pem"

[keys]
max_age_days = 30
dkim_max_age_days = 400
"""
NONCE_KEY = "n" * 64
TOKEN_AGE_DAYS = 100
SESSION_AGE_DAYS = 40
DKIM_ID = "gw2026._domainkey.example.com"


def key_config(tmp_path: Path, pem: bytes) -> Config:
    (tmp_path / "dkim-example.pem").write_bytes(pem)
    path = write_config(tmp_path, SETTINGS)
    path.write_text(path.read_text().replace(
        "drain_timeout_s = 5", "drain_timeout_s = 5\nmetrics_refresh_s = 1"
    ))
    return load_config(path)


async def seed(config: Config, settings: dict[str, str]) -> None:
    """Settings written into the gateway's store before it starts, as an earlier run would."""
    store = open_store(config.store_url)
    await store.open()
    try:
        for name, value in settings.items():
            await store.claim_setting(name, value)
    finally:
        await store.close()


async def samples(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def age(found: dict, kind: str, key_id: str) -> float | None:
    return found.get(("gateway_key_age_seconds", (("id", key_id), ("kind", kind))))


def max_age(found: dict, kind: str) -> float | None:
    return found.get(("gateway_key_max_age_seconds", (("kind", kind),)))


async def until(gateway: Gateway, holds: Callable[[dict], bool], what: str) -> dict:
    """The gauges refresh every second in the background: the first scrape that shows it."""
    seen: dict = {}

    async def probe() -> bool:
        seen.update(await samples(gateway))
        return holds(seen)

    await eventually(probe, what)
    return seen


async def test_every_kind_of_key_has_an_age_and_a_revoked_agent_key_loses_its_series(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    config = key_config(tmp_path, rsa_pem())
    assert config.source is not None
    now = datetime.now(UTC)
    await seed(config, {
        TOKEN_CREATED + "k1": (now - timedelta(days=TOKEN_AGE_DAYS)).isoformat(),
        NONCE_KEY_SETTING: NONCE_KEY,
        session_created_setting(NONCE_KEY):
            (now - timedelta(days=SESSION_AGE_DAYS)).isoformat(),
    })
    agent_key = create_key(Path(config.source), "--account", "demo")
    agent_id = agent_key.split("_")[1]
    gateway = await start_gateway(config)

    found = await until(
        gateway, lambda s: None not in (age(s, "agent", agent_id), age(s, "dkim", DKIM_ID)),
        "agent and dkim key ages",
    )
    token_age = age(found, "token", "k1")
    session_age = age(found, "session", "saml-nonce")
    assert token_age is not None and TOKEN_AGE_DAYS * DAY <= token_age < (TOKEN_AGE_DAYS + 1) * DAY
    assert session_age is not None
    assert SESSION_AGE_DAYS * DAY <= session_age < (SESSION_AGE_DAYS + 1) * DAY
    assert 0 <= age(found, "agent", agent_id) < DAY, "made by `keys create` just now"
    assert 0 <= age(found, "dkim", DKIM_ID) < DAY, "first seen by this start"
    assert found[("gateway_key_retired", (("id", "k1"), ("kind", "token")))] == 0, "active"
    assert {kind: max_age(found, kind) for kind in ("token", "agent", "dkim", "session", "data")
            } == {"token": 30 * DAY, "agent": 30 * DAY, "dkim": 400 * DAY,
                  "session": 30 * DAY, "data": 30 * DAY}

    recorded = await gateway.services.store.settings_named(DKIM_CREATED)
    assert [name.split(":")[2:4] for name in recorded] == [["example.com", "gw2026"]]

    revoked = cli(Path(config.source), "keys", "revoke", agent_id)
    assert revoked.returncode == 0, revoked.stderr
    await eventually(
        lambda: _without(gateway, "agent", agent_id), "the revoked key's series goes"
    )
    left = await samples(gateway)
    assert age(left, "token", "k1") is not None and age(left, "dkim", DKIM_ID) is not None


async def _without(gateway: Gateway, kind: str, key_id: str) -> bool:
    return age(await samples(gateway), kind, key_id) is None


async def test_a_new_dkim_key_file_under_the_same_selector_starts_again_at_age_zero(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    """The creation time is kept per selector and public key: the replaced key's, a year
    old, does not date the new one (tests/services/test_key_ages.py reads the old one's)."""
    config = key_config(tmp_path, rsa_pem())
    replaced = DkimKey("example.com", "gw2026", rsa_pem())
    old_setting = dkim_created_setting(replaced)
    await seed(config, {old_setting: (datetime.now(UTC) - timedelta(days=365)).isoformat()})
    gateway = await start_gateway(config)
    found = await until(gateway, lambda s: age(s, "dkim", DKIM_ID) is not None, "dkim age")
    assert 0 <= age(found, "dkim", DKIM_ID) < DAY
    recorded = await gateway.services.store.settings_named(DKIM_CREATED)
    assert len(recorded) == 2 and old_setting in recorded


async def test_data_keys_have_ages_and_one_that_no_longer_seals_is_retired(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> None:
    old, new = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    path = write_config(
        tmp_path,
        f'[encryption]\nenabled = true\nkeys = {{ d1 = "{old}", d2 = "{new}" }}\n'
        'active = "d2"\n',
    )
    path.write_text(path.read_text().replace(
        "drain_timeout_s = 5", "drain_timeout_s = 5\nmetrics_refresh_s = 1"
    ))
    config = load_config(path)
    sixty_days_ago = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    await seed(config, {DATA_KEY_CREATED + "d1": sixty_days_ago})
    gateway = await start_gateway(config)
    found = await until(gateway, lambda s: age(s, "data", "d2") is not None, "data key ages")
    old_age = age(found, "data", "d1")
    assert old_age is not None and 60 * DAY <= old_age < 61 * DAY
    assert 0 <= age(found, "data", "d2") < DAY, "first used by this start"
    assert found[("gateway_key_retired", (("id", "d1"), ("kind", "data")))] == 1
    assert found[("gateway_key_retired", (("id", "d2"), ("kind", "data")))] == 0
