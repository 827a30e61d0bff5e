"""Keep serving under attack (issue 18, items 8-11), over real loopback sockets.

- connections: one client holding idle connections cannot stop another client; the
  connection past a cap is told so (SMTP 421, HTTP 429/503) and closed; a client that says
  nothing (or half a line) is disconnected; accept() failures when the process runs out of
  file descriptors are logged a few times, not megabytes of tracebacks;
- the unsubscribe mailbox: without AUTH a message is at most `smtp.max_unauthenticated_bytes`
  and only its header block is read;
- amplification: a message whose footer would go into more than `smtp.max_footed_parts`
  parts, or whose rewritten copy would exceed `smtp.max_message_bytes`, is refused before
  anything is sent; a Postmark request asking for more copies than
  `http.max_copies_per_request` is refused whole; a request retried with the same
  `X-Idempotency-Key` sends nothing twice;
- crashes: every Unicode line separator in every header-bound field, and JSON nested to any
  depth, get a 4xx naming the problem, per batch item, never a 500.

Connections from different clients come from different loopback addresses (127.0.0.2...),
which Linux routes to the 127.0.0.1 listener. No test asserts a duration: the ones that
wait for the gateway to close a connection wait up to a generous bound and assert that it
did.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from postmarker.core import PostmarkClient

from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import DEMO_SECRET, outbox_messages, write_config
from tests.e2e.test_hostile_input import RawSmtp, still_serving
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import raw_post

REPO = Path(__file__).resolve().parents[2]
# Every character str.splitlines() breaks a line at, besides CR and LF.
LINE_SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
CLOSED_WITHIN_S = 60  # a bound on waiting, not a measured duration


# --- helpers -----------------------------------------------------------------------------

async def smtp_connection(
    gateway: Gateway, source: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.smtp_port, local_addr=(source, 0)
    )
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def idle_smtp_sessions(
    gateway: Gateway, source: str, count: int
) -> list[asyncio.StreamWriter]:
    """`count` sessions from `source` that said EHLO and then nothing."""

    async def one() -> asyncio.StreamWriter:
        reader, writer, greeting = await smtp_connection(gateway, source)
        assert greeting.startswith(b"220"), greeting
        writer.write(b"EHLO idle.test\r\n")
        while not (line := await asyncio.wait_for(reader.readline(), 10)).startswith(b"250 "):
            assert line.startswith(b"250-"), line
        return writer

    writers = []
    for start in range(0, count, 50):
        writers += await asyncio.gather(*(one() for _ in range(start, min(count, start + 50))))
    return writers


async def closed_by_gateway(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sent until it closed the connection."""
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()


async def http_exchange(
    port: int, source: str, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bytes]:
    """One request on a new keep-alive connection from `source`: status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(request)
    status, body = await http_response(reader)
    return reader, writer, status, body


async def http_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gw.test\r\n\r\n"


async def postmark_send(gateway: Gateway, source: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"http://127.0.0.1:{gateway.http_port}/email",
            json={"From": "katie@example.com", "To": "bob@client.example.net",
                  "Subject": "Fleet costs", "TextBody": "Hi Bob"},
            headers={"X-Postmark-Server-Token": DEMO_SECRET, "Accept": "application/json"},
        ) as response:
            return response.status


# --- 8. connection limits ----------------------------------------------------------------

async def test_one_client_holding_idle_smtp_sessions_cannot_stop_another(gateway) -> None:
    """smtp.max_connections_per_client (100): the 101st connection from one address is told
    421 and closed, while a client from another address still sends."""
    held = await idle_smtp_sessions(gateway, "127.0.0.1", 100)
    try:
        reader, writer, greeting = await smtp_connection(gateway, "127.0.0.1")
        assert greeting.startswith(b"421 4.7.0"), greeting
        assert b"smtp.max_connections_per_client" in greeting
        assert await closed_by_gateway(reader) == b""
        writer.close()
        await still_serving(gateway, source="127.0.0.2")
    finally:
        close_all(held)


async def test_the_1001st_smtp_connection_is_refused_and_a_freed_place_is_taken(gateway) -> None:
    """smtp.max_connections (1000): ten clients holding 100 sessions each fill the gateway;
    the 1001st connection gets 421; once some close, a new client is served again."""
    held = []
    try:
        for host in range(1, 11):
            held += await idle_smtp_sessions(gateway, f"127.0.0.{host}", 100)
        _reader, writer, greeting = await smtp_connection(gateway, "127.0.0.11")
        assert greeting.startswith(b"421 4.3.2"), greeting
        assert b"smtp.max_connections" in greeting
        writer.close()
        close_all(held[:10])
        for _ in range(100):  # the gateway sees the closes on its next reads
            _reader, writer, greeting = await smtp_connection(gateway, "127.0.0.11")
            writer.close()
            if greeting.startswith(b"220"):
                break
            await asyncio.sleep(0.05)
        assert greeting.startswith(b"220"), greeting
    finally:
        close_all(held)


async def test_one_client_holding_idle_http_connections_cannot_stop_another(gateway) -> None:
    """http.max_connections_per_client (100): a client that keeps 100 connections open
    gets 429 on the next one, and another client's Postmark send goes through."""
    held = []
    try:
        for _ in range(100):
            _, writer, status, _ = await http_exchange(gateway.http_port, "127.0.0.1", HEALTH)
            assert status == 200
            held.append(writer)
        _reader, writer, status, body = await http_exchange(
            gateway.http_port, "127.0.0.1", HEALTH
        )
        assert status == 429, body
        assert b"http.max_connections_per_client" in body
        writer.close()
        assert await postmark_send(gateway, "127.0.0.2") == 200
        assert len(outbox_messages(gateway)) == 1
    finally:
        close_all(held)


async def test_clients_that_say_nothing_are_disconnected(gateway) -> None:
    """A client that sends nothing, or half a command or header, after connecting is
    disconnected (smtp.first_command_timeout_s, http.first_request_timeout_s), so idle
    connections stop by themselves."""
    silent_smtp, silent_smtp_writer, greeting = await smtp_connection(gateway, "127.0.0.1")
    assert greeting.startswith(b"220")
    slow_smtp, slow_smtp_writer, _ = await smtp_connection(gateway, "127.0.0.1")
    slow_smtp_writer.write(b"EH")
    silent_http, silent_http_writer = await asyncio.open_connection(
        "127.0.0.1", gateway.http_port
    )
    slow_http, slow_http_writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
    slow_http_writer.write(b"POST /email HTTP/1.1\r\nHost: gw.test\r\nX-Postmark-Ser")
    try:
        endings = await asyncio.gather(
            closed_by_gateway(silent_smtp), closed_by_gateway(slow_smtp),
            closed_by_gateway(silent_http), closed_by_gateway(slow_http),
        )
    finally:
        close_all([silent_smtp_writer, slow_smtp_writer, silent_http_writer, slow_http_writer])
    assert endings[0].startswith(b"421 4.4.2") and endings[1].startswith(b"421 4.4.2")
    assert endings[2].startswith(b"HTTP/1.1 408") and endings[3].startswith(b"HTTP/1.1 408")
    await still_serving(gateway)


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))


async def test_running_out_of_file_descriptors_logs_a_few_lines_and_recovers(
    tmp_path: Path,
) -> None:
    """A gateway process whose descriptor limit is below its connection caps: while 300
    connections from three clients hold every descriptor, accept() fails; that is logged a
    few times (it wrote ~390 MB of tracebacks in 12 s before) and, once the clients leave,
    the gateway serves again."""
    config = write_config(tmp_path)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=_few_descriptors,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        banner = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        smtp_port = int(banner.decode().split("SMTP 127.0.0.1:")[1].split(",")[0])
        sockets = []
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            for _ in range(100):
                client = socket.socket()
                client.bind((host, 0))
                client.setblocking(False)  # the gateway may not accept: never wait on it
                client.connect_ex(("127.0.0.1", smtp_port))
                sockets.append(client)
        await asyncio.sleep(3)  # the descriptors stay exhausted for a while
        for client in sockets:
            client.close()
        greeting = b""
        for _ in range(200):
            with contextlib.suppress(OSError):
                client = socket.create_connection(("127.0.0.1", smtp_port), timeout=5)
                greeting = client.recv(100)
                client.close()
                if greeting.startswith(b"220"):
                    break
            await asyncio.sleep(0.1)
        assert greeting.startswith(b"220"), greeting
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
    written = stderr_path.read_bytes()
    assert len(written) < 100_000, f"{len(written)} bytes of logs"
    assert b"accept-failed" in written


# --- 9. the unsubscribe mailbox without AUTH ---------------------------------------------

async def mailbox_transaction(gateway: Gateway, content: bytes) -> bytes:
    client = await RawSmtp.open(gateway, login=False, source="127.0.0.5")
    try:
        assert (await client.command(b"MAIL FROM:<reader@client.example.net>")).startswith(b"250")
        assert (await client.command(b"RCPT TO:<unsubscribe@gw.example.com>")).startswith(b"250")
        assert (await client.command(b"DATA")).startswith(b"354")
        return await client.command(content + b"\r\n.")
    finally:
        await client.close()


def mailbox_message(body: bytes, subject: bytes = b"unsubscribe not-a-token") -> bytes:
    return (b"From: reader@client.example.net\r\nTo: unsubscribe@gw.example.com\r\n"
            b"Subject: " + subject + b"\r\n\r\n" + body)


async def test_a_message_to_the_mailbox_without_auth_is_at_most_64_kb(gateway) -> None:
    big = mailbox_message(b"x" * 76 + b"\r\n") * 900  # ~70 KB, well under max_message_bytes
    reply = await mailbox_transaction(gateway, big)
    assert reply.startswith(b"552 5.3.4"), reply
    assert b"smtp.max_unauthenticated_bytes" in reply
    small = await mailbox_transaction(gateway, mailbox_message(b"please remove me\r\n"))
    assert small.startswith(b"550 5.7.1 UNSUBSCRIBE_TOKEN_INVALID"), small
    await still_serving(gateway)


async def test_only_the_header_block_of_a_mailbox_message_is_read(gateway, monkeypatch) -> None:
    """Thousands of tiny MIME parts to the mailbox: the body is never parsed as MIME."""
    from gateway.ingress.smtp import handler

    def no_mime_parsing(raw: bytes) -> None:
        raise AssertionError("the body of a mailbox message was parsed")

    monkeypatch.setattr(handler, "parse_email", no_mime_parsing)
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(1500))
    content = (b"From: reader@client.example.net\r\nTo: unsubscribe@gw.example.com\r\n"
               b"Subject: unsubscribe not-a-token\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n")
    assert len(content) < 64 * 1024
    reply = await mailbox_transaction(gateway, content)
    assert reply.startswith(b"550 5.7.1 UNSUBSCRIBE_TOKEN_INVALID"), reply


# --- 10. amplification -------------------------------------------------------------------

def many_text_parts(count: int, filler: bytes = b"") -> bytes:
    parts = b"".join(
        b"--p\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nPart " + str(n).encode()
        + b"\r\n" for n in range(count)
    )
    if filler:
        parts += (b"--p\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + filler + b"\r\n")
    head = first_touch().as_bytes().replace(b"\n", b"\r\n").split(b"\r\n\r\n", 1)[0]
    head = b"\r\n".join(
        line for line in head.split(b"\r\n")
        if not line.lower().startswith((b"content-", b"mime-version"))
    )
    return (head + b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="p"'
            b"\r\n\r\n" + parts + b"--p--\r\n")


async def smtp_send(gateway: Gateway, content: bytes) -> bytes:
    client = await RawSmtp.open(gateway)
    try:
        assert (await client.command(b"MAIL FROM:<katie@example.com>")).startswith(b"250")
        assert (await client.command(b"RCPT TO:<bob@client.example.net>")).startswith(b"250")
        assert (await client.command(b"RCPT TO:<ann@client.example.net>")).startswith(b"250")
        assert (await client.command(b"DATA")).startswith(b"354")
        return await client.command(content + b"\r\n.")
    finally:
        await client.close()


async def test_more_footed_parts_than_the_cap_is_refused_before_anything_is_sent(
    gateway,
) -> None:
    reply = await smtp_send(gateway, many_text_parts(101))
    assert reply.startswith(b"550 5.7.1 MESSAGE_MALFORMED"), reply
    assert b"smtp.max_footed_parts" in reply
    assert outbox_messages(gateway) == []
    [block, _] = await gateway.services.store.query_blocks(BlockQuery())
    assert "smtp.max_footed_parts" in block.reasons[0].message
    reply = await smtp_send(gateway, many_text_parts(100))
    assert reply.startswith(b"250"), reply
    assert len(outbox_messages(gateway)) == 2


async def test_a_rewritten_copy_over_max_message_bytes_is_refused_before_it_is_sent(
    gateway,
) -> None:
    """100 small text parts and an attachment fill ~190 KB of the test's 200,000-byte
    limit; a footer in each part takes the copy past it."""
    filler = b"\r\n".join([b"A" * 76] * 2350)
    content = many_text_parts(100, filler)
    assert 180_000 < len(content) < gateway.config.smtp.max_message_bytes
    reply = await smtp_send(gateway, content)
    assert reply.startswith(b"550 5.7.1 MESSAGE_MALFORMED"), reply
    assert b"smtp.max_message_bytes" in reply
    assert outbox_messages(gateway) == []
    blocks = await gateway.services.store.query_blocks(BlockQuery())
    assert {b.recipient for b in blocks} == {"bob@client.example.net", "ann@client.example.net"}
    await still_serving(gateway)


def batch_item(index: int, recipients: int = 1, **changes: object) -> dict:
    to = ", ".join(f"r{index}-{n}@client.example.net" for n in range(recipients))
    return {"From": "katie@example.com", "To": to, "Subject": f"Fleet costs {index}",
            "TextBody": f"Hi, message {index}"} | changes


async def post(gateway: Gateway, path: str, body: object, **headers: str):
    url = f"http://127.0.0.1:{gateway.http_port}{path}"
    headers = {"X-Postmark-Server-Token": DEMO_SECRET, "Accept": "application/json",
               "Content-Type": "application/json", **headers}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps(body), headers=headers) as response:
            return response.status, await response.json()


async def test_a_batch_asking_for_more_copies_than_the_cap_is_refused_whole(gateway) -> None:
    """http.max_copies_per_request (1000): 21 messages of 50 recipients ask for 1,050."""
    items = [batch_item(index, recipients=50) for index in range(21)]
    status, answer = await post(gateway, "/email/batch", items)
    assert status == 422, answer
    assert answer["ErrorCode"] == 300
    assert "http.max_copies_per_request" in answer["Message"]
    assert outbox_messages(gateway) == []
    status, answer = await post(gateway, "/email/batch", items[:20])
    assert status == 200
    assert all(result["ErrorCode"] == 0 for result in answer)
    assert len(outbox_messages(gateway)) == 1000


async def test_a_batch_retried_with_its_idempotency_key_sends_nothing_twice(gateway) -> None:
    items = [batch_item(index) for index in range(3)]
    status, first = await post(gateway, "/email/batch", items, **{"X-Idempotency-Key": "b-1"})
    assert status == 200 and [r["ErrorCode"] for r in first] == [0, 0, 0]
    assert len(outbox_messages(gateway)) == 3
    status, retry = await post(gateway, "/email/batch", items, **{"X-Idempotency-Key": "b-1"})
    assert status == 200 and [r["ErrorCode"] for r in retry] == [0, 0, 0]
    assert all("already sent" in r["Message"] for r in retry)
    assert len(outbox_messages(gateway)) == 3
    # A changed message under the same key, or the same batch under a new key, is new.
    changed = [*items[:2], batch_item(2, Subject="Fleet costs, revised")]
    status, again = await post(gateway, "/email/batch", changed, **{"X-Idempotency-Key": "b-1"})
    assert [r["ErrorCode"] for r in again] == [0, 0, 0]
    assert len(outbox_messages(gateway)) == 4
    status, _fresh = await post(gateway, "/email/batch", items, **{"X-Idempotency-Key": "b-2"})
    assert len(outbox_messages(gateway)) == 7
    status, single = await post(gateway, "/email", items[0], **{"Idempotency-Key": "s-1"})
    status, single = await post(gateway, "/email", items[0], **{"Idempotency-Key": "s-1"})
    assert status == 200 and "already sent" in single["Message"]
    assert len(outbox_messages(gateway)) == 8


async def test_the_documented_postmarker_recipe_makes_a_batch_retry_safe(gateway) -> None:
    """README, "Retrying a Postmark-shaped request safely", as written there."""
    client = PostmarkClient(
        server_token=DEMO_SECRET, root_api_url=f"http://127.0.0.1:{gateway.http_port}/"
    )
    client.session.headers["X-Idempotency-Key"] = str(uuid.uuid4())
    messages = [batch_item(index) for index in range(3)]
    first = await asyncio.to_thread(client.emails.send_batch, *messages)
    retry = await asyncio.to_thread(client.emails.send_batch, *messages)
    assert [answer["ErrorCode"] for answer in first + retry] == [0] * 6
    assert len(outbox_messages(gateway)) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "two words"])
async def test_an_unusable_idempotency_key_is_refused(gateway, key: str) -> None:
    status, answer = await raw_post_with_key(gateway, key)
    assert (status, answer["ErrorCode"]) == (422, 300), answer
    assert "Idempotency-Key" in answer["Message"]
    assert outbox_messages(gateway) == []


async def raw_post_with_key(gateway: Gateway, key: str):
    """The header written as raw bytes (aiohttp's client refuses some of these values)."""
    body = json.dumps(batch_item(0)).encode()
    request = (
        b"POST /email HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAccept: application/json\r\n"
        b"X-Postmark-Server-Token: " + DEMO_SECRET.encode() + b"\r\n"
        b"X-Idempotency-Key: " + key.encode("utf-8") + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    _reader, writer, status, answer = await http_exchange(
        gateway.http_port, "127.0.0.1", request
    )
    writer.close()
    return status, json.loads(answer)


# --- 11. no input produces a 500 ---------------------------------------------------------

HEADER_BOUND = {
    "Subject": lambda s: {"Subject": f"Fleet{s}costs"},
    "From": lambda s: {"From": f"Katie{s}K <katie@example.com>"},
    "To": lambda s: {"To": f"Bob{s}B <bob@client.example.net>"},
    "Cc": lambda s: {"Cc": f"Ann{s}A <ann@client.example.net>"},
    "ReplyTo": lambda s: {"ReplyTo": f"Katie{s}K <katie@example.com>"},
    "Tag": lambda s: {"Tag": f"q3{s}x"},
    "MessageStream": lambda s: {"MessageStream": f"outbound{s}x"},
    "Headers.Value": lambda s: {"Headers": [{"Name": "X-Campaign", "Value": f"q3{s}x"}]},
    "Metadata": lambda s: {"Metadata": {"campaign": f"q3{s}x"}},
    "Attachments.Name": lambda s: {"Attachments": [
        {"Name": f"a{s}.txt", "Content": "aGk=", "ContentType": "text/plain"}]},
}


@pytest.mark.parametrize("separator", LINE_SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
@pytest.mark.parametrize("field", sorted(HEADER_BOUND))
async def test_a_line_separator_in_one_batch_item_is_that_item_s_422(
    gateway, field: str, separator: str
) -> None:
    items = [batch_item(0), batch_item(1, **HEADER_BOUND[field](separator)), batch_item(2)]
    status, answer = await post(gateway, "/email/batch", items)
    assert status == 200, answer
    assert [result["ErrorCode"] for result in answer] == [0, 300, 0], answer
    assert "line break" in answer[1]["Message"]
    assert len(outbox_messages(gateway)) == 2
    status, answer = await post(gateway, "/email", items[1])
    assert (status, answer["ErrorCode"]) == (422, 300)


async def test_a_message_the_gateway_fails_on_is_answered_alone(gateway, monkeypatch) -> None:
    """Whatever goes wrong with one message of a batch (here: a bug, simulated), the others
    are answered and sent, and that message gets its own answer: never a 500 for all."""
    from gateway.ingress import postmark

    pipeline = gateway.services.pipeline
    process, build = pipeline.process, postmark.build_request

    async def failing_process(message):
        if "message 1" in message.email.fields.text_body:
            raise RuntimeError("a bug")
        return await process(message)

    def failing_build(item, **kwargs):
        if item.get("Subject") == "Fleet costs 3":
            raise KeyError("another bug")
        return build(item, **kwargs)

    monkeypatch.setattr(pipeline, "process", failing_process)
    monkeypatch.setattr(postmark, "build_request", failing_build)
    items = [batch_item(index) for index in range(4)]
    status, answer = await post(gateway, "/email/batch", items)
    assert status == 200, answer
    assert [result["ErrorCode"] for result in answer] == [0, 100, 0, 300]
    assert "INTERNAL_ERROR" in answer[1]["Message"] and "may have gone out" in answer[1]["Message"]
    assert "could not read" in answer[3]["Message"]
    assert len(outbox_messages(gateway)) == 2
    status, answer = await post(gateway, "/email", items[1])
    assert (status, answer["ErrorCode"]) == (503, 100)


@pytest.mark.parametrize("separator", LINE_SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
async def test_a_line_separator_in_a_template_send_s_subject_is_refused(
    gateway, separator: str
) -> None:
    item = {"From": "katie@example.com", "To": "bob@client.example.net", "TemplateId": 1,
            "TemplateModel": {}, "Subject": f"a{separator}b"}
    status, answer = await post(gateway, "/email/withTemplate", item)
    assert (status, answer["ErrorCode"]) == (422, 300), answer


@pytest.mark.parametrize("separator", LINE_SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
async def test_a_line_separator_in_an_smtp_header_is_malformed_not_forwarded(
    gateway, separator: str
) -> None:
    content = first_touch().as_bytes().replace(b"\n", b"\r\n").replace(
        b"Subject: ", b"Subject: Fleet" + separator.encode("utf-8") + b"Bcc: x@evil.example ",
        1,
    )
    reply = await smtp_send(gateway, content)
    assert reply.startswith(b"550 5.7.1 MESSAGE_MALFORMED"), reply
    assert b"line" in reply
    assert outbox_messages(gateway) == []


@pytest.mark.parametrize("separator", LINE_SEPARATORS, ids=lambda s: f"U+{ord(s):04X}")
async def test_a_line_separator_in_a_twilio_parameter_is_refused(
    gateway_factory, separator: str
) -> None:
    from tests.ingress.test_twilio import DEMO_AUTH, FROM, NY, SID, outbox, start

    gateway = await start(gateway_factory)
    form = {"To": NY, "From": FROM, "Body": "Hi",
            "StatusCallback": f"https://agent.example/cb{separator}x"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/Messages.json",
            data=form, headers=DEMO_AUTH,
        ) as response:
            status, answer = response.status, await response.json()
    assert status == 400, answer
    assert answer["code"] == 20001, answer
    assert outbox(gateway) == []


DEEP = b"[" * 100_000 + b"]" * 100_000
SMALL_DEEP = b"[" * 5_000 + b"]" * 5_000  # under the admin API's 64 KB body limit
SIXTY_FIVE_DEEP = b'{"a":' * 64 + b"[]" + b"}" * 64


@pytest.mark.parametrize("body", [DEEP, b"[" * 100_000, SIXTY_FIVE_DEEP],
                         ids=["100k-closed", "100k-open", "65-levels"])
@pytest.mark.parametrize("path", ["/email", "/email/batch", "/email/withTemplate",
                                  "/email/batchWithTemplates"])
async def test_json_nested_to_any_depth_is_a_422_on_the_postmark_api(
    gateway, path: str, body: bytes
) -> None:
    status, answer = await raw_post(gateway, path, body)
    assert (status, answer["ErrorCode"]) == (422, 402), answer


async def test_deep_json_in_one_batch_item_is_that_item_s_422(gateway) -> None:
    nested: object = "x"
    for _ in range(70):
        nested = {"a": nested}
    items = [batch_item(0), batch_item(1, Metadata=nested), batch_item(2)]
    status, answer = await post(gateway, "/email/batch", items)
    assert status == 422 and answer["ErrorCode"] == 402, answer
    items[1] = batch_item(1, Metadata={"a": {"b": "c"}})
    status, answer = await post(gateway, "/email/batch", items)
    assert [r["ErrorCode"] for r in answer] == [0, 300, 0]


OWNER_SECRET = "owner-secret-0123456789"
OWNER = f"""
[[accounts]]
name = "root"
secret = "{OWNER_SECRET}"
role = "owner"
sender_domains = []
"""


@pytest.mark.parametrize("path", ["/v1/check", "/v1/suppressions", "/v1/consents",
                                  "/v1/purge", "/webhooks/postmark"])
async def test_deep_json_is_a_4xx_on_the_admin_api_and_webhooks(
    gateway_factory, path: str
) -> None:
    from tests.ingress.test_postmark import WEBHOOK_CONFIG, WEBHOOK_PASSWORD, WEBHOOK_USER

    gateway = await gateway_factory(WEBHOOK_CONFIG + OWNER)
    basic = base64.b64encode(f"{WEBHOOK_USER}:{WEBHOOK_PASSWORD}".encode()).decode()
    authorization = f"Basic {basic}" if "webhooks" in path else f"Bearer {OWNER_SECRET}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{gateway.http_port}{path}", data=SMALL_DEEP,
            headers={"Authorization": authorization},
        ) as response:
            assert 400 <= response.status < 500, await response.text()


async def test_the_gateway_keeps_serving_after_the_hostile_requests(gateway) -> None:
    for body in (DEEP, json.dumps([batch_item(0, Subject="a\u2028b")]).encode()):
        await raw_post(gateway, "/email/batch", body)
    status, answer = await post(gateway, "/email", batch_item(9))
    assert (status, answer["ErrorCode"]) == (200, 0)
