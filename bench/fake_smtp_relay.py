"""The raw baseline: an aiosmtpd relay with no policy, forwarding to the same sink.

`python fake_smtp_relay.py PORT SINK_PORT POOL_SIZE`. Built like the gateway's SMTP path
without the gateway: it takes AUTH (any credentials, so clients do the same round trips as
against the gateway), forwards each recipient over a pool of `POOL_SIZE` aiosmtplib
connections (the gateway's `upstream.email.pool_size`) and answers 250 only once the sink
has accepted, as the gateway does. What it costs is what an SMTP relay in Python costs.
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from aiosmtplib import SMTP as Client
from aiosmtplib import SMTPException

HOST = "127.0.0.1"


class Relay:
    def __init__(self, sink_port: int, pool_size: int) -> None:
        self.sink_port = sink_port
        self.idle: list[Client] = []
        self.slots = asyncio.Semaphore(pool_size)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            for recipient in envelope.rcpt_tos:
                await self.forward(envelope.mail_from or "", recipient, content)
        except (SMTPException, OSError) as error:
            return f"451 4.3.0 sink unavailable: {error}"
        return "250 2.0.0 OK"

    async def forward(self, sender: str, recipient: str, content: bytes) -> None:
        async with self.slots:
            client = self.idle.pop() if self.idle else await self.connect()
            await client.sendmail(sender, [recipient], content)
            self.idle.append(client)

    async def connect(self) -> Client:
        client = Client(hostname=HOST, port=self.sink_port, start_tls=False)
        await client.connect()
        return client


def accept_any(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
               auth_data: object) -> AuthResult:
    return AuthResult(success=True)


async def serve(port: int, sink_port: int, pool_size: int) -> None:
    relay = Relay(sink_port, pool_size)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="relay.bench", authenticator=accept_any,
                     auth_require_tls=False, data_size_limit=64 * 2**20),
        HOST, port,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
