"""The SMTP server every relay under test delivers to: accepts everything, keeps nothing.

`python fake_smtp_sink.py PORT`. It counts what it accepted so the benchmark can check that
messages really went through (not 5xx answers measured as speed): the extra command `XSTAT`
answers `250 accepted=N bytes=B`.
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


class Counter:
    accepted = 0
    bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        Counter.accepted += len(envelope.rcpt_tos)
        Counter.bytes += len(envelope.original_content or b"")
        return f"250 2.0.0 Ok: queued as SINK{Counter.accepted}"


class CountingSMTP(SMTP):
    async def smtp_XSTAT(self, arg: str) -> None:
        await self.push(f"250 accepted={Counter.accepted} bytes={Counter.bytes}")


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: CountingSMTP(Counter(), hostname="sink.bench", data_size_limit=64 * 2**20),
        HOST, port,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
