"""A fake upstream SMTP server that records what it receives and misbehaves on request.

It runs on the test's own event loop (not aiosmtpd's threaded Controller), so a test can
step client and server deterministically and nothing outlives the test.

    async with SmtpSink() as sink:
        upstream = SmtpEmailUpstream(EmailUpstreamConfig(host=sink.host, port=sink.port, ...))
        sink.fail_next("rcpt", 550, "5.1.1 no such user")
        ...
        assert sink.accepted[0].data == message

Faults queue up per stage ("mail", "rcpt", "data") and each applies to the next command of
that stage on any connection, in the order they were queued.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shlex
import ssl
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["mail", "rcpt", "data"]
HOST = "127.0.0.1"
SELF_SIGNED_REQUEST = shlex.split(
    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost"
    " -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
)


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 / localhost and its private key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_self_signed_cert(directory: Path) -> TlsFiles:
    """Generate a one-day EC certificate with the openssl tool (no extra Python packages)."""
    files = TlsFiles(cert=directory / "sink-cert.pem", key=directory / "sink-key.pem")
    subprocess.run(
        ["openssl", *SELF_SIGNED_REQUEST, "-keyout", str(files.key), "-out", str(files.cert)],
        check=True,
        capture_output=True,
    )
    return files


@dataclass
class ReceivedMessage:
    """One message whose content reached the sink, recorded as soon as it arrived.

    `accepted` turns true (and `queue_id` is set, for the default reply) once the sink has
    answered the DATA with a 2xx; a refused, dropped or still stalled message stays false.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    connection_id: int
    login: str | None
    tls: bool
    accepted: bool = False
    queue_id: str | None = None


@dataclass(frozen=True)
class _Fault:
    """Reply `code text` instead of the usual answer, or drop the connection, or stall first."""

    kind: Literal["reply", "drop", "stall"]
    code: int = 0
    text: str = ""
    seconds: float = 0.0


class SmtpSink:
    """The fake server. Enter it with `async with`; it listens on `sink.host`:`sink.port`.

    `tls` makes it offer STARTTLS with that certificate; `auth=(username, password)` makes it
    require AUTH (over TLS when `tls` is set) before MAIL. It accepts DATA with
    "250 2.0.0 Ok: queued as SINK0001" (numbered per sink) unless told otherwise.

    What it saw: `messages` (every DATA that arrived), `accepted` (those answered 2xx),
    `logins` (successful AUTH logins), `mail_commands` (MAIL FROM commands, refused or not:
    the delivery attempts), `quit_count`, `connection_count` and `open_connection_count`.
    """

    host = HOST

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        auth: tuple[str, str] | None = None,
        port: int = 0,
        failure_rate: float = 0.0,
        seed: int = 0,
        smtputf8: bool = False,
    ) -> None:
        """`port` 0 picks a free one; a given port lets a test bring a server back where
        the gateway expects it. `failure_rate` answers that share of DATA commands, at
        random (seeded), with 451 when no fault is queued. `smtputf8` offers RFC 6531."""
        self.port = port
        self.smtputf8 = smtputf8
        self.failure_rate = failure_rate
        self._random = random.Random(seed)
        self.messages: list[ReceivedMessage] = []
        self.logins: list[str] = []
        self.mail_commands = 0
        self.quit_count = 0
        self._tls = tls
        self._auth = auth
        self._faults: dict[Stage, deque[_Fault]] = {stage: deque() for stage in get_args(Stage)}
        self._connections: list[SMTP] = []
        self._queue_numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    @property
    def accepted(self) -> list[ReceivedMessage]:
        """The messages the sink answered with 2xx: what a real provider would deliver."""
        return [message for message in self.messages if message.accepted]

    @property
    def connection_count(self) -> int:
        """Connections accepted since start, open or closed."""
        return len(self._connections)

    @property
    def open_connection_count(self) -> int:
        """Connections the client has not closed yet (nor the sink dropped)."""
        return sum(1 for connection in self._connections if connection.transport is not None)

    def fail_next(self, stage: Stage, code: int, text: str) -> None:
        """Answer the next command at `stage` with `code text` (e.g. 451 or 550).

        A 2xx code still accepts the command, only with this reply text.
        """
        self._faults[stage].append(_Fault("reply", code, text))

    def drop_next(self, stage: Stage) -> None:
        """Close the connection instead of answering the next command at `stage`.

        At "data" the content has fully arrived first, and is recorded as not accepted.
        """
        self._faults[stage].append(_Fault("drop"))

    def stall_next(self, stage: Stage, seconds: float) -> None:
        """Wait `seconds` before answering the next command at `stage` normally.

        A stalled DATA is already in `messages` (not yet accepted) while the sink waits.
        """
        self._faults[stage].append(_Fault("stall", seconds=seconds))

    def drop_connections(self) -> None:
        """Close every open connection at once, as a server's idle timeout would."""
        for connection in self._connections:
            if connection.transport is not None:
                connection.transport.abort()

    async def __aenter__(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()

    def _new_connection(self) -> SMTP:
        handler = _ConnectionHandler(self, connection_id=len(self._connections) + 1)
        connection = SMTP(
            handler,
            hostname="sink.test",
            tls_context=self._tls.server_context() if self._tls else None,
            auth_required=self._auth is not None,
            auth_require_tls=self._tls is not None,
            authenticator=self._authenticate,
            enable_SMTPUTF8=self.smtputf8,
            loop=asyncio.get_running_loop(),
        )
        self._connections.append(connection)
        return connection

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self._auth is None:
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != self._auth:
            return AuthResult(success=False, handled=False)
        self.logins.append(login)
        return AuthResult(success=True, auth_data=login)

    def _next_fault(self, stage: Stage) -> _Fault | None:
        faults = self._faults[stage]
        if faults:
            return faults.popleft()
        if stage == "data" and self._random.random() < self.failure_rate:
            return _Fault("reply", 451, "4.3.0 injected failure")
        return None

    def _next_queue_id(self) -> str:
        return f"SINK{next(self._queue_numbers):04d}"


class _ConnectionHandler:
    """aiosmtpd hooks for one connection, so every record knows which connection it came on."""

    def __init__(self, sink: SmtpSink, connection_id: int) -> None:
        self.sink = sink
        self.connection_id = connection_id

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.sink.mail_commands += 1
        reply = await self._fault_reply(server, "mail")
        if is_accepting(reply):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply or "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._fault_reply(server, "rcpt")
        if is_accepting(reply):
            envelope.rcpt_tos.append(address)
        return reply or "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = self._record(session, envelope)
        self.sink.messages.append(received)
        reply = await self._fault_reply(server, "data")
        if not is_accepting(reply):
            assert reply is not None
            return reply
        received.accepted = True
        if reply:
            return reply
        received.queue_id = self.sink._next_queue_id()
        return f"250 2.0.0 Ok: queued as {received.queue_id}"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.sink.quit_count += 1
        return "221 Bye"

    async def _fault_reply(self, server: SMTP, stage: Stage) -> str | None:
        """The reply a queued fault dictates for `stage`, or None for the normal one."""
        fault = self.sink._next_fault(stage)
        if fault is None:
            return None
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return None
        return await self._reply_or_drop(server, fault)

    async def _reply_or_drop(self, server: SMTP, fault: _Fault) -> str:
        if fault.kind == "drop":
            assert server.transport is not None
            server.transport.abort()
            await asyncio.get_running_loop().create_future()  # cancelled as the connection ends
        return f"{fault.code} {fault.text}"

    def _record(self, session: Session, envelope: Envelope) -> ReceivedMessage:
        assert envelope.mail_from is not None and envelope.original_content is not None
        return ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content,
            mail_options=tuple(envelope.mail_options),
            connection_id=self.connection_id,
            login=session.auth_data if isinstance(session.auth_data, str) else None,
            tls=session.ssl is not None,
        )


def is_accepting(reply: str | None) -> bool:
    """The normal reply (None) or a scripted 2xx both let the command take effect."""
    return reply is None or reply.startswith("2")
