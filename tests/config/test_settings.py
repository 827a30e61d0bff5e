"""Broken configuration stops start-up with one message naming the key."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.config.settings import ConfigError, load_config
from tests.conftest import write_config


def config_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    return path


ZERO_KEY = base64.b64encode(bytes(32)).decode()
"""A well-formed data key ([encryption] keys): 32 bytes."""

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
    ("[twilio]\ntwiml_hosts = 'twiml.example.com'\n", "twilio.twiml_hosts"),
    ("[twilio]\ntwiml_hosts = ['']\n", "twilio.twiml_hosts"),
    ("[twilio]\ntwiml_hosts = [7]\n", "twilio.twiml_hosts"),
    ("[twilio]\nunknown = 1\n", "twilio.unknown"),
    ("[twilio.twiml]\nhosts = []\n", "twilio.twiml"),
    ("[smtp]\nmax_connections = 0\n", "smtp.max_connections"),
    ("[smtp]\nmax_connections = 10\nmax_connections_per_client = 11\n",
     "smtp.max_connections_per_client"),
    ("[smtp]\nfirst_command_timeout_s = 0\n", "smtp.first_command_timeout_s"),
    ("[smtp]\nfirst_command_timeout_s = 301\n", "smtp.first_command_timeout_s"),
    ("[smtp]\nmax_unauthenticated_bytes = 100\n", "smtp.max_unauthenticated_bytes"),
    ("[smtp]\nmax_footed_parts = 0\n", "smtp.max_footed_parts"),
    ("[http]\nmax_connections = 'many'\n", "http.max_connections"),
    ("[http]\nmax_connections_per_client = 0\n", "http.max_connections_per_client"),
    ("[http]\nfirst_request_timeout_s = -1\n", "http.first_request_timeout_s"),
    ("[http]\nmax_copies_per_request = 49\n", "http.max_copies_per_request"),
    ("[http]\nmax_copies = 10\n", "http.max_copies"),
    ("[keys]\nmax_age_days = 0\n", "keys.max_age_days"),
    ("[keys]\npepper = 'x'\n", "keys.pepper"),
    ("[keys]\ntoken_max_age_days = 0\n", "keys.token_max_age_days"),
    ("[keys]\ndata_max_age_days = 3651\n", "keys.data_max_age_days"),
    ("[keys]\nsaml_max_age_days = 30\n", "keys.saml_max_age_days"),
    ("[encryption]\nkeys = { k1 = 'dG9vIHNob3J0' }\n", "encryption.keys.k1"),
    ("[encryption]\nkeys = { k1 = 'not base64!' }\n", "encryption.keys.k1"),
    (f"[encryption]\nkeys = {{ 'k 1' = '{ZERO_KEY}' }}\n", "encryption.keys.k 1"),
    (f"[encryption]\nkeys = {{ k1 = '{ZERO_KEY}' }}\nactive = 'k2'\n", "encryption.active"),
    ("[encryption]\nactive = 'k1'\n", "encryption.active"),
    ("[encryption]\nkeys = {}\n", "encryption.keys"),
    ("[smtp]\nmax_failed_keys_per_prefix = 0\n", "smtp.max_failed_keys_per_prefix"),
    ("[gateway]\ndrain_timeout_s = nan\n", "gateway.drain_timeout_s"),
    ("[gateway]\ndrain_timeout_s = inf\n", "gateway.drain_timeout_s"),
    ("[smtp]\nfirst_command_timeout_s = nan\n", "smtp.first_command_timeout_s"),
]

@pytest.mark.parametrize(("text", "key"), BROKEN, ids=[k for _, k in BROKEN])
def test_broken_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == key


SHARED_PORTS = [
    ("[smtp]\nlisten = '127.0.0.1:8025'\n[http]\nlisten = '127.0.0.1:8025'\n", "same address"),
    ("[smtp]\nlisten = '0.0.0.0:8025'\nallow_insecure_auth = true\n"
     "[http]\nlisten = '127.0.0.1:8025'\n", "SMTP on every IPv4 address"),
    ("[smtp]\nlisten = '[::1]:8025'\n[http]\nlisten = '[::]:8025'\n", "HTTP on every IPv6 address"),
    ("[http]\nlisten = '127.0.0.1:2525'\n", "HTTP on SMTP's default"),
]
APART = [
    "[smtp]\nlisten = '127.0.0.1:0'\n[http]\nlisten = '127.0.0.1:0'\n",
    "[smtp]\nlisten = '127.0.0.1:8025'\n[http]\nlisten = '127.0.0.2:8025'\n",
    "[smtp]\nlisten = '[::1]:8025'\n[http]\nlisten = '0.0.0.0:8025'\n",
]


@pytest.mark.parametrize("text", [t for t, _ in SHARED_PORTS], ids=[i for _, i in SHARED_PORTS])
def test_smtp_and_http_on_one_port_is_an_error_naming_both(tmp_path: Path, text: str) -> None:
    """Found at load time, not as a traceback from the second bind at start-up."""
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == "http.listen"
    assert "takes the port of smtp.listen (" in str(error.value)


@pytest.mark.parametrize("text", APART)
def test_listeners_apart_load(tmp_path: Path, text: str) -> None:
    """Port 0 (each listener picks its own), other hosts, or other address families."""
    load_config(config_with(tmp_path, text))


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


def test_limits_under_attack_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    """The caps of issue 18 (README, "[smtp] and [http]")."""
    defaults = load_config(config_with(tmp_path, ""))
    assert (defaults.smtp.max_connections, defaults.smtp.max_connections_per_client) == (
        1000, 100)
    assert defaults.smtp.first_command_timeout_s == 10.0
    assert defaults.smtp.max_unauthenticated_bytes == 65_536
    assert defaults.smtp.max_footed_parts == 100
    assert (defaults.http.max_connections, defaults.http.max_connections_per_client) == (
        1000, 100)
    assert defaults.http.first_request_timeout_s == 10.0
    assert defaults.http.max_copies_per_request == 1000
    chosen = load_config(config_with(tmp_path, (
        "[smtp]\nmax_connections = 50\nmax_connections_per_client = 50\n"
        "first_command_timeout_s = 2.5\nmax_unauthenticated_bytes = 4096\n"
        "max_footed_parts = 7\n"
        "[http]\nmax_connections = 20\nmax_connections_per_client = 5\n"
        "first_request_timeout_s = 1\nmax_copies_per_request = 60\n"
    )))
    assert (chosen.smtp.max_connections, chosen.smtp.max_connections_per_client) == (50, 50)
    assert chosen.smtp.first_command_timeout_s == 2.5
    assert (chosen.smtp.max_unauthenticated_bytes, chosen.smtp.max_footed_parts) == (4096, 7)
    assert (chosen.http.max_connections, chosen.http.max_connections_per_client) == (20, 5)
    assert (chosen.http.first_request_timeout_s, chosen.http.max_copies_per_request) == (1.0, 60)


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


def key_file(tmp_path: Path, name: str, private: object) -> Path:
    path = tmp_path / name
    path.write_bytes(private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return path


def dkim_table(private_key: str, domain: str = "example.com") -> str:
    return f"[[dkim]]\ndomain = '{domain}'\nselector = 'gw2026'\nprivate_key = '{private_key}'\n"


def test_dkim_key_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    key_file(tmp_path, "example.pem", rsa.generate_private_key(65537, 2048))
    config = load_config(config_with(tmp_path, dkim_table("example.pem", "Example.COM")))
    [key] = config.dkim
    assert (key.domain, key.selector) == ("example.com", "gw2026")
    assert key.private_key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert b"PRIVATE KEY" not in repr(config).encode()


def test_dkim_key_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    pem = key_file(tmp_path, "k.pem", rsa.generate_private_key(65537, 2048)).read_text()
    monkeypatch.setenv("GATEWAY_TEST_DKIM_KEY", pem)
    config = load_config(config_with(tmp_path, dkim_table("${GATEWAY_TEST_DKIM_KEY}")))
    assert len(config.dkim) == 1


@pytest.mark.parametrize(
    ("make_key", "says"),
    [
        (None, "cannot read"),
        (lambda: b"not a key", "is not an unencrypted PEM private key"),
        (lambda: subprocess.run(["openssl", "genrsa", "-aes128", "-passout", "pass:x", "2048"],
                                capture_output=True, check=True).stdout,
         "is not an unencrypted PEM private key"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "must be an RSA key"),
        (lambda: subprocess.run(["openssl", "genrsa", "768"], capture_output=True,
                                check=True).stdout, "is 768 bits"),
    ],
    ids=["missing", "garbage", "encrypted", "ed25519", "short"],
)
def test_a_dkim_key_that_cannot_sign_stops_start_up_naming_it(
    tmp_path: Path, make_key, says: str
) -> None:
    """The operator asked for signed mail: starting without a usable key would send it
    unsigned."""
    if make_key is not None:
        made = make_key()
        if isinstance(made, bytes):
            (tmp_path / "k.pem").write_bytes(made)
        else:
            key_file(tmp_path, "k.pem", made)
    path = config_with(tmp_path, dkim_table("k.pem"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.key == "dkim.example.com.private_key"
    assert says in error.value.problem
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("config error: dkim.example.com.private_key: ")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[dkim]]\nselector = 's'\nprivate_key = 'k.pem'\n", "dkim[0].domain"),
        ("[[dkim]]\ndomain = 'nodots'\nselector = 's'\nprivate_key = 'k.pem'\n",
         "dkim[0].domain"),
        ("[[dkim]]\ndomain = 'example.com'\nselector = 'bad selector'\nprivate_key = 'k'\n",
         "dkim.example.com.selector"),
        ("[[dkim]]\ndomain = 'example.com'\nselector = 's'\n", "dkim[0].private_key"),
        ("[dkim]\ndomain = 'example.com'\n", "dkim"),
    ],
)
def test_dkim_table_mistakes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, text))
    assert error.value.key == key


BAD_TWIML_HOSTS = [
    "https://twiml.example.com", "twiml.example.com:443", "twiml.example.com/voice",
    "*.example.com", "twiml.example.com.", "[::1]", "twiml_bin.example.com", "twiml example",
    "user@twiml.example.com", "-twiml.example.com", "twiml.exämple.com", "a" * 64 + ".com",
]


@pytest.mark.parametrize("host", BAD_TWIML_HOSTS)
def test_twiml_hosts_are_host_names_or_addresses(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, f"[twilio]\ntwiml_hosts = [{host!r}]\n"))
    assert error.value.key == "twilio.twiml_hosts"
    assert repr(host) in error.value.problem


def test_twiml_hosts_are_kept_as_urls_compare_them(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, "[twilio]\ntwiml_hosts = ['TwiML.Example.com', "
                                     "'127.0.0.1', '0:0:0:0:0:0:0:1', 'localhost']\n"))
    assert config.twilio.twiml_hosts == {"twiml.example.com", "127.0.0.1", "::1", "localhost"}
    assert load_config(config_with(tmp_path, "")).twilio.twiml_hosts == frozenset()
