"""An email upstream that relays to a provider's SMTP submission server.

Connections are pooled because TCP + STARTTLS + AUTH costs several round trips per message
otherwise. A pooled connection may have been closed by the server while idle; that is only
discovered at the next MAIL FROM, which is the one point where retrying on a fresh connection
cannot send a message twice, so it is the only point where a retry happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from aiosmtplib import SMTP, SMTPException, SMTPResponseException, SMTPTimeoutError

from gateway.config.settings import EmailUpstreamConfig
from gateway.model import UpstreamPermanentError, UpstreamTemporaryError

T = TypeVar("T")

QUEUE_ID = re.compile(r"queued as\s+<?([^\s>]+)", re.IGNORECASE)
SETUP_STAGE = "connection setup"
DATA_STAGE = "DATA"
CLOSING_CHANNEL = 421  # e.g. an idle timeout notice: the server hangs up right after it
CLIENT_ERRORS = (SMTPException, OSError, ValueError)


class UpstreamConnectionLost(UpstreamTemporaryError):
    """The connection died mid-conversation; only before DATA is it safe to try another."""


class SmtpEmailUpstream:
    name = "smtp"

    def __init__(
        self, config: EmailUpstreamConfig, *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        """`tls_context` replaces the system trust store, e.g. for a provider on a private CA."""
        self.config = config
        self._tls_context = tls_context
        self._idle: list[SMTP] = []
        self._busy: set[SMTP] = set()  # in the middle of an exchange
        self._slots = asyncio.Semaphore(config.pool_size)
        self._closed = False

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def start(self) -> None:
        """Connect lazily: an unreachable provider must not stop the gateway from starting."""

    async def close(self) -> None:
        """At shutdown, after the drain deadline: an exchange still running is cut off too,
        and fails as a lost connection at its stage (before DATA nothing went out, so its
        delivery claim is released); no connection is opened after this."""
        self._closed = True
        for client in list(self._busy):
            client.close()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(quit_quietly(client) for client in idle))

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        message = with_message_stream(message, self.config.message_stream)
        utf8 = needs_smtputf8(envelope_from, recipient, message)
        async with self._slots:
            client = await self._client_after_mail_from(envelope_from, message, utf8)
            encoding = "utf-8" if utf8 else "ascii"
            await self._step(client, client.rcpt(recipient, encoding=encoding), "RCPT TO")
            response = await self._step(client, client.data(message), DATA_STAGE)
            self._release(client)
        return queue_id(response.message)

    async def send_template(self, recipient: str, request: Mapping[str, Any]) -> str:
        raise UpstreamPermanentError(554, "templates are rendered by Postmark's API, not SMTP")

    async def _client_after_mail_from(
        self, envelope_from: str, message: bytes, utf8: bool
    ) -> SMTP:
        """A connection past MAIL FROM; a dead pooled one is swapped once for a fresh one."""
        if self._idle:
            pooled = self._idle.pop()
            try:
                await self._mail_from(pooled, envelope_from, message, utf8)
                return pooled
            except UpstreamConnectionLost:
                pass  # lost while idle: nothing of this message went out, so retrying is safe
        client = await self._connect()
        await self._mail_from(client, envelope_from, message, utf8)
        return client

    async def _mail_from(
        self, client: SMTP, envelope_from: str, message: bytes, utf8: bool
    ) -> None:
        options = ["BODY=8BITMIME"] if needs_8bitmime(client, message) else []
        if utf8:
            if not client.supports_extension("smtputf8"):
                self._release(client)
                raise UpstreamPermanentError(
                    553, f"a UTF-8 address needs SMTPUTF8 (RFC 6531), which upstream "
                    f"{self.address} does not offer"
                )
            options.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        await self._step(
            client, client.mail(envelope_from, options=options, encoding=encoding), "MAIL FROM"
        )

    def _release(self, client: SMTP) -> None:
        if self._closed:
            client.close()
        else:
            self._idle.append(client)

    async def _connect(self) -> SMTP:
        if self._closed:
            raise UpstreamTemporaryError(f"upstream {self.address}: the gateway is stopping")
        client = SMTP(
            hostname=self.config.host,
            port=self.config.port,
            timeout=self.config.timeout_s,
            start_tls=False,
            tls_context=self._tls_context,
        )
        await self._step(client, self._open_session(client), SETUP_STAGE)
        return client

    async def _open_session(self, client: SMTP) -> None:
        await client.connect()
        await client.ehlo()
        if self.config.starttls:
            if not client.supports_extension("starttls"):
                raise UpstreamTemporaryError(
                    f"upstream {self.address} does not offer STARTTLS; refusing to continue "
                    "in clear text"
                )
            await client.starttls()
        if self.config.username:
            await client.login(self.config.username, self.config.password)

    async def _step(self, client: SMTP, operation: Awaitable[T], stage: str) -> T:
        """Run one exchange; a connection that failed one is in an unknown state, so it closes."""
        self._busy.add(client)
        try:
            return await operation
        except BaseException as exc:
            client.close()
            if isinstance(exc, CLIENT_ERRORS):
                raise self._translated(exc, stage) from exc
            raise
        finally:
            self._busy.discard(client)

    def _translated(
        self, exc: SMTPException | OSError | ValueError, stage: str
    ) -> UpstreamTemporaryError | UpstreamPermanentError:
        """Map a client error to the pipeline's two outcomes.

        A 421 means the server is hanging up, which is as good as a lost connection.
        A 5xx during connection setup (EHLO, STARTTLS, AUTH) says nothing about the message,
        only about this gateway's settings, so it stays temporary instead of bouncing the mail.
        A bare ValueError is an address the client cannot encode: no retry will fix that.
        (TLS verification errors are ValueErrors too, but also OSErrors, hence the order.)
        """
        if isinstance(exc, SMTPResponseException):
            if exc.code >= 500 and stage != SETUP_STAGE:
                return UpstreamPermanentError(exc.code, exc.message)
            text = f"upstream {self.address} answered {stage} with {exc.code} {exc.message}"
            if exc.code == CLOSING_CHANNEL:
                return UpstreamConnectionLost(text)
            return UpstreamTemporaryError(text)
        handed_over = stage == DATA_STAGE
        if isinstance(exc, TimeoutError | SMTPTimeoutError):
            return UpstreamTemporaryError(
                f"upstream {self.address} timed out after {self.config.timeout_s:g}s "
                f"during {stage}",
                maybe_delivered=handed_over,
            )
        if isinstance(exc, ConnectionError):
            return UpstreamConnectionLost(
                f"upstream {self.address} lost during {stage}: {exc}", maybe_delivered=handed_over
            )
        if isinstance(exc, SMTPException | OSError) or stage == SETUP_STAGE:
            return UpstreamTemporaryError(f"upstream {self.address} failed during {stage}: {exc}")
        return UpstreamPermanentError(553, f"address cannot be sent over SMTP: {exc}")


def with_message_stream(message: bytes, stream: str) -> bytes:
    """Postmark's SMTP convention: the stream travels as X-PM-Message-Stream unless the
    message names one itself."""
    if not stream:
        return message
    header_block = b"\r\n" + message.split(b"\r\n\r\n", 1)[0].lower()
    if b"\r\nx-pm-message-stream:" in header_block:
        return message
    return f"X-PM-Message-Stream: {stream}\r\n".encode() + message


def needs_smtputf8(envelope_from: str, recipient: str, message: bytes) -> bool:
    """UTF-8 left where RFC 2047 cannot go (an address's local part), after
    `gateway.mail.repair` re-encoded everything else in the header."""
    header_block = message.split(b"\r\n\r\n", 1)[0]
    return not (envelope_from.isascii() and recipient.isascii() and header_block.isascii())


def needs_8bitmime(client: SMTP, message: bytes) -> bool:
    """Declare 8-bit content where the server supports it; a strict server may mangle it else."""
    return client.supports_extension("8bitmime") and not message.isascii()


def queue_id(reply_text: str) -> str:
    """The provider's queue id when its reply names one, else its whole reply text."""
    match = QUEUE_ID.search(reply_text)
    return match.group(1) if match else reply_text


async def quit_quietly(client: SMTP) -> None:
    """Say goodbye politely, but a pool shutting down must not fail on a dead connection."""
    try:
        with contextlib.suppress(*CLIENT_ERRORS):
            await client.quit()
    finally:
        client.close()
