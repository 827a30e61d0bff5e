"""Broken configuration stops start-up with one message naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, load_config
from tests.conftest import write_config


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    return path


BROKEN = [
    ("[smtp]\nlisten = 'nonsense'\n", "smtp.listen"),
    ("[smtp]\nlisten = '0.0.0.0:2525'\n", "smtp.listen"),
    ("[smtp]\nmax_message_bytes = 'big'\n", "smtp.max_message_bytes"),
    ("[smtp]\ntls_cert = 'missing.pem'\ntls_key = 'missing.key'\n", "smtp.tls_cert"),
    ("[smtp]\ntls_cert = 'only-cert.pem'\n", "smtp.tls_key"),
    ("[http]\nlisten = '127.0.0.1:99999'\n", "http.listen"),
    ("[store]\nurl = 'mysql://x'\n", "store.url"),
    ("[gateway]\npublic_url = 'ftp://x'\n", "gateway.public_url"),
    ("[gateway]\nunknown = 1\n", "gateway.unknown"),
    ("[nonsense]\n", "nonsense"),
    ("[sender]\nemail = 'not an address'\n", "sender.email"),
    ("[sender]\nphone = '555-1234'\n", "sender.phone"),
    ("[[accounts]]\nname = 'a'\nrole = 'rep'\n", "accounts[0].secret"),
    ("[[accounts]]\nname = 'a'\nsecret = 'short'\n", "accounts[0].secret"),
    ("[[accounts]]\nname = 'a'\nsecret = 'long-enough-secret'\nrole = 'god'\n", "accounts[0].role"),
    ("[[accounts]]\nname = 'a'\nsecret = 'long-enough-secret'\nsender_domains = 'x.com'\n",
     "accounts[0].sender_domains"),
    ("[[accounts]]\nname = 'a'\nsecret = 'long-enough-secret'\n"
     "[[accounts]]\nname = 'a'\nsecret = 'another-long-secret'\n", "accounts[1].name"),
    ("[[accounts]]\nname = 'a'\nsecret = '${GATEWAY_TEST_UNSET_VARIABLE}'\n", "accounts[0].secret"),
    ("[upstream.email]\nkind = 'pigeon'\n", "upstream.email.kind"),
    ("[upstream.email]\nkind = 'smtp'\n", "upstream.email.host"),
    ("[upstream.twilio]\naccount_sid = 'AC123'\n", "upstream.twilio.account_sid"),
    ("[tokens]\nkeys = { k1 = 'short' }\n", "tokens.keys.k1"),
    ("[tokens]\nkeys = { k1 = '" + "x" * 40 + "' }\nactive = 'k2'\n", "tokens.active"),
    ("this is not toml", "--config"),
]


@pytest.mark.parametrize(("text", "key"), BROKEN, ids=[k for _, k in BROKEN])
def test_broken_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == key


def test_secret_from_environment_and_not_in_repr(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_SECRET", "from-the-environment-1")
    config = load_config(config_with(
        tmp_path, "[[accounts]]\nname = 'a'\nsecret = '${GATEWAY_TEST_SECRET}'\n"
    ))
    assert config.accounts[0].secret == "from-the-environment-1"
    assert "from-the-environment-1" not in repr(config)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.data_dir == tmp_path / "var"
    assert config.store_url == f"sqlite:///{tmp_path / 'var' / 'gateway.db'}"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert str(config.smtp.listen) == "127.0.0.1:2525"
    assert config.email_upstream.kind == "outbox"


def test_serve_with_broken_config_exits_with_one_line(tmp_path: Path) -> None:
    path = config_with(tmp_path, "[smtp]\nlisten = 'nonsense'\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: smtp.listen: must be HOST:PORT (IPv6 as [::1]:PORT)"
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[upstream.emial]\nkind = 'smtp'\n", "upstream.emial"),
        ("upstream = 5\n", "upstream"),
        ("[upstream.email]\nkind = 'smtp'\nhost = 'smtp.example.net'\nusername = 'u'\n"
         "password = 'p'\nstarttls = false\n", "upstream.email.starttls"),
    ],
)
def test_upstream_mistakes_are_errors_not_silent_fallbacks(tmp_path: Path, text: str, key: str):
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == key
