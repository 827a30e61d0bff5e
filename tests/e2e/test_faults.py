"""Fault injection: the upstream refuses, times out, resets mid-DATA or answers 4xx/5xx; the
store becomes unreachable; the outbox disk is full.

In every case the agent gets a temporary failure (or the provider's permanent refusal),
nothing reaches the provider unchecked, nothing is reported sent that was not, and after
recovery a retried message arrives exactly once where the protocol promises it: SMTP
retries are deduplicated by the delivery ledger; Postmark's API has no idempotency key, so
there the gateway says whether anything may have gone out, and a retry after "nothing was
sent" is the only copy. docs/reliability.md lists what each case shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest
from postmarker.exceptions import ClientError

import gateway.upstream.spool as spool
from gateway.config.settings import Config
from gateway.pipeline.process import STALE_DELIVERY_CLAIM_S
from gateway.server import Gateway
from gateway.store import open_store
from tests.conftest import DEMO_SECRET, outbox_messages
from tests.fakes.clock import SteppingClock
from tests.fakes.postmark import SERVER_TOKEN, FakePostmark
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.store import FlakyStore
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import send as postmark_send

BOB, ANN = "bob@client.example.net", "ann@client.example.net"
FOOTER = b"548 Market St"


def smtp_upstream(port: int) -> str:
    return f"""
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {port}
starttls = false
timeout_s = 1
"""


def postmark_upstream(port: int) -> str:
    return f"""
[upstream.email]
kind = "postmark"
server_token = "{SERVER_TOKEN}"
base_url = "http://127.0.0.1:{port}"
timeout_s = 1
"""


def free_port() -> int:
    """A loopback port nothing listens on (until a test brings its server back there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def submit(gateway: Gateway, recipients: tuple[str, ...] = (BOB, ANN)) -> tuple[int, str]:
    """One SMTP transaction of the same message every time (so retries are retries)."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    content = first_touch(to=list(recipients)).as_bytes()
    try:
        await smtp.login("demo", DEMO_SECRET)
        errors, reply = await smtp.sendmail("katie@example.com", list(recipients), content)
        assert errors == {}
        return 250, reply
    except aiosmtplib.SMTPRecipientsRefused as refused:
        return refused.recipients[0].code, refused.recipients[0].message
    except aiosmtplib.SMTPResponseException as failed:
        return failed.code, failed.message
    finally:
        smtp.close()


def queued(reply: tuple[int, str], note: str = "") -> bool:
    """A 250 naming the message's gateway id, and what else happened (`note`), if anything."""
    code, text = reply
    extra = re.escape(f" ({note})") if note else ""
    return code == 250 and re.fullmatch(rf"2\.0\.0 OK queued as [0-9a-f]+{extra}", text) is not None


def allowed_count(gateway: Gateway) -> float:
    """Copies the gateway counts as handed over (what it would report as sent)."""
    value = gateway.services.metrics.registry.get_sample_value(
        "gateway_messages_total", {"channel": "email", "outcome": "allowed", "reason": ""}
    )
    return value or 0.0


def copies(sink: SmtpSink) -> Counter[str]:
    """Accepted copies at the provider per recipient; each one rewritten by the gateway."""
    for message in sink.messages:
        assert FOOTER in message.data and b"List-Unsubscribe-Post:" in message.data
    return Counter(r for message in sink.accepted for r in message.rcpt_tos)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for something the fakes do on their own schedule."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


# SMTP ingress, SMTP upstream --------------------------------------------------------------

@pytest.mark.parametrize(
    ("inject", "said"),
    [
        (lambda sink: sink.fail_next("rcpt", 451, "4.3.0 try later"), "try later"),
        (lambda sink: sink.fail_next("data", 421, "4.4.2 closing"), "421"),
        (lambda sink: sink.fail_next("mail", 452, "4.3.1 queue full"), "queue full"),
    ],
    ids=["4xx at RCPT", "421 at DATA", "4xx at MAIL"],
)
async def test_upstream_4xx_is_451_and_the_retry_completes_exactly_once(
    gateway_factory, inject, said
) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(smtp_upstream(sink.port))
        inject(sink)
        code, text = await submit(gateway)
        assert code == 451 and said in text
        assert copies(sink) == Counter({ANN: 1})
        assert allowed_count(gateway) == 1
        assert queued(await submit(gateway), "1 delivered by an earlier attempt, not sent again")
        assert copies(sink) == Counter({BOB: 1, ANN: 1})


async def test_upstream_5xx_is_passed_back_and_nothing_is_reported_sent(gateway_factory) -> None:
    async with SmtpSink() as sink:
        gateway = await gateway_factory(smtp_upstream(sink.port))
        sink.fail_next("data", 554, "5.7.1 rejected by policy")
        code, text = await submit(gateway)
        assert code == 554
        assert "UPSTREAM_REJECTED" in text and "delivered to: " + ANN in text
        assert copies(sink) == Counter({ANN: 1})
        assert allowed_count(gateway) == 1


async def test_upstream_refusing_connections_then_back(gateway_factory) -> None:
    port = free_port()
    gateway = await gateway_factory(smtp_upstream(port))
    code, text = await submit(gateway)
    assert code == 451 and "UPSTREAM_UNAVAILABLE" in text
    assert allowed_count(gateway) == 0
    async with SmtpSink(port=port) as sink:
        assert queued(await submit(gateway))
        assert queued(await submit(gateway), "2 delivered by an earlier attempt, not sent again")
        assert copies(sink) == Counter({BOB: 1, ANN: 1})


@pytest.mark.parametrize(
    ("inject", "said"),
    [
        (lambda sink: sink.drop_next("data"), "lost during DATA"),
        (lambda sink: sink.stall_next("data", 1.5), "timed out after 1s during DATA"),
    ],
    ids=["reset mid-DATA", "timeout at DATA"],
)
async def test_ambiguous_data_failure_holds_the_copy_until_the_claim_is_stale(
    gateway_factory, clock, inject, said
) -> None:
    """The connection dies or times out after the content went out: the provider may have
    it, so a retry is refused (451) rather than sent at once; once the claim is stale
    (nobody recorded a delivery for 10 minutes) the retry sends it."""
    async with SmtpSink() as sink:
        gateway = await gateway_factory(smtp_upstream(sink.port), clock=clock)
        inject(sink)
        code, text = await submit(gateway)
        assert code == 451 and said in text
        assert copies(sink) == Counter({ANN: 1})
        assert allowed_count(gateway) == 1
        code, text = await submit(gateway)
        assert code == 451 and "being delivered right now" in text
        assert copies(sink) == Counter({ANN: 1})
        clock.advance(STALE_DELIVERY_CLAIM_S + 1)
        assert (await submit(gateway))[0] == 250
        assert copies(sink) == Counter({BOB: 1, ANN: 1})


async def test_a_send_cut_off_at_shutdown_frees_its_claim_for_the_retry(config_factory) -> None:
    """SIGTERM with a short drain while the upstream is slow: the copy still waiting on it is
    cut off before its content went out, and its delivery claim is released before the
    store closes. The agent's retry, to the gateway started again on the same store, is
    sent (not refused with 451 for 10 minutes), and only once."""
    async with SmtpSink() as sink:
        config = replace(config_factory(smtp_upstream(sink.port)), drain_timeout_s=0.1)
        first = Gateway(config)
        await first.start()
        sink.stall_next("rcpt", 30)
        cut_off = asyncio.create_task(submit(first, (BOB,)))
        await until(lambda: sink.mail_commands == 1)
        await first.stop()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await cut_off
        again = Gateway(config)
        await again.start()
        try:
            assert queued(await submit(again, (BOB,)))
        finally:
            await again.stop()
        assert copies(sink) == Counter({BOB: 1})


# The store ---------------------------------------------------------------------------------

@pytest.fixture
async def flaky_gateway(config_factory) -> AsyncIterator[tuple[Gateway, FlakyStore, SmtpSink]]:
    async with SmtpSink() as sink:
        config: Config = config_factory(smtp_upstream(sink.port))
        store = FlakyStore(open_store(config.store_url))
        gateway = Gateway(config, store=store)  # type: ignore[arg-type]
        await gateway.start()
        try:
            yield gateway, store, sink
        finally:
            store.down = False
            await gateway.stop()


async def test_store_down_accepts_nothing_and_the_retry_arrives_once(flaky_gateway) -> None:
    gateway, store, sink = flaky_gateway
    store.down = True
    code, text = await submit(gateway)
    assert code == 454 and "STORE_UNAVAILABLE" in text  # refused at AUTH: counts unreadable
    assert sink.mail_commands == 0
    store.down = False
    assert queued(await submit(gateway))
    assert queued(await submit(gateway), "2 delivered by an earlier attempt, not sent again")
    assert copies(sink) == Counter({BOB: 1, ANN: 1})


async def test_store_down_between_rcpt_and_data(flaky_gateway) -> None:
    gateway, store, sink = flaky_gateway
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("demo", DEMO_SECRET)
    await smtp.mail("katie@example.com")
    assert (await smtp.rcpt(BOB)).code == 250
    store.down = True
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await smtp.data(first_touch().as_bytes())
    assert failed.value.code == 451
    store.down = False
    await smtp.quit()
    assert sink.mail_commands == 0
    assert (await submit(gateway, (BOB,)))[0] == 250
    assert copies(sink) == Counter({BOB: 1})


async def test_store_down_over_http_is_503_and_nothing_is_sent(flaky_gateway) -> None:
    gateway, store, sink = flaky_gateway
    store.down = True
    with pytest.raises(ClientError) as failed:
        await postmark_send(gateway)
    assert failed.value.error_code == 100 and "STORE_UNAVAILABLE" in str(failed.value)
    assert sink.mail_commands == 0
    store.down = False
    assert (await postmark_send(gateway))["ErrorCode"] == 0
    assert copies(sink) == Counter({BOB: 1})


# The outbox disk ---------------------------------------------------------------------------

class FullDisk:
    """Makes the outbox directory's filesystem full and frees it again.

    As root: a 1 MiB tmpfs mounted on the directory, filled with a file until the kernel
    says ENOSPC. Otherwise: the spool's file write raises ENOSPC (in-process)."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        self.monkeypatch = monkeypatch
        self.filler = directory / ".filler"
        self.mounted = False
        self.full = False

    def mount(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.directory)],
                capture_output=True, check=False,
            )
            self.mounted = done.returncode == 0
        if not self.mounted:
            write = spool._write_file

            def write_unless_full(directory: Path, name: str, content: bytes) -> None:
                if self.full:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                write(directory, name, content)

            self.monkeypatch.setattr(spool, "_write_file", write_unless_full)

    def fill(self) -> None:
        self.full = True
        if self.mounted:
            with contextlib.suppress(OSError), self.filler.open("wb") as filler:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()

    def free(self) -> None:
        self.full = False
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.directory)], check=True)


async def test_outbox_disk_full_is_451_and_the_retry_arrives_once(
    config_factory, monkeypatch
) -> None:
    config = config_factory()
    disk = FullDisk(config.data_dir / "outbox" / "email", monkeypatch)
    disk.mount()
    gateway = Gateway(config)
    await gateway.start()
    try:
        disk.fill()
        code, text = await submit(gateway)
        assert code == 451 and ("No space left" in text or "ENOSPC" in text)
        assert outbox_messages(gateway) == []
        assert allowed_count(gateway) == 0
        disk.free()
        assert queued(await submit(gateway))
        assert queued(await submit(gateway), "2 delivered by an earlier attempt, not sent again")
        delivered = Counter(
            raw.split(b"Delivered-To: ", 1)[1].split(b"\r\n", 1)[0].decode()
            for raw in outbox_messages(gateway)
        )
        assert delivered == Counter({BOB: 1, ANN: 1})
        assert not [p for p in disk.directory.iterdir() if p.name.endswith(".tmp")]
    finally:
        await gateway.stop()
        disk.unmount()


# Postmark-shaped API, Postmark upstream ----------------------------------------------------

async def postmark_answer(gateway: Gateway, **fields: str) -> tuple[int, str]:
    try:
        answer = await postmark_send(gateway, **fields)
    except ClientError as refused:
        return refused.error_code, str(refused)
    return 200, answer["Message"]


@pytest.mark.parametrize(
    "inject",
    [
        lambda fake: fake.answer_next(500, {"ErrorCode": 0, "Message": "boom"}),
        lambda fake: fake.answer_next(503, "<html>Service Unavailable</html>"),
        lambda fake: fake.answer_next(429, {"ErrorCode": 0, "Message": "rate limited"}),
    ],
    ids=["500", "503 html", "429"],
)
async def test_postmark_outage_says_nothing_was_sent_and_the_retry_is_the_only_copy(
    gateway_factory, inject
) -> None:
    async with FakePostmark() as fake:
        gateway = await gateway_factory(postmark_upstream(fake.port))
        inject(fake)
        code, text = await postmark_answer(gateway)
        assert code == 100 and "nothing was sent; retry" in text
        assert fake.accepted == []
        assert (await postmark_answer(gateway))[0] == 200
        assert [m["To"] for m in fake.accepted] == [BOB]
        assert allowed_count(gateway) == 1


async def test_postmark_refusal_passes_back_and_nothing_is_reported_sent(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await gateway_factory(postmark_upstream(fake.port))
        fake.answer_next(422, {"ErrorCode": 300, "Message": "Invalid email request"})
        code, _ = await postmark_answer(gateway)
        assert code == 300
        assert fake.accepted == [] and allowed_count(gateway) == 0


async def test_postmark_unreachable_then_back(gateway_factory) -> None:
    port = free_port()
    gateway = await gateway_factory(postmark_upstream(port))
    code, text = await postmark_answer(gateway)
    assert code == 100 and "nothing was sent; retry" in text
    async with FakePostmark(port=port) as fake:
        assert (await postmark_answer(gateway))[0] == 200
        assert [m["To"] for m in fake.accepted] == [BOB]


async def test_postmark_timeout_says_it_may_have_been_sent(gateway_factory) -> None:
    async with FakePostmark() as fake:
        gateway = await gateway_factory(postmark_upstream(fake.port))
        fake.stall_next()
        code, text = await postmark_answer(gateway)
        assert code == 100 and "it may have been sent" in text
        fake.release()
        await until(lambda: len(fake.accepted) == 1)
        assert allowed_count(gateway) == 0


async def test_postmark_partial_failure_names_who_got_it(gateway_factory) -> None:
    """Two recipients, two provider requests: the second fails. The agent must not hear
    "nothing was sent", since Postmark would send a retry to both again."""
    async with FakePostmark() as fake:
        gateway = await gateway_factory(postmark_upstream(fake.port))
        fake.answer_next(200, {"ErrorCode": 0, "Message": "OK", "MessageID": "first"})
        fake.answer_next(500, {"ErrorCode": 0, "Message": "boom"})
        code, text = await postmark_answer(gateway, To=f"{BOB}, {ANN}")
        assert code == 100
        assert "delivered to " + BOB in text and "it may have been sent" in text
