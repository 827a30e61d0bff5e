"""An email upstream that delivers into a directory of `.eml` files.

It stands in for a real provider in development and tests: every accepted message can be
opened and inspected. Files are written durably, and never seen half-written, by `Spool`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.model import UpstreamPermanentError, UpstreamTemporaryError
from gateway.upstream.spool import Spool, new_message_stem


class OutboxEmailUpstream:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.spool = Spool(directory)

    async def start(self) -> None:
        await self.spool.start()

    async def close(self) -> None:
        await self.spool.close()

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        """Store the message as a mailbox would: envelope headers first, then its exact bytes.

        `Return-Path` and `Delivered-To` say which copy went to whom, since every recipient's
        copy differs (its own unsubscribe link).
        """
        return await self._write(envelope_headers(envelope_from, recipient) + message, ".eml")

    async def send_template(self, recipient: str, request: Mapping[str, Any]) -> str:
        """A template send as the JSON Postmark would receive (only Postmark can render it)."""
        return await self._write(
            json.dumps(dict(request) | {"To": recipient}, indent=2).encode(), ".json"
        )

    async def _write(self, content: bytes, suffix: str) -> str:
        stem = new_message_stem()
        try:
            await self.spool.write(content, stem + suffix)
        except OSError as exc:
            raise UpstreamTemporaryError(f"outbox {self.directory}: {exc}") from exc
        return stem


def envelope_headers(envelope_from: str, recipient: str) -> bytes:
    for value in (envelope_from, recipient):
        if "\r" in value or "\n" in value:
            raise UpstreamPermanentError(553, f"envelope address with a line break: {value!r}")
    return f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()
