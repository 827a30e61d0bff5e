"""SMTP behind a proxy that speaks HAProxy's PROXY protocol, over real sockets.

The gateway trusts the test's own address (127.0.0.1) as a proxy: each connection begins
with a v1 or v2 header naming a client, and a failed AUTH is logged against that client.
A trusted peer that sends no valid header is told why and closed; a peer the gateway does
not trust is never read for a header (a PROXY line from it is just an unknown command).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config.settings import load_config
from gateway.server import Gateway
from tests.conftest import write_config
from tests.e2e.test_hostile_input import still_serving
from tests.fakes.smtp_sink import make_self_signed_cert

TRUSTED = 'trusted_proxies = ["127.0.0.1"]\n'
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_PROXY, V2_LOCAL = 0x21, 0x20  # version 2 and the command


def v2_header(source: str, command: int = V2_PROXY) -> bytes:
    """A binary v2 header for a TCP connection from `source:5555` to the gateway's port 25."""
    client = ipaddress.ip_address(source)
    gateway = ipaddress.ip_address("127.0.0.1" if client.version == 4 else "::1")
    family = 0x11 if client.version == 4 else 0x21  # AF_INET or AF_INET6, over STREAM
    block = client.packed + gateway.packed + struct.pack("!HH", 5555, 25)
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(block)) + block


@pytest.fixture
def start(
    tmp_path: Path, start_gateway: Callable[..., Awaitable[Gateway]]
) -> Callable[..., Awaitable[Gateway]]:
    """Start a gateway with these lines added to its [smtp] table."""
    async def make(smtp_keys: str) -> Gateway:
        path = write_config(tmp_path)
        path.write_text(path.read_text().replace("[smtp]\n", "[smtp]\n" + smtp_keys, 1))
        return await start_gateway(load_config(path))

    return make


class Session:
    """SMTP spoken by hand on one connection, so that it can begin with a PROXY header."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gateway: Gateway, *header_pieces: bytes) -> Session:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.smtp_port)
        for piece in header_pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        return cls(reader, writer)

    async def reply(self) -> str:
        """One reply, all its lines; "" when the gateway closed the connection."""
        lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 5)).decode()
            if not line:
                return "\n".join(lines)
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def wrong_password(self) -> str:
        return await self.command("AUTH PLAIN " + base64.b64encode(b"\0demo\0a-guess").decode())

    def close(self) -> None:
        self.writer.close()


def failed_auth_clients(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.fields["peer"] for r in caplog.records if r.getMessage() == "auth-failed"]


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ([b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 25\r\n"], "198.51.100.9"),
        ([b"PROXY TCP6 2001:db8::9 ::1 5555 25\r\n"], "2001:db8::9"),
        ([b"PROXY TCP4 198.51.", b"100.9 127.0.0.1 5555 25\r\n"], "198.51.100.9"),
        ([v2_header("198.51.100.9")], "198.51.100.9"),
        ([v2_header("2001:db8::9")], "2001:db8::9"),
        ([v2_header("198.51.100.9")[:14], v2_header("198.51.100.9")[14:]], "198.51.100.9"),
        # the proxy's own connection (a health check): the proxy is the client
        ([v2_header("198.51.100.9", V2_LOCAL)], "127.0.0.1"),
        ([b"PROXY UNKNOWN\r\n"], "127.0.0.1"),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v1-in-pieces", "v2-ipv4", "v2-ipv6", "v2-in-pieces",
         "v2-local", "v1-unknown"],
)
async def test_the_client_is_the_one_the_proxy_names(
    start, caplog, header: list[bytes], client: str
) -> None:
    gateway = await start(TRUSTED)
    session = await Session.open(gateway, *header)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert (await session.reply()).startswith("220 ")
        assert (await session.command("EHLO agent.example.com")).startswith("250")
        assert (await session.wrong_password()).startswith("535")
    session.close()
    assert failed_auth_clients(caplog) == [client]


async def test_the_client_survives_starttls(start, tmp_path: Path, caplog) -> None:
    tls = make_self_signed_cert(tmp_path)
    gateway = await start(TRUSTED + f'tls_cert = "{tls.cert}"\ntls_key = "{tls.key}"\n')
    session = await Session.open(gateway, b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 25\r\n")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert (await session.reply()).startswith("220 ")
        assert "STARTTLS" in await session.command("EHLO agent.example.com")
        assert (await session.command("STARTTLS")).startswith("220")
        await session.writer.start_tls(tls.client_context(), server_hostname="localhost")
        assert (await session.command("EHLO agent.example.com")).startswith("250")
        assert (await session.wrong_password()).startswith("535")
    session.close()
    assert failed_auth_clients(caplog) == ["198.51.100.9"]


@pytest.mark.parametrize(
    ("first_bytes", "problem"),
    [
        (b"EHLO agent.example.com\r\n", "PROXY unrecognized signature"),
        (b"PROXY TCP4 not-an-address 127.0.0.1 5555 25\r\n", "PROXYv1 address malformed"),
        (v2_header("198.51.100.9")[:14] + b"\x00\x02ab", "PROXYv2 truncated address"),
        (V2_SIGNATURE[:11] + b"X" + bytes(4), "PROXYv2 wrong signature"),
    ],
)
async def test_a_trusted_peer_without_a_valid_header_is_closed_and_logged(
    start, caplog, first_bytes: bytes, problem: str
) -> None:
    """aiosmtpd closes it before any greeting (the proxy, not an agent, is at fault: the
    operator reads why in the log)."""
    gateway = await start(TRUSTED)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        session = await Session.open(gateway, first_bytes)
        assert await session.reply() == ""  # closed, nothing said
        session.close()
        await still_serving(gateway, source="127.0.0.2")  # not a trusted proxy
    [logged] = [r for r in caplog.records if r.getMessage() == "proxy-header-refused"]
    assert logged.fields["proxy"] == "127.0.0.1" and problem in logged.fields["problem"]


async def test_a_silent_trusted_peer_is_closed_at_the_first_command_deadline(start) -> None:
    gateway = await start(TRUSTED + "first_command_timeout_s = 0.3\n")
    session = await Session.open(gateway)
    refusal = await session.reply()  # nothing, not even the greeting, came before
    session.close()
    assert refusal.startswith("421 4.4.2 ")
    assert "no PROXY protocol header within smtp.first_command_timeout_s" in refusal


async def test_an_untrusted_peer_is_never_read_for_a_header(start, caplog) -> None:
    gateway = await start('trusted_proxies = ["10.0.0.0/8", "::1"]\n')
    session = await Session.open(gateway)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        assert (await session.reply()).startswith("220 ")
        unknown = await session.command("PROXY TCP4 198.51.100.9 127.0.0.1 5555 25")
        assert unknown.startswith("500")
        assert (await session.command("EHLO agent.example.com")).startswith("250")
        assert (await session.wrong_password()).startswith("535")
    session.close()
    assert failed_auth_clients(caplog) == ["127.0.0.1"]


async def test_a_trusted_proxy_is_held_to_the_total_cap_only(start) -> None:
    gateway = await start(TRUSTED + "max_connections = 2\nmax_connections_per_client = 1\n")
    header = b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 25\r\n"
    sessions = [await Session.open(gateway, header) for _ in range(3)]
    replies = [await session.reply() for session in sessions]
    for session in sessions:
        session.close()
    assert [reply[:10] for reply in replies] == ["220 compli", "220 compli", "421 4.3.2 "]
