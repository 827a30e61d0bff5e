"""An email upstream that delivers into a directory of `.eml` files.

It stands in for a real provider in development and tests: every accepted message can be
opened and inspected. A reader polling the directory must never see half a message, so each
file is written under a hidden temporary name and renamed into place only once it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.upstream.base import UpstreamPermanentError, UpstreamTemporaryError


class OutboxEmailUpstream:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def start(self) -> None:
        """Create the directory now, so a bad path stops start-up instead of every send."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing is held open between sends."""

    async def send_email(self, envelope_from: str, recipient: str, message: bytes) -> str:
        """Store the message as a mailbox would: envelope headers first, then its exact bytes.

        `Return-Path` and `Delivered-To` say which copy went to whom, since every recipient's
        copy differs (its own unsubscribe link). The write runs in a worker thread because a
        25 MB message plus fsync would otherwise stall every other connection.
        """
        try:
            content = envelope_headers(envelope_from, recipient) + message
            return await asyncio.to_thread(write_message_file, self.directory, content)
        except OSError as exc:
            raise UpstreamTemporaryError(f"outbox {self.directory}: {exc}") from exc


    async def send_template(self, recipient: str, request: Mapping[str, Any]) -> str:
        """A template send as the JSON Postmark would receive (only Postmark can render it)."""
        content = json.dumps(dict(request) | {"To": recipient}, indent=2).encode()
        try:
            return await asyncio.to_thread(
                write_message_file, self.directory, content, None, ".json"
            )
        except OSError as exc:
            raise UpstreamTemporaryError(f"outbox {self.directory}: {exc}") from exc


def envelope_headers(envelope_from: str, recipient: str) -> bytes:
    for value in (envelope_from, recipient):
        if "\r" in value or "\n" in value:
            raise UpstreamPermanentError(553, f"envelope address with a line break: {value!r}")
    return f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()


def write_message_file(
    directory: Path, message: bytes, stem: str | None = None, suffix: str = ".eml"
) -> str:
    """Write `message` atomically as `<stem><suffix>` in `directory` and return the stem."""
    stem = stem or new_message_stem()
    temporary = directory / f".{stem}.tmp"
    try:
        with temporary.open("xb") as file:
            file.write(message)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(directory / f"{stem}{suffix}")
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return stem


def new_message_stem() -> str:
    """UTC time to the microsecond sorts files by arrival; the random part keeps them unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


def fsync_directory(directory: Path) -> None:
    """Persist the rename itself, so an accepted message survives a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
