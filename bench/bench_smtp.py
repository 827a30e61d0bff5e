"""SMTP messages/s and the latency the gateway adds, against two relays an operator could run.

Every server runs in its own process and delivers to one shared sink (fake_smtp_sink.py):
- the gateway (`python -m gateway serve`, `[upstream.email] kind = "smtp"`, SQLite,
  `workers = 2` as an operator runs it on this 2-core machine, 4 upstream connections each);
- the same gateway with a `[[dkim]]` key, signing every message (gateway-dkim);
- a raw aiosmtpd relay with no policy (fake_smtp_relay.py): what SMTP in Python costs;
- Postfix from Debian as a plain relay (`relayhost` = the sink): what an operator would
  otherwise run. It queues to disk and delivers later, so its figures are acceptance by
  Postfix, as the client sees it; the sink's count is still checked once its queue drains.

The load (aiosmtplib, this process) authenticates with AUTH PLAIN where the server takes it
(Postfix relays for 127.0.0.0/8 without SASL, as `mynetworks` relays do), sends messages the
policy allows (From in the account's sender domains, a valid recipient, a plain subject,
a unique Message-ID so the delivery ledger never treats one as a resend), and counts only
250 answers. Each run is checked against the sink: messages the sink never received are
reported, so a fast stream of refusals cannot pass for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

from aiosmtplib import SMTP, SMTPException
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import (
    GATEWAY_SECRET,
    HOST,
    cpu_seconds,
    fake,
    free_port,
    gateway,
    percentiles,
    wait_for_port,
    with_cpu_per_message,
)

SENDER = "katie@example.com"
RECIPIENT = "bob@client.example.net"
ACCOUNT = "bench"
ID_SLOT = b"message-id-slot"
CONCURRENCY = (1, 10, 50)
SECONDS = float(os.environ.get("BENCH_SMTP_SECONDS", "4"))
POOL_SIZE = 8  # upstream connections in all, the same for the gateway and the raw relay
WORKERS = 2  # the gateway as an operator runs it on this 2-core machine (`gateway.workers`)
POSTFIX_DRAIN_S = 60.0
GATEWAY_UPSTREAM = """
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {sink}
starttls = false
pool_size = {pool}
"""
# The same gateway signing every message it relays (RSA 2048, the key size RFC 8301 asks for).
GATEWAY_DKIM = """
[[dkim]]
domain = "example.com"
selector = "bench"
private_key = "dkim.pem"
"""
POSTFIX_MAIN_CF = """
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = postfix.bench.localdomain
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtp_tls_security_level = none
smtpd_tls_security_level = none
message_size_limit = 67108864
"""
# Debian's master.cf without chroot (no copied /etc inside the queue) or pipe transports,
# with smtpd on a private loopback port instead of port 25.
POSTFIX_MASTER_CF = """
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def headed_message() -> EmailMessage:
    """The headers the policy allows, with a slot for a Message-ID unique to each send."""
    message = EmailMessage()
    message["From"] = f"Katie <{SENDER}>"
    message["To"] = f"Bob <{RECIPIENT}>"
    message["Subject"] = "Fleet maintenance costs"
    message["Message-ID"] = f"<{ID_SLOT.decode()}@bench.example.com>"
    return message


def plain_message(size: int) -> bytes:
    """A first-touch sales email of about `size` bytes, text only."""
    message = headed_message()
    paragraph = "Hi Bob, would a 15 minute call next week about fleet costs work for you?\n"
    message.set_content(paragraph * (size // len(paragraph)))
    return message.as_bytes(policy=SMTP_POLICY)


def multipart_message(size: int) -> bytes:
    """Text and HTML alternatives plus a PDF attachment, about `size` bytes in all. Its MIME
    boundaries carry the per-send slot too: every real message has boundaries of its own, and
    the parser compiles a pattern for each new one."""
    message = headed_message()
    message.set_content("Hi Bob,\n\nThe brochure is attached.\n\nKatie\n" * 10)
    message.add_alternative("<html><body><p>Hi Bob,</p><p>The brochure is attached.</p>"
                            "<p>Katie</p></body></html>\n" * 10, subtype="html")
    base = len(message.as_bytes(policy=SMTP_POLICY))
    attachment = bytes(range(256)) * ((size - base) * 3 // 4 // 256 + 1)
    message.add_attachment(attachment, maintype="application", subtype="pdf",
                           filename="brochure.pdf")
    multiparts = [part for part in message.walk() if part.is_multipart()]
    for depth, part in enumerate(multiparts):
        part.set_boundary(f"=_{depth}_{ID_SLOT.decode()}")
    return message.as_bytes(policy=SMTP_POLICY)


MESSAGES = {"2 KB plain": plain_message(2_000),
            "20 KB multipart + attachment": multipart_message(20_000)}


@dataclass(frozen=True)
class Target:
    """A server under test: where it listens and whether it takes AUTH."""

    name: str
    port: int
    login: bool
    queues: bool = False  # answers 250 before delivering (Postfix): wait for the sink
    pid: int = 0  # whose CPU (with its children's) is counted; 0: none (Postfix's come and go)


async def connect(target: Target) -> SMTP:
    client = SMTP(hostname=HOST, port=target.port, start_tls=False, timeout=120)
    await client.connect()
    try:
        await client.ehlo()
        if target.login:
            await client.auth_plain(ACCOUNT, GATEWAY_SECRET)
    except BaseException:
        client.close()
        raise
    return client


async def close(client: SMTP | None) -> None:
    if client is None:
        return
    if client.is_connected:
        with contextlib.suppress(SMTPException, OSError):
            await client.quit()
    client.close()


async def send_for(target: Target, template: bytes, concurrency: int, reuse: bool,
                   seconds: float, ids: Iterator[int], per_worker: int = 0) -> dict:
    """`concurrency` connections sending back to back for `seconds` (or `per_worker`
    messages each); with `reuse` each connection carries many messages, without it each
    message gets its own connection (connect, EHLO, AUTH, MAIL, RCPT, DATA, QUIT), and
    latency includes the set-up."""
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        client: SMTP | None = None
        for sent in itertools.count():
            if (sent >= per_worker) if per_worker else (time.perf_counter() >= stop):
                break
            content = template.replace(ID_SLOT, f"bench-{next(ids)}".encode())
            started = time.perf_counter()
            try:
                client = client or await connect(target)
                await client.sendmail(SENDER, [RECIPIENT], content)
            except (SMTPException, OSError) as error:
                errors.append(str(error)[:200])
                await close(client)
                client = None
                continue
            latencies.append(time.perf_counter() - started)
            if not reuse:
                await close(client)
                client = None
        await close(client)

    cpu, started = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"messages_per_s": round(len(latencies) / elapsed, 1), "ok": len(latencies),
            "errors": len(errors), "first_error": errors[0] if errors else "",
            "seconds": round(elapsed, 2), "client_cpu": round((cpu_seconds() - cpu) / elapsed, 2),
            **percentiles(latencies)}


async def sink_accepted(sink_port: int) -> int:
    client = SMTP(hostname=HOST, port=sink_port, start_tls=False)
    await client.connect()
    response = await client.execute_command(b"XSTAT")
    await close(client)
    return int(response.message.split()[0].removeprefix("accepted="))


async def measured(target: Target, sink_port: int, template: bytes, concurrency: int,
                   reuse: bool, ids: Iterator[int], seconds: float = SECONDS,
                   per_worker: int = 0) -> dict:
    """One run, plus how many of its accepted messages the sink really received (for a
    queueing target, once its queue has drained, so nothing spills into the next run)."""
    before = await sink_accepted(sink_port)
    result = await send_for(target, template, concurrency, reuse, seconds, ids, per_worker)
    deadline = time.monotonic() + (POSTFIX_DRAIN_S if target.queues else 0)
    delivered = await sink_accepted(sink_port) - before
    while delivered < result["ok"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        delivered = await sink_accepted(sink_port) - before
    return {**result, "delivered_to_sink": delivered}


async def measure(targets: list[Target], sink_port: int, sink_pid: int) -> list[dict]:
    """Every combination of size, concurrency and reuse, the targets taking turns within each so
    that drift in the machine's load falls on all of them alike; each run records the CPU
    the target, the sink and the load generator spent per message."""
    ids = itertools.count()
    for target in targets:  # warm-up: imports, pools, SQLite pages
        await measured(target, sink_port, MESSAGES["2 KB plain"], 4, True, ids, seconds=1.0)
    cells = []
    for size, template in MESSAGES.items():
        for concurrency in CONCURRENCY:
            for reuse in (True, False):
                for target in targets:
                    own = {target.name: target.pid} if target.pid else {}
                    result = await with_cpu_per_message({"sink": sink_pid, **own}, measured(
                        target, sink_port, template, concurrency, reuse, ids))
                    cells.append({"target": target.name, "size": size,
                                  "concurrency": concurrency, "reuse": reuse, **result})
                    print(f"smtp {target.name:8} {size:30} c={concurrency:<3} reuse={reuse!s:5} "
                          f"{result['messages_per_s']:8} msg/s p50 {result['p50_ms']} ms "
                          f"p99 {result['p99_ms']} ms errors {result['errors']}", flush=True)
    return cells


def postfix_unavailable() -> str:
    """Why Postfix cannot be the second baseline here, or "" when it can."""
    if shutil.which("postfix") is None:
        return "postfix is not installed (`make bench` installs Debian's package when root)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root to drop to its `postfix` user"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no `postfix` user"
    return ""


@contextlib.contextmanager
def postfix(directory: Path, sink_port: int) -> Iterator[int]:
    """A private Postfix instance (its own config, queue and log under `directory`) relaying
    everything from loopback to the sink; yields its port and stops it on the way out."""
    root = directory / "postfix"
    config = root / "conf"
    config.mkdir(parents=True)
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix")
    for path in (directory, root):  # Postfix's daemons run as `postfix` and must get in
        path.chmod(0o755)
    port = free_port()
    (config / "main.cf").write_text(POSTFIX_MAIN_CF.format(root=root, sink=sink_port))
    (config / "master.cf").write_text(POSTFIX_MASTER_CF.format(port=port))
    command = ["postfix", "-c", str(config)]
    started = subprocess.run([*command, "start"], capture_output=True, text=True)
    try:
        if started.returncode != 0:
            log = root / "postfix.log"
            tail = log.read_text()[-600:] if log.exists() else started.stderr
            raise RuntimeError(f"postfix did not start: {tail.strip()}")
        wait_for_port(port)
        yield port
    finally:
        if subprocess.run([*command, "stop"], capture_output=True).returncode != 0:
            subprocess.run([*command, "abort"], capture_output=True)


def gateway_outcomes(http_port: int) -> dict[str, float]:
    """The gateway's own count of email outcomes (allowed / blocked / failed)."""
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    outcomes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_messages_total{") and 'channel="email"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            outcomes[outcome] = outcomes.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return outcomes


def rsa_pem(bits: int) -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())


def main() -> dict:
    skipped = postfix_unavailable()
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as name, contextlib.ExitStack() as stack:
        directory = Path(name)
        sink_port, relay_port = free_port(), free_port()
        sink_pid = stack.enter_context(fake("fake_smtp_sink.py", directory, sink_port))
        relay_pid = stack.enter_context(fake("fake_smtp_relay.py", directory, relay_port,
                                             sink_port, POOL_SIZE))
        served = stack.enter_context(
            gateway(directory, GATEWAY_UPSTREAM.format(sink=sink_port, pool=POOL_SIZE // WORKERS),
                    workers=WORKERS)
        )
        signing_directory = directory / "dkim"
        signing_directory.mkdir()
        (signing_directory / "dkim.pem").write_bytes(rsa_pem(2048))
        signing = stack.enter_context(
            gateway(signing_directory,
                    GATEWAY_UPSTREAM.format(sink=sink_port, pool=POOL_SIZE // WORKERS)
                    + GATEWAY_DKIM, workers=WORKERS)
        )
        targets = [Target("gateway", served["smtp"], login=True, pid=served["pid"]),
                   Target("gateway-dkim", signing["smtp"], login=True, pid=signing["pid"]),
                   Target("relay", relay_port, login=True, pid=relay_pid)]
        if not skipped:
            try:
                port = stack.enter_context(postfix(directory, sink_port))
                targets.append(Target("postfix", port, login=False, queues=True))
            except (RuntimeError, OSError) as error:
                skipped = str(error)
        if skipped:
            print(f"smtp: Postfix baseline skipped: {skipped}", flush=True)
        cells = asyncio.run(measure(targets, sink_port, sink_pid))
        outcomes = gateway_outcomes(served["http"])
    return {
        "benchmark": "SMTP relay throughput and added latency",
        "seconds_per_run": SECONDS,
        "upstream_pool_size": POOL_SIZE,
        "workers": WORKERS,
        "message_bytes": {size: len(template) for size, template in MESSAGES.items()},
        "postfix_skipped": skipped,
        "gateway_outcomes": outcomes,
        "cells": cells,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
