"""Who a connection counts against, the caps, the throttled logs, and the accept loop over
real loopback sockets (the gateway's own listeners are in tests/e2e/test_under_attack.py)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

import pytest

from gateway.config.settings import TrustedProxies
from gateway.runtime.connections import (
    ConnectionLimits,
    Listener,
    ThrottledLog,
    bind_listener,
    client_key,
    make_room_for_descriptors,
)
from gateway.runtime.metrics import Metrics


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("203.0.113.7", 4000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 4000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:3::1", 4000, 0, 0), "2001:db8:1:3::/64"),
        (("::ffff:203.0.113.7", 4000, 0, 0), "203.0.113.7"),
        ("/run/gateway.sock", "/run/gateway.sock"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_slash_64(peer: object, key: str) -> None:
    assert client_key(peer) == key


def test_caps_refuse_per_client_first_then_in_all_and_release_once() -> None:
    limits = ConnectionLimits(3, 2, ("x.max_connections", "x.max_connections_per_client"))
    first, second = limits.opened("a"), limits.opened("a")
    assert limits.refusal("a") == "client"
    third = limits.opened("b")
    assert limits.refusal("c") == "total"
    first()
    first()  # a second release of one connection counts nothing
    assert (limits.open, limits.by_client) == (2, {"a": 1, "b": 1})
    assert limits.refusal("a") == ""
    second()
    third()
    assert (limits.open, limits.by_client) == (0, {})


def test_a_trusted_proxy_is_held_to_the_total_cap_only() -> None:
    limits = ConnectionLimits(3, 1, ("x.max_connections", "x.max_connections_per_client"))
    releases = [limits.opened(None), limits.opened(None)]
    assert limits.refusal(None) == ""
    assert (limits.open, limits.by_client) == (2, {})
    releases.append(limits.opened("a"))
    assert limits.refusal(None) == "total"
    for release in releases:
        release()
    assert (limits.open, limits.by_client) == (0, {})


def test_a_throttled_log_writes_one_line_per_interval_with_a_count(caplog) -> None:
    now = [0.0]
    throttled = ThrottledLog("accept-failed", logging.ERROR, interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="gateway.connections"):
        for _ in range(100_000):
            throttled.note(listener="smtp")
        now[0] = 10.0
        throttled.note(listener="smtp")
    lines = [r for r in caplog.records if r.getMessage() == "accept-failed"]
    assert [r.fields["occurrences"] for r in lines] == [1, 100_000]


def test_the_descriptor_limit_is_raised_within_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert make_room_for_descriptors(soft) >= soft
    if hard != resource.RLIM_INFINITY:
        assert make_room_for_descriptors(hard + 1) == hard
    assert make_room_for_descriptors(soft) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Echo(asyncio.Protocol):
    def __init__(self, release, from_proxy: bool = False) -> None:
        self.release = release

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"hello\n")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.release()


async def test_a_listener_admits_refuses_and_frees_places() -> None:
    limits = ConnectionLimits(3, 2, ("t.max_connections", "t.max_connections_per_client"))
    listener = Listener("test", bind_listener("127.0.0.1", 0), Echo, limits,
                        lambda scope: f"refused {scope}\n".encode(), Metrics(), linger_s=0.5)
    listener.start()

    async def connect(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=(source, 0))
        return reader, writer, await asyncio.wait_for(reader.readline(), 5)

    try:
        a1, a2 = await connect("127.0.0.1"), await connect("127.0.0.1")
        assert a1[2] == a2[2] == b"hello\n"
        refused = await connect("127.0.0.1")
        refused[1].write(b"a request written before reading\n")
        assert refused[2] == b"refused client\n"
        assert await asyncio.wait_for(refused[0].read(), 5) == b""  # closed, not reset
        b1 = await connect("127.0.0.2")
        assert b1[2] == b"hello\n"
        assert (await connect("127.0.0.3"))[2] == b"refused total\n"
        a1[1].close()
        for _ in range(100):
            if limits.open == 2:
                break
            await asyncio.sleep(0.01)
        c1 = await connect("127.0.0.3")
        assert c1[2] == b"hello\n"
        for connection in (a2, b1, c1, refused):
            connection[1].close()
    finally:
        listener.close()


async def test_connections_from_a_trusted_proxy_share_the_total_cap_only() -> None:
    """Every client behind a proxy has its address: a per-client cap on it would hold all of
    them to one client's share. The factory is told which connections came through it."""
    limits = ConnectionLimits(3, 1, ("t.max_connections", "t.max_connections_per_client"))
    told: list[bool] = []

    def factory(release, from_proxy: bool) -> Echo:
        told.append(from_proxy)
        return Echo(release)

    proxy = TrustedProxies((ipaddress.ip_network("127.0.0.1/32"),))
    listener = Listener("test", bind_listener("127.0.0.1", 0), factory, limits,
                        lambda scope: f"refused {scope}\n".encode(), Metrics(),
                        trusted_proxies=proxy)
    listener.start()

    async def connect(source: str) -> tuple[asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=(source, 0))
        return writer, await asyncio.wait_for(reader.readline(), 5)

    try:
        through_proxy = [await connect("127.0.0.1") for _ in range(2)]
        assert [line for _, line in through_proxy] == [b"hello\n", b"hello\n"]
        direct = await connect("127.0.0.2")
        assert direct[1] == b"hello\n"
        assert (await connect("127.0.0.2"))[1] == b"refused client\n"
        assert (await connect("127.0.0.1"))[1] == b"refused total\n"
        assert told == [True, True, False]
        assert limits.by_client == {"127.0.0.2": 1}
        for writer, _ in [*through_proxy, direct]:
            writer.close()
    finally:
        listener.close()


class FailingAccept(socket.socket):
    """A listening socket whose accept() fails as when the process is out of descriptors."""

    failures = 0

    def accept(self):  # type: ignore[override]
        FailingAccept.failures += 1
        raise OSError(errno.EMFILE, "Too many open files")


async def test_accept_failures_pause_accepting_and_are_logged_once(caplog) -> None:
    server = FailingAccept(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    metrics = Metrics()
    listener = Listener("test", server, Echo, ConnectionLimits(10, 10, ("a", "b")),
                        lambda scope: b"", metrics)
    client = socket.create_connection(("127.0.0.1", listener.port))
    try:
        with caplog.at_level(logging.INFO, logger="gateway.connections"):
            listener.start()
            await asyncio.sleep(0.3)  # the loop runs; the pending connection stays readable
        assert FailingAccept.failures == 1  # paused after the failure, not retried at once
        assert not listener.serving
        lines = [r for r in caplog.records if r.getMessage() == "accept-failed"]
        assert len(lines) == 1
        assert lines[0].fields["errno"] == "EMFILE"
        assert metrics.registry.get_sample_value(
            "gateway_accept_errors_total", {"listener": "test"}) == 1
    finally:
        client.close()
        listener.close()
