"""Instructions a message costs a real gateway with encryption at rest off and on, counted by
callgrind. CPU time per message (bench_encryption.py) moves by ±10% between back-to-back runs
on a shared 2-core machine, more than the 5% it is meant to judge; the count of instructions
a fixed number of messages executes moves by ~0.1%. It settles how much work a change adds.
It does not count what that work costs in cache misses and kernel time, which CPU time does:
read the two together.

    python bench/gateway_instructions.py [--kinds text email] [--messages 600]

For each kind and setting, `gateway serve` (workers = 1, SQLite, `[encryption] enabled =
false` or bench_store.ENCRYPTION) runs under `valgrind --tool=callgrind --instr-atstart=no`,
with the SMTP sink and the fake Twilio as upstreams (as bench_encryption.py). 100 messages
warm it up uncounted; callgrind then counts, in every thread of the process, the
instructions `--messages` more execute (8 at once): texts to numbers with an express written
consent (POST Messages.json), emails by POST /email. Needs valgrind (Debian's `valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import bench_smtp
import bench_twilio_http as twilio
from bench_http import email_request
from bench_store import ENCRYPTION
from harness import (
    GATEWAY_SECRET,
    HOST,
    Request,
    change,
    fake,
    free_port,
    gateway,
)

SETTINGS = {"off": "\n[encryption]\nenabled = false\n", "on": ENCRYPTION}
WARM_UP = 100
CONCURRENCY = 8
PATIENCE_S = 600.0
"""A gateway under callgrind starts and stops some 50 times slower than without it."""


async def send_all(request: Request, first: int, count: int) -> None:
    indices = iter(range(first, first + count))
    async with aiohttp.ClientSession() as http:

        async def sender() -> None:
            for index in indices:
                if not await request(http, index):
                    raise RuntimeError(f"message {index} was not accepted")

        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))


def callgrind(pid: int, switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], check=True,
                   capture_output=True)


def instructions(kind: str, setting: str, messages: int, directory: Path) -> int:
    """Instructions `messages` of `kind` executed in the gateway, warm-up excluded."""
    sink, fake_twilio = free_port(), free_port()
    log = directory / "gateway.log"
    with fake("fake_smtp_sink.py", directory, sink), \
            fake("fake_twilio.py", directory, fake_twilio), \
            gateway(directory, bench_smtp.GATEWAY_UPSTREAM.format(sink=sink, pool=2)
                    + twilio.GATEWAY_UPSTREAM.format(fake=fake_twilio) + SETTINGS[setting],
                    now=twilio.NOON_IN_NEW_YORK, prepare=twilio.record_consents,
                    wrapper=["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={directory / 'callgrind.out'}"],
                    patience_s=PATIENCE_S) as running:
        base = f"http://{HOST}:{running['http']}"
        request = (email_request(base, GATEWAY_SECRET) if kind == "email" else
                   twilio.messages_request(base, twilio.basic("bench", GATEWAY_SECRET)))
        asyncio.run(send_all(request, 0, WARM_UP))
        callgrind(running["pid"], "on")
        asyncio.run(send_all(request, WARM_UP, messages))
        callgrind(running["pid"], "off")
    counted = re.findall(r"refs:\s+([\d,]+)", log.read_text())
    if not counted:
        raise RuntimeError(f"callgrind reported no count:\n{log.read_text()[-2000:]}")
    return int(counted[-1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", nargs="+", choices=("text", "email"),
                        default=["text", "email"])
    parser.add_argument("--messages", type=int, default=600)
    arguments = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind): nothing counted")
    twilio.CONSENTED = WARM_UP + arguments.messages  # every number texted, not 300,000
    report = {}
    for kind in arguments.kinds:
        per_message = {}
        for setting in SETTINGS:
            with tempfile.TemporaryDirectory(prefix="bench-instructions-") as name:
                counted = instructions(kind, setting, arguments.messages, Path(name))
            per_message[setting] = round(counted / arguments.messages)
            print(f"{kind} {setting}: {per_message[setting]:,} instructions/message",
                  flush=True)
        report[kind] = {**per_message, "change": change(per_message["on"], per_message["off"])}
    print(json.dumps({"messages": arguments.messages, "python": sys.version.split()[0],
                      "instructions_per_message": report}, indent=2))


if __name__ == "__main__":
    main()
