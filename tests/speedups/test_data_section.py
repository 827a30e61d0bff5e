"""The DATA speedup (gateway/speedups/data_section.py), installed for the gateway's server,
against aiosmtpd's own line-by-line loop, over real sockets: for streams full of CR, LF,
dots and long lines, both servers must give the same replies, take the same content, and
treat whatever follows the end of DATA as the same commands (hypothesis)."""

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

from gateway.ingress.smtp.protocol import PROTOCOL_REFUSALS, GatewaySMTP, SessionTracker
from gateway.runtime.metrics import Metrics
from gateway.speedups.data_section import (
    AIOSMTPD_DATA,
    AIOSMTPD_REFUSALS,
    LINE_LIMIT_BYTES,
    SPEEDUP,
    DataProblem,
    _first_problem,
    read_data_section,
)
from tests.speedups import switched

SIZE_LIMIT = 3000
PIECES = [b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"Subject: x", b"\r\n.", b".\r\n",
          b"\r\n.\r", b"=", b"x" * 400, b"y" * (LINE_LIMIT_BYTES - 2), b"\x00", b"\xff"]


class Recorder:
    def __init__(self) -> None:
        self.contents: list[bytes | str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.contents.append(envelope.content)
        return "250 OK"


class AiosmtpdSMTP(SMTP):
    """aiosmtpd's SMTP as it is, whatever is installed."""

    smtp_DATA = AIOSMTPD_DATA


class Servers:
    """aiosmtpd's SMTP and the gateway's, each on its own port, on a loop in a thread; and
    two that decode the content, which the speedup leaves to aiosmtpd."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.recorders = {
            name: Recorder() for name in ("aiosmtpd", "gateway", "aiosmtpd text", "text")
        }
        self.ports: dict[str, int] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        sessions = SessionTracker(Metrics())
        factories = {
            "aiosmtpd": lambda: AiosmtpdSMTP(self.recorders["aiosmtpd"],
                                             data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True,
                                             loop=self.loop),
            "gateway": lambda: GatewaySMTP(self.recorders["gateway"], sessions,
                                           data_size_limit=SIZE_LIMIT, enable_SMTPUTF8=True,
                                           loop=self.loop),
            "aiosmtpd text": lambda: AiosmtpdSMTP(self.recorders["aiosmtpd text"],
                                                  decode_data=True, loop=self.loop),
            "text": lambda: SMTP(self.recorders["text"], decode_data=True, loop=self.loop),
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
    with switched(SPEEDUP, True):
        running = Servers()
        yield running
        running.stop()


def transcript(port: int, stream: bytes, piece: int = 0, *, whole: bool = False) -> list[bytes]:
    """Reply codes (`whole`: replies) for a transaction whose DATA section is `stream`, then
    QUIT: everything after the first end marker is read as commands. With `piece`, the stream
    is sent that many bytes at a time, so the server reads lines half-arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(b"HELO bench\r\nMAIL FROM:<a@example.com>\r\n"
                           b"RCPT TO:<b@example.com>\r\nDATA\r\n")
        received = b""
        while not received.endswith(b"\r\n") or not received.split(b"\r\n")[-2].startswith(b"354"):
            chunk = connection.recv(65536)
            assert chunk, f"closed before DATA was accepted: {received!r}"
            received += chunk
        sent = stream + b"\r\nQUIT\r\n"
        for start in range(0, len(sent), piece or len(sent)):
            connection.sendall(sent[start : start + (piece or len(sent))])
            if piece:
                time.sleep(0.0005)
        while chunk := connection.recv(65536):
            received += chunk
    return [line if whole else line[:3] for line in received.split(b"\r\n") if line]


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


@pytest.mark.parametrize(("section", "code"), LIMIT_ORDER.values(), ids=LIMIT_ORDER.keys())
def test_the_gateway_names_the_problem_in_its_own_words(
    servers: Servers, section: bytes, code: bytes
) -> None:
    """The speedup refuses in aiosmtpd's words, which the gateway's server rewrites."""
    stream = section + b"\r\n.\r\n"
    expected = transcript(servers.ports["aiosmtpd"], stream, whole=True)
    assert set(AIOSMTPD_REFUSALS.values()) <= set(PROTOCOL_REFUSALS)
    rewritten = [PROTOCOL_REFUSALS.get(r.decode(), r.decode()).encode() for r in expected]
    assert transcript(servers.ports["gateway"], stream, whole=True) == rewritten


def test_a_server_decoding_the_content_reads_it_as_aiosmtpd_does(servers: Servers) -> None:
    """As text, refusing 8-bit content as aiosmtpd does (no SMTPUTF8), with its line limit."""
    for body in (b"Subject: x\r\n\r\n..dot\r\n", b"\xc3\xa9\r\n", b"y" * 1400 + b"\r\n"):
        stream = body + b".\r\n"
        expected = transcript(servers.ports["aiosmtpd text"], stream, whole=True)
        assert transcript(servers.ports["text"], stream, whole=True) == expected
    assert servers.recorders["text"].contents == servers.recorders["aiosmtpd text"].contents
    assert servers.recorders["text"].contents == ["Subject: x\r\n\r\n.dot\r\n"]


def test_commands_after_data_have_aiosmtpds_line_limit_again(servers: Servers) -> None:
    """A section is read with a larger reader limit; a long command line after it is refused
    as aiosmtpd refuses it (its command word is not even read), not for its bad syntax."""
    stream = b"Subject: x\r\n\r\n.\r\n" + b"\xff" * 1500 + b"\r\nNOOP\r\n"
    expected = transcript(servers.ports["aiosmtpd"], stream, whole=True)
    assert b"500 Command line too long" in expected
    assert transcript(servers.ports["gateway"], stream, whole=True) == expected


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
