"""`[http] trusted_proxies` and `[smtp] trusted_proxies`: addresses or networks, and a bad
one stops start-up naming its key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, load_config


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "named"),
    [
        ("[http]\ntrusted_proxies = '10.0.0.0/8'\n", "http.trusted_proxies", "list"),
        ("[http]\ntrusted_proxies = [10]\n", "http.trusted_proxies", "list"),
        ("[http]\ntrusted_proxies = ['']\n", "http.trusted_proxies", "list"),
        ("[http]\ntrusted_proxies = ['proxy.example.com']\n", "http.trusted_proxies",
         "'proxy.example.com'"),
        ("[http]\ntrusted_proxies = ['10.0.0.0/33']\n", "http.trusted_proxies", "'10.0.0.0/33'"),
        ("[http]\ntrusted_proxies = ['[::1]']\n", "http.trusted_proxies", "'[::1]'"),
        ("[smtp]\ntrusted_proxies = ['10.0.0.7/8']\n", "smtp.trusted_proxies", "host bits"),
        ("[smtp]\ntrusted_proxies = ['10.0.0.0/8', '10.0.0.0-10.0.0.9']\n",
         "smtp.trusted_proxies", "'10.0.0.0-10.0.0.9'"),
    ],
)
def test_a_bad_value_names_the_key(tmp_path: Path, text: str, key: str, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == key
    assert named in error.value.problem


def test_addresses_and_networks_are_read(tmp_path: Path) -> None:
    config = load_config(config_with(
        tmp_path,
        "[http]\ntrusted_proxies = ['10.0.0.0/8', '::1', '192.0.2.7']\n"
        "[smtp]\ntrusted_proxies = ['2001:db8::/32']\n",
    ))
    assert config.http.trusted_proxies.networks == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "::1/128", "192.0.2.7/32")
    )
    assert config.smtp.trusted_proxies.trusts("2001:db8:1::1")
    assert not config.smtp.trusted_proxies.trusts("10.0.0.1")


def test_nobody_is_trusted_by_default(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, ""))
    assert config.http.trusted_proxies.networks == config.smtp.trusted_proxies.networks == ()
    assert not config.http.trusted_proxies.trusts("127.0.0.1")
