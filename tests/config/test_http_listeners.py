"""Bad `[http]` TLS, internal listener and metrics token settings: one ConfigError naming
the key, at load or (for a certificate that cannot be used) when the gateway is built."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from gateway.config.settings import ConfigError, load_config
from gateway.runtime.tls import server_context
from gateway.server import Gateway
from tests.conftest import write_config
from tests.web.certificates import write_self_signed


def config_with(tmp_path: Path, http_lines: str, smtp_listen: str = "127.0.0.1:0") -> Path:
    path = write_config(tmp_path)
    text = path.read_text().replace(
        '[http]\nlisten = "127.0.0.1:0"', "[http]\n" + http_lines
    ).replace('listen = "127.0.0.1:0"\nmax', f'listen = "{smtp_listen}"\nmax')
    path.write_text(text)
    return path


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        Gateway(load_config(path))
    return error.value


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key, 1)
    return cert, key


LISTEN = 'listen = "127.0.0.1:8443"\n'


@pytest.mark.parametrize(("lines", "key"), [
    ('tls_cert = "cert.pem"', "http.tls_key"),
    ('tls_key = "key.pem"', "http.tls_cert"),
    ('tls_cert = "missing.pem"\ntls_key = "key.pem"', "http.tls_cert"),
    ('tls_cert = "cert.pem"\ntls_key = "missing.pem"', "http.tls_key"),
])
def test_tls_files_both_or_neither_and_present(
    tmp_path: Path, pair: tuple[Path, Path], lines: str, key: str
) -> None:
    error = refused(config_with(tmp_path, LISTEN + lines))
    assert error.key == key


def test_relative_tls_paths_are_read_from_the_config_file_directory(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    config = load_config(config_with(tmp_path, LISTEN + 'tls_cert = "cert.pem"\n'
                                     'tls_key = "key.pem"'))
    assert (config.http.tls_cert, config.http.tls_key) == pair
    assert set(Gateway(config).tls) == {"http"}


def test_a_key_of_another_certificate_names_tls_key(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    write_self_signed(tmp_path / "other.pem", tmp_path / "other-key.pem", 2)
    error = refused(config_with(
        tmp_path, LISTEN + 'tls_cert = "cert.pem"\ntls_key = "other-key.pem"'
    ))
    assert error.key == "http.tls_key" and "not the private key" in error.problem


def test_a_file_that_is_no_certificate_names_tls_cert(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    error = refused(config_with(tmp_path, LISTEN + 'tls_cert = "junk.pem"\ntls_key = "key.pem"'))
    assert error.key == "http.tls_cert"


def test_a_file_that_is_no_key_names_tls_key(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    error = refused(config_with(tmp_path, LISTEN + 'tls_cert = "cert.pem"\ntls_key = "cert.pem"'))
    assert error.key == "http.tls_key"


def test_an_unreadable_key_names_tls_key(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    pair[1].chmod(0)
    if os.access(pair[1], os.R_OK):
        pytest.skip("running as a user who reads files regardless of their mode (root)")
    error = refused(config_with(tmp_path, LISTEN + 'tls_cert = "cert.pem"\ntls_key = "key.pem"'))
    assert error.key == "http.tls_key" and "cannot read" in error.problem


def test_smtp_certificates_get_the_same_checks(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    write_self_signed(tmp_path / "other.pem", tmp_path / "other-key.pem", 2)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        'listen = "127.0.0.1:0"\nmax',
        'listen = "127.0.0.1:0"\ntls_cert = "cert.pem"\ntls_key = "other-key.pem"\nmax',
    ))
    assert refused(path).key == "smtp.tls_key"


@pytest.mark.parametrize(("listen", "internal", "smtp"), [
    ("127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1:2525"),
    ("0.0.0.0:8080", "127.0.0.1:8080", "127.0.0.1:2525"),
    ("127.0.0.1:8080", "127.0.0.1:2525", "127.0.0.1:2525"),
    ("127.0.0.1:8080", "0.0.0.0:2525", "127.0.0.1:2525"),
    ("[::1]:8080", "[::1]:8080", "127.0.0.1:2525"),
])
def test_internal_listen_must_not_share_a_listener(
    tmp_path: Path, listen: str, internal: str, smtp: str
) -> None:
    path = config_with(
        tmp_path, f'listen = "{listen}"\ninternal_listen = "{internal}"', smtp_listen=smtp
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.key == "http.internal_listen"


def test_internal_listen_apart_is_accepted(tmp_path: Path) -> None:
    config = load_config(config_with(
        tmp_path, 'listen = "0.0.0.0:8080"\ninternal_listen = "[::1]:8080"'
    ))
    assert config.http.internal_listen is not None
    assert str(config.http.internal_listen) == "[::1]:8080"


def test_internal_listen_must_be_an_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, 'listen = "127.0.0.1:0"\ninternal_listen = "8081"'))
    assert error.value.key == "http.internal_listen"


def test_metrics_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "t" * 40
    monkeypatch.setenv("GATEWAY_TEST_METRICS_TOKEN", token)
    config = load_config(config_with(
        tmp_path, 'listen = "127.0.0.1:0"\nmetrics_token = "${GATEWAY_TEST_METRICS_TOKEN}"'
    ))
    assert config.http.metrics_token == token
    assert token not in repr(config)


def test_a_short_metrics_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_with(tmp_path, 'listen = "127.0.0.1:0"\nmetrics_token = "short"'))
    assert error.value.key == "http.metrics_token"


def test_the_server_context_offers_only_modern_tls(pair: tuple[Path, Path]) -> None:
    context = server_context(*pair, "http.tls_cert", "http.tls_key")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]
