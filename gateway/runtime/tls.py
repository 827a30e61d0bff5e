"""Server-side TLS for every ingress: the HTTP listeners (`[http] tls_cert`/`tls_key`) and
SMTP STARTTLS (`[smtp] tls_cert`/`tls_key`) share one hardened context builder and one way
to take a new certificate on SIGHUP.

TLS 1.2 is the floor; for TLS 1.2 only ECDHE key exchange with AEAD ciphers (AES-GCM,
ChaCha20-Poly1305) is offered (TLS 1.3's suites are all AEAD); no compression (CRIME), no
renegotiation (a client-driven CPU sink and the root of old injection attacks).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gateway.config.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _certificate_and_key_checked(cert: Path, key: Path, cert_key: str, key_key: str) -> None:
    """Each file read and parsed on its own first, so a failure names the setting at fault
    (OpenSSL's own error for a bad pair does not say which file)."""
    try:
        cert_bytes = cert.read_bytes()
    except OSError as exc:
        raise ConfigError(cert_key, f"cannot read {cert}: {exc.strerror or exc}") from exc
    try:
        x509.load_pem_x509_certificates(cert_bytes)
    except ValueError as exc:
        raise ConfigError(cert_key, f"{cert} holds no PEM certificate") from exc
    try:
        key_bytes = key.read_bytes()
    except OSError as exc:
        raise ConfigError(key_key, f"cannot read {key}: {exc.strerror or exc}") from exc
    try:
        serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError as exc:
        raise ConfigError(key_key, f"{key} is encrypted; give an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(key_key, f"{key} holds no usable PEM private key") from exc


def server_context(cert: Path, key: Path, cert_key: str, key_key: str) -> ssl.SSLContext:
    """A server context for `cert`+`key`; a ConfigError naming `cert_key` or `key_key`
    (`http.tls_cert`, ...) when a file cannot be read, parsed, or the two do not match."""
    _certificate_and_key_checked(cert, key, cert_key, key_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            key_key, f"{key} is not the private key of {cert} ({exc.reason})"
        ) from exc
    return context


class ReloadableTls:
    """One context handed to the listener for good, whose certificate can be replaced.

    The listener's context never changes; at each handshake its server-name callback (called
    by OpenSSL for every ClientHello, with or without SNI) moves the connection onto the
    context built by the latest successful `reload`. A reload builds a whole new context
    before swapping it in, so a bad file never touches the certificate being served."""

    def __init__(self, cert: Path, key: Path, cert_key: str, key_key: str) -> None:
        self._files = (cert, key, cert_key, key_key)
        self.context = server_context(*self._files)
        self._current = self.context
        self.context.sni_callback = self._serve_current

    @property
    def setting(self) -> str:
        return self._files[2]

    def _serve_current(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None,
        context: ssl.SSLContext,
    ) -> None:
        if self._current is not context:
            connection.context = self._current

    def reload(self) -> None:
        """Re-read the files; a ConfigError (naming the setting) keeps the running one."""
        self._current = server_context(*self._files)
