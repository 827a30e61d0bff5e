"""Key creation times kept in the store (`key_ages`), published by `StoreGauges`, and the
`[keys]` maximum per kind. A real SQLite store; clocks a test moves."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.auth.saml import NONCE_KEY_SETTING
from gateway.config.settings import KEY_KINDS, ConfigError, load_config
from gateway.model import DkimKey
from gateway.runtime.clock import Clock
from gateway.runtime.metrics import KeyAge, Metrics
from gateway.services.key_ages import (
    TOKEN_CREATED,
    HeldKeys,
    UnreadableCreationTime,
    dkim_created_setting,
    dkim_key_id,
    parse_created,
    session_created_setting,
)
from gateway.services.shared_keys import shared_keys
from gateway.services.store_gauges import StoreGauges
from gateway.store.sqlite import SqliteStore
from tests.conftest import write_config
from tests.rewrite.test_dkim import rsa_pem

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PEM_A = rsa_pem()
PEM_B = rsa_pem()


class StoppedClock(Clock):
    """Time that moves only when the test moves it, so ages are exact."""

    def __init__(self, at: datetime) -> None:
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)



PARSED = [
    ("2026-03-01T12:00:00+00:00", T0),
    ("2026-03-01T07:00:00-05:00", T0),
    ("2026-03-01T12:00:00.250000+00:00", T0 + timedelta(milliseconds=250)),
]


@pytest.mark.parametrize(("value", "expected"), PARSED)
def test_a_recorded_time_is_read_with_its_zone(value: str, expected: datetime) -> None:
    assert parse_created("created:x", value) == expected


@pytest.mark.parametrize("value", ["", "yesterday", "2026-03-01T12:00:00", "1772366400"])
def test_an_unreadable_recorded_time_is_an_error_naming_the_setting(value: str) -> None:
    with pytest.raises(UnreadableCreationTime, match="'created:unsubscribe-token:k1'"):
        parse_created("created:unsubscribe-token:k1", value)


DKIM_NAMES = [
    (DkimKey("example.com", "gw2026", PEM_A), "gw2026._domainkey.example.com"),
    (DkimKey("news.example.com", "a.b", PEM_A), "a.b._domainkey.news.example.com"),
]


@pytest.mark.parametrize(("key", "expected"), DKIM_NAMES)
def test_a_dkim_key_is_named_by_the_dns_name_it_is_published_under(
    key: DkimKey, expected: str
) -> None:
    assert dkim_key_id(key) == expected


def test_a_dkim_key_is_dated_per_domain_selector_and_public_key() -> None:
    a = DkimKey("example.com", "gw2026", PEM_A)
    assert dkim_created_setting(a).startswith("created:dkim:example.com:gw2026:")
    assert dkim_created_setting(a) == dkim_created_setting(DkimKey("example.com", "gw2026", PEM_A))
    others = {
        dkim_created_setting(DkimKey("example.com", "gw2026", PEM_B)),  # a new key file
        dkim_created_setting(DkimKey("example.com", "gw2027", PEM_A)),
        dkim_created_setting(DkimKey("example.net", "gw2026", PEM_A)),
    }
    assert len(others) == 3 and dkim_created_setting(a) not in others
    assert PEM_A.decode().splitlines()[1][:16] not in dkim_created_setting(a)


def held(store: SqliteStore, clock: StoppedClock, tokens: tuple[str, ...] = ("k1", "k2"),
         active: str = "k2", dkim: tuple[DkimKey, ...] = ()) -> HeldKeys:
    return HeldKeys(store, clock, lambda: (tokens, active), lambda: dkim)


async def test_replicas_report_the_creation_time_the_first_of_them_recorded(
    store: SqliteStore,
) -> None:
    dkim = (DkimKey("example.com", "gw2026", PEM_A),)
    first = await held(store, StoppedClock(T0), dkim=dkim)()
    later = await held(store, StoppedClock(T0 + timedelta(days=3)), dkim=dkim)()
    assert first == later == [
        KeyAge("token", "k1", T0, retired=True),
        KeyAge("token", "k2", T0),
        KeyAge("dkim", "gw2026._domainkey.example.com", T0),
    ]


async def test_a_recorded_time_is_read_from_the_store_once(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refreshes every `metrics_refresh_s` read only the (replaceable) session key."""
    keys = held(store, StoppedClock(T0), dkim=(DkimKey("example.com", "gw2026", PEM_A),))
    first = await keys()
    read: list[str] = []
    settings_named = store.settings_named

    async def counted(prefix: str) -> dict[str, str]:
        read.append(prefix)
        return await settings_named(prefix)

    monkeypatch.setattr(store, "settings_named", counted)
    assert await keys() == first
    assert read == [NONCE_KEY_SETTING]


async def test_the_session_key_has_an_age_once_saml_sign_in_made_it(store: SqliteStore) -> None:
    clock = StoppedClock(T0)
    keys = held(store, clock, tokens=())
    assert await keys() == [], "no SAML sign-in yet: no key"
    await store.claim_setting(NONCE_KEY_SETTING, "n" * 64)
    clock.advance(60)
    assert await keys() == [KeyAge("session", "saml-nonce", clock.now())]
    assert session_created_setting("n" * 64) in await store.settings_named("created:saml-nonce:")


async def test_an_unreadable_creation_time_drops_that_key_and_is_logged_once(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.claim_setting(TOKEN_CREATED + "k1", "last spring")
    keys = held(store, StoppedClock(T0))
    with caplog.at_level(logging.ERROR, "gateway.services.key_ages"):
        assert await keys() == [KeyAge("token", "k2", T0)]
        assert await keys() == [KeyAge("token", "k2", T0)]
    [logged] = [r for r in caplog.records if r.getMessage() == "key-created-unreadable"]
    assert logged.fields["setting"] == TOKEN_CREATED + "k1"  # type: ignore[attr-defined]


async def test_the_gauges_publish_every_source_and_drop_a_key_that_goes(
    store: SqliteStore,
) -> None:
    clock = StoppedClock(T0 + timedelta(days=10))
    data = [KeyAge("data", "d1", T0), KeyAge("data", "d0", T0 - timedelta(days=200), True)]

    async def tokens() -> list[KeyAge]:
        return [KeyAge("token", "k1", T0 + timedelta(days=11))]  # a clock a little ahead

    metrics = Metrics()
    gauges = StoreGauges(metrics, store, clock=clock, max_age_days={"dkim": 400},
                         key_sources=[tokens, lambda: list(data)])
    await gauges.refresh()

    def sample(name: str, kind: str, key_id: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"kind": kind, "id": key_id})

    assert sample("gateway_key_age_seconds", "data", "d1") == 10 * 86400
    assert sample("gateway_key_age_seconds", "data", "d0") == 210 * 86400
    assert sample("gateway_key_retired", "data", "d0") == 1
    assert sample("gateway_key_retired", "data", "d1") == 0
    assert sample("gateway_key_age_seconds", "token", "k1") == 0, "never negative"
    assert {kind: metrics.registry.get_sample_value("gateway_key_max_age_seconds",
                                                    {"kind": kind}) for kind in KEY_KINDS
            } == {**dict.fromkeys(KEY_KINDS, 90 * 86400.0), "dkim": 400 * 86400.0}
    data.pop()
    await gauges.refresh()
    assert sample("gateway_key_age_seconds", "data", "d0") is None
    assert sample("gateway_key_retired", "data", "d0") is None
    assert sample("gateway_key_age_seconds", "data", "d1") == 10 * 86400


KEYS_SETTINGS = [
    ("", dict.fromkeys(KEY_KINDS, 90)),
    ("[keys]\nmax_age_days = 30\n", dict.fromkeys(KEY_KINDS, 30)),
    ("[keys]\ndkim_max_age_days = 400\n", {**dict.fromkeys(KEY_KINDS, 90), "dkim": 400}),
    ("[keys]\nmax_age_days = 60\ntoken_max_age_days = 30\n",
     {**dict.fromkeys(KEY_KINDS, 60), "token": 30}),
]


@pytest.mark.parametrize(("text", "expected"), KEYS_SETTINGS)
def test_the_maximum_age_is_set_for_every_kind_or_one(
    tmp_path: Path, text: str, expected: dict[str, int]
) -> None:
    assert dict(load_config(write_config(tmp_path, text)).key_max_age_days) == expected



def without_tokens(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text[:text.index("[tokens]")])
    return path


async def test_token_keys_are_dated_at_start_and_an_adopted_one_by_its_file(
    tmp_path: Path, store: SqliteStore
) -> None:
    """An earlier version's key file written a year ago dates the key it held: adopting it
    must not make an overdue key look new."""
    config = load_config(without_tokens(tmp_path))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    legacy = config.data_dir / "token-keys.json"
    legacy.write_text(json.dumps({"active": "g1", "keys": {"g1": "x" * 64, "old": "y" * 64}}))
    written = T0 - timedelta(days=365)
    os.utime(legacy, (written.timestamp(), written.timestamp()))
    keys = await shared_keys(config, store, T0)
    assert set(keys.token_keys) == {"g1", "old"}
    recorded = await store.settings_named(TOKEN_CREATED)
    assert {name: parse_created(name, value) for name, value in recorded.items()} == {
        TOKEN_CREATED + "g1": written, TOKEN_CREATED + "old": written,
    }


async def test_a_configured_token_key_is_dated_when_first_seen(
    tmp_path: Path, store: SqliteStore
) -> None:
    config = load_config(write_config(tmp_path))
    await shared_keys(config, store, T0)
    await shared_keys(config, store, T0 + timedelta(days=5))
    assert await store.settings_named(TOKEN_CREATED) == {TOKEN_CREATED + "k1": T0.isoformat()}


async def test_an_unreadable_token_creation_time_stops_start_up_naming_the_key(
    tmp_path: Path, store: SqliteStore
) -> None:
    await store.claim_setting(TOKEN_CREATED + "k1", "soon")
    with pytest.raises(ConfigError) as error:
        await shared_keys(load_config(write_config(tmp_path)), store, T0)
    assert error.value.key == "tokens.keys.k1"
    assert "created:unsubscribe-token:k1" in str(error.value)
