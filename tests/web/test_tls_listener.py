"""HTTPS on the HTTP listener and STARTTLS on SMTP, against a real `compliance-gateway
serve` process: TLS 1.2 and 1.3 with modern ciphers only, TLS 1.1 refused by the server,
and a certificate written over the old files taken on SIGHUP (a broken one is not)."""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.test_cli import free_port
from tests.web.certificates import serial_of, write_self_signed

FIRST_SERIAL, SECOND_SERIAL = 0x1001, 0x2002


class TlsGateway:
    """`serve` with `[http] tls_cert/tls_key` and the same files for SMTP STARTTLS."""

    def __init__(self, tmp_path: Path) -> None:
        self.cert, self.key = tmp_path / "cert.pem", tmp_path / "key.pem"
        write_self_signed(self.cert, self.key, FIRST_SERIAL)
        self.smtp_port, self.http_port = free_port(), free_port()
        config = write_config(tmp_path)
        text = config.read_text().replace(
            'listen = "127.0.0.1:0"\nmax',
            f'listen = "127.0.0.1:{self.smtp_port}"\ntls_cert = "cert.pem"\n'
            'tls_key = "key.pem"\nmax',
        ).replace(
            '[http]\nlisten = "127.0.0.1:0"',
            f'[http]\nlisten = "127.0.0.1:{self.http_port}"\ntls_cert = "cert.pem"\n'
            'tls_key = "key.pem"',
        )
        config.write_text(text)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.banner = self.process.stdout.readline() if self.process.stdout else ""
        # Drained as it comes, so a chatty gateway never blocks on a full pipe.
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        return code

    def client(self, version: ssl.TLSVersion) -> ssl.SSLContext:
        """A verifying client that trusts the certificate first written and speaks only
        `version` (the later certificate is checked by serial, unverified)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = version
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def get(self, path: str, context: ssl.SSLContext) -> tuple[int, str, tuple[str, str, int]]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.http_port, context=context, timeout=10
        )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode()
            assert connection.sock is not None
            version, cipher = connection.sock.version(), connection.sock.cipher()
            assert version is not None and cipher is not None
            return response.status, body, cipher
        finally:
            connection.close()

    def served_serial(self) -> int:
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as raw:
            context = self.client(ssl.TLSVersion.TLSv1_3)
            with context.wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return serial_of(der)

    def starttls_serial(self) -> int:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.starttls(context=self.client(ssl.TLSVersion.TLSv1_2))
            assert isinstance(smtp.sock, ssl.SSLSocket)
            der = smtp.sock.getpeercert(binary_form=True)
            assert der is not None
            return serial_of(der)

    def reloads(self, kind: str, result: str) -> int:
        _, body, _ = self.get("/metrics", self.client(ssl.TLSVersion.TLSv1_3))
        match = re.search(
            rf'gateway_config_reloads_total{{kind="{kind}",result="{result}"}} (\S+)', body
        )
        return int(float(match.group(1))) if match else 0

    def wait_for_reloads(self, kind: str, result: str, count: int) -> None:
        """Polled (bounded: 200 times 50 ms): the signal is handled on the gateway's loop."""
        for _ in range(200):
            if self.reloads(kind, result) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"never counted {count} {kind} reload(s) {result}")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[TlsGateway]:
    served = TlsGateway(tmp_path)
    try:
        assert "HTTP 127.0.0.1" in served.banner, "".join(served.stderr)
        yield served
    finally:
        assert served.stop() == 0


def tls11_client() -> ssl.SSLContext:
    """TLS 1.1 only, at security level 0, so this client itself permits TLS 1.1 and
    whatever refuses it is the server."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


@contextlib.contextmanager
def permissive_tls11_server(cert: Path, key: Path) -> Iterator[int]:
    """A plain server that does speak TLS 1.1: shows the client above can."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(
                conn, server_side=True
            ) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)


def tls11_possible_here(cert: Path, key: Path) -> bool:
    with permissive_tls11_server(cert, key) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with tls11_client().wrap_socket(raw) as tls:
                    return tls.version() == "TLSv1.1"
            except ssl.SSLError:
                return False


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_client_is_refused_by_the_server(gateway: TlsGateway) -> None:
    if not tls11_possible_here(gateway.cert, gateway.key):
        pytest.skip("this OpenSSL build cannot speak TLS 1.1 even at @SECLEVEL=0, so a "
                    "refusal could not be told apart from the client's own")
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            tls11_client().wrap_socket(raw)
    # The same client gets TLS 1.1 from a server that allows it (above), and the gateway
    # is still serving: the refusal is the gateway's floor.
    status, _, _ = gateway.get("/healthz", gateway.client(ssl.TLSVersion.TLSv1_2))
    assert status == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_clients_are_served_with_aead_ciphers(
    gateway: TlsGateway, version: ssl.TLSVersion
) -> None:
    trusting = ssl.create_default_context(cafile=str(gateway.cert))
    trusting.minimum_version = trusting.maximum_version = version
    status, body, (cipher, protocol, _bits) = gateway.get("/healthz", trusting)
    assert status == 200, body
    assert protocol == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[
        version
    ]
    assert "GCM" in cipher or "CHACHA20" in cipher
    if version is ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith("ECDHE-")


def test_tls12_client_offering_only_cbc_ciphers_is_refused(gateway: TlsGateway) -> None:
    context = gateway.client(ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
    with pytest.raises(ssl.SSLError):
        gateway.get("/healthz", context)


def test_plain_http_gets_no_answer(gateway: TlsGateway) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.request("GET", "/healthz")
            connection.getresponse()
    finally:
        connection.close()


def test_sighup_serves_the_new_certificate_and_keeps_it_over_a_broken_one(
    gateway: TlsGateway,
) -> None:
    assert gateway.served_serial() == FIRST_SERIAL
    assert gateway.starttls_serial() == FIRST_SERIAL

    write_self_signed(gateway.cert, gateway.key, SECOND_SERIAL)
    gateway.process.send_signal(signal.SIGHUP)
    gateway.wait_for_reloads("http_tls", "ok", 1)
    gateway.wait_for_reloads("smtp_tls", "ok", 1)
    assert gateway.served_serial() == SECOND_SERIAL
    assert gateway.starttls_serial() == SECOND_SERIAL

    good_key = gateway.key.read_bytes()
    gateway.key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    gateway.process.send_signal(signal.SIGHUP)
    gateway.wait_for_reloads("http_tls", "failed", 1)
    gateway.wait_for_reloads("smtp_tls", "failed", 1)
    assert gateway.served_serial() == SECOND_SERIAL, "a broken key keeps the running one"
    assert gateway.starttls_serial() == SECOND_SERIAL
    gateway.key.write_bytes(good_key)
    failures = [line for line in gateway.stderr if "http_tls-reload-failed" in line]
    assert failures and "http.tls_key" in failures[0]
    assert "broken" not in "".join(gateway.stderr)
