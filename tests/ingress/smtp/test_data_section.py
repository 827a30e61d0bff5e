"""The gateway's DATA reader (gateway/ingress/smtp_data.py) against aiosmtpd's own
line-by-line loop, over real sockets: for streams full of CR, LF, dots and long lines, both
servers must give the same replies, take the same content, and treat whatever follows the
end of DATA as the same commands (hypothesis)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingress.smtp.data_section import (
    LINE_LIMIT_BYTES,
    DataProblem,
    _first_problem,
    read_data_section,
)
from gateway.ingress.smtp.handler import GatewaySMTP, SessionTracker
from gateway.runtime.metrics import Metrics

SIZE_LIMIT = 3000
PIECES = [b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"Subject: x", b"\r\n.", b".\r\n",
          b"\r\n.\r", b"=", b"x" * 400, b"y" * (LINE_LIMIT_BYTES - 2), b"\x00", b"\xff"]


class Recorder:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.contents.append(envelope.original_content)
        return "250 OK"


class Servers:
    """aiosmtpd's SMTP and the gateway's, each on its own port, on a loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.recorders = {"aiosmtpd": Recorder(), "gateway": Recorder()}
        self.ports: dict[str, int] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        sessions = SessionTracker(Metrics())
        factories = {
            "aiosmtpd": lambda: SMTP(self.recorders["aiosmtpd"], data_size_limit=SIZE_LIMIT,
                                     enable_SMTPUTF8=True, loop=self.loop),
            "gateway": lambda: GatewaySMTP(self.recorders["gateway"], sessions,
                                           data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True,
                                           loop=self.loop),
        }
        self._servers = []
        for name, factory in factories.items():
            server = await self.loop.create_server(factory, "127.0.0.1", 0)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.stop()


def transcript(port: int, stream: bytes, piece: int = 0) -> list[bytes]:
    """Reply codes for a transaction whose DATA section is `stream`, then QUIT: everything
    after the first end marker is read as commands. With `piece`, the stream is sent that
    many bytes at a time, so the server reads lines half-arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(b"HELO bench\r\nMAIL FROM:<a@example.com>\r\n"
                           b"RCPT TO:<b@example.com>\r\nDATA\r\n")
        received = b""
        while not received.endswith(b"\r\n") or not received.split(b"\r\n")[-2].startswith(b"354"):
            received += connection.recv(65536)
        sent = stream + b"\r\nQUIT\r\n"
        for start in range(0, len(sent), piece or len(sent)):
            connection.sendall(sent[start : start + (piece or len(sent))])
            if piece:
                time.sleep(0.0005)
        while chunk := connection.recv(65536):
            received += chunk
    return [line[:3] for line in received.split(b"\r\n") if line]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join),
       after=st.sampled_from([b"", b"NOOP\r\n", b"\r\n.\r\nNOOP", b"RSET\r\nMAIL FROM:<c@d>"]))
def test_same_outcome_as_aiosmtpd(servers: Servers, section: bytes, after: bytes) -> None:
    stream = section + b"\r\n.\r\n" + after
    before = {name: len(r.contents) for name, r in servers.recorders.items()}
    expected = transcript(servers.ports["aiosmtpd"], stream)
    got = transcript(servers.ports["gateway"], stream)
    assert got == expected
    taken = {name: r.contents[before[name]:] for name, r in servers.recorders.items()}
    assert taken["gateway"] == taken["aiosmtpd"]


def lines_of(total: int) -> bytes:
    """`total` octets of short lines (80 with their CRLF, the last one shorter)."""
    whole, rest = divmod(total, 80)
    return (b"a" * 78 + b"\r\n") * whole + (b"b" * (rest - 2) + b"\r\n" if rest else b"")


# aiosmtpd counts each line against the size limit, then checks its length; a line with more
# than 1,001 octets before its CRLF overruns its reader and is refused before it is counted.
LIMIT_ORDER = {
    "long line starting before the limit": (lines_of(2960) + b"y" * 1400, b"500"),
    "long line starting at the limit": (lines_of(3000) + b"y" * 1400, b"500"),
    "long line starting after the limit": (lines_of(3040) + b"y" * 1400, b"552"),
    "1,000-octet line crossing the limit": (lines_of(2960) + b"z" * 1000, b"552"),
    "1,001-octet line crossing the limit": (lines_of(2960) + b"z" * 1001, b"552"),
    "1,002-octet line crossing the limit": (lines_of(2960) + b"z" * 1002, b"500"),
    "1,000-octet line within the limit": (lines_of(1000) + b"z" * 1000, b"500"),
}


@pytest.mark.parametrize("piece", [0, 7], ids=["at once", "7 octets at a time"])
@pytest.mark.parametrize(("section", "code"), LIMIT_ORDER.values(), ids=LIMIT_ORDER.keys())
def test_the_problem_named_is_the_one_aiosmtpd_reaches_first(
    servers: Servers, section: bytes, code: bytes, piece: int
) -> None:
    stream = section + b"\r\n.\r\n"
    expected = transcript(servers.ports["aiosmtpd"], stream)
    assert expected[5] == code, "the case is built wrong"
    assert transcript(servers.ports["gateway"], stream, piece) == expected


@pytest.mark.parametrize(("received", "problem"), [
    (lines_of(2960) + b"z" * 1001 + b"\r", DataProblem.NONE),  # the CR may begin the CRLF
    (lines_of(2960) + b"z" * 1001 + b"\rx", DataProblem.LINE_TOO_LONG),
    (lines_of(2960) + b"z" * 1002, DataProblem.LINE_TOO_LONG),
    (lines_of(2960) + b"z" * 900, DataProblem.NONE),  # 1,000 octets more would say 552
    (lines_of(2960) + b"z" * 900 + b"\r\n", DataProblem.TOO_MUCH),
], ids=["CR", "CR then more", "over the reader's limit", "short so far", "complete"])
def test_a_line_still_arriving_decides_only_once_it_can(
    received: bytes, problem: DataProblem
) -> None:
    assert _first_problem(bytearray(received), SIZE_LIMIT) is problem


class CountingReader(asyncio.StreamReader):
    """Counts the reads the DATA reader asks for: each is a turn of its loop."""

    reads = 0

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        self.reads += 1
        return await super().readuntil(separator)

    async def readexactly(self, n: int) -> bytes:
        self.reads += 1
        return await super().readexactly(n)


@pytest.mark.parametrize("run", [b"\r\n", b"\r", b"\n", b"\r\n.\r", b"\r\n\r"])
@pytest.mark.parametrize("size_limit", [None, 3000])
async def test_a_run_of_line_breaks_is_read_in_a_few_pieces(
    run: bytes, size_limit: int | None
) -> None:
    """A section that keeps looking as if the end marker might begin (blank lines, bare
    CRs) was once read a byte at a time, holding the event loop for every session and past
    the size limit. Its outcome must still be aiosmtpd's: the same check as the hypothesis
    test, on the in-memory loop."""
    section = run * 300_000 + b"x\r\n"
    reader = CountingReader(limit=64 * 1024)
    reader.feed_data(section + b".\r\nQUIT\r\n")
    reader.feed_eof()
    result = await read_data_section(reader, size_limit)
    assert reader.reads < 50
    assert await reader.read() == b"QUIT\r\n"
    longest = max(map(len, section.split(b"\r\n"))) + 2
    if longest > LINE_LIMIT_BYTES:
        assert result.problem is DataProblem.LINE_TOO_LONG
    elif size_limit and len(section) > size_limit:
        assert result.problem is DataProblem.TOO_MUCH
    else:
        assert result.content == section.replace(b"\r\n.", b"\r\n")


def test_a_section_split_across_many_small_writes(servers: Servers) -> None:
    """The end marker arriving a byte at a time, across the reader's pieces."""
    body = b"Subject: x\r\n\r\n" + b".dotted\r\n" * 50
    with socket.create_connection(("127.0.0.1", servers.ports["gateway"]), timeout=10) as c:
        c.sendall(b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        received = b""
        while b"354" not in received:
            received += c.recv(4096)
        for byte in body + b".\r\n":
            c.sendall(bytes([byte]))
        while b"250 OK" not in received.split(b"354", 1)[1]:
            received += c.recv(4096)
    assert servers.recorders["gateway"].contents[-1] == body.replace(b"\r\n.", b"\r\n")
