import asyncio
import os
import re
import threading
from datetime import UTC, datetime

import pytest

from gateway.upstream import outbox
from gateway.upstream.base import UpstreamPermanentError, UpstreamTemporaryError
from gateway.upstream.outbox import OutboxEmailUpstream

ENVELOPE = b"Return-Path: <rep@corp.example>\r\nDelivered-To: ada@example.com\r\n"
MESSAGE = b"To: ada@example.com\r\nSubject: hi\r\n\r\nBody \xc3\xa9\r\n.leading dot\r\n"


async def started(directory):
    upstream = OutboxEmailUpstream(directory)
    await upstream.start()
    return upstream


async def test_start_creates_the_directory(tmp_path):
    directory = tmp_path / "var" / "outbox"
    await started(directory)
    assert directory.is_dir()


async def test_message_is_written_with_its_exact_bytes(tmp_path):
    upstream = await started(tmp_path)

    message_id = await upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE)

    assert re.fullmatch(r"\d{8}T\d{12}-[0-9a-f]{8}", message_id)
    assert [p.name for p in tmp_path.iterdir()] == [f"{message_id}.eml"]
    assert (tmp_path / f"{message_id}.eml").read_bytes() == ENVELOPE + MESSAGE


async def test_concurrent_sends_in_one_microsecond_get_unique_files(tmp_path, monkeypatch):
    """The clock is frozen so only the random part can keep the names apart."""

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    monkeypatch.setattr(outbox, "datetime", FrozenClock)
    upstream = await started(tmp_path)
    messages = [MESSAGE + b"#%d\r\n" % n for n in range(100)]

    ids = await asyncio.gather(
        *(upstream.send_email("rep@corp.example", "ada@example.com", m) for m in messages)
    )

    assert len(set(ids)) == len(messages)
    assert all(message_id.startswith("20250102T030405678901-") for message_id in ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.eml" for i in ids)
    for message_id, message in zip(ids, messages, strict=True):
        assert (tmp_path / f"{message_id}.eml").read_bytes() == ENVELOPE + message


async def test_a_file_being_written_is_hidden_until_complete(tmp_path, monkeypatch):
    """Pause the writer at fsync: only a dot-named, non-.eml file may exist at that moment."""
    upstream = await started(tmp_path)
    reached_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def paused_fsync(fd):
        reached_fsync.set()
        release.wait(5)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", paused_fsync)
    send = asyncio.create_task(upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE))
    try:
        assert await asyncio.to_thread(reached_fsync.wait, 5)
        in_progress = list(tmp_path.iterdir())
    finally:
        release.set()
    message_id = await send

    assert len(in_progress) == 1
    assert in_progress[0].name.startswith(".")
    assert not in_progress[0].name.endswith(".eml")
    assert [p.name for p in tmp_path.iterdir()] == [f"{message_id}.eml"]


async def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    upstream = await started(tmp_path)

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(UpstreamTemporaryError, match="Input/output error"):
        await upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE)

    assert list(tmp_path.iterdir()) == []


async def test_outbox_path_that_is_a_file_fails_start(tmp_path):
    blocker = tmp_path / "outbox"
    blocker.write_bytes(b"")

    with pytest.raises(OSError):
        await OutboxEmailUpstream(blocker).start()


async def test_unwritable_outbox_is_a_temporary_error(tmp_path):
    """Root ignores permissions, so the directory is replaced by a regular file instead."""
    directory = tmp_path / "outbox"
    upstream = await started(directory)
    directory.rmdir()
    directory.write_bytes(b"")

    with pytest.raises(UpstreamTemporaryError, match="outbox"):
        await upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE)


async def test_envelope_address_with_line_break_is_refused(tmp_path):
    upstream = await started(tmp_path)
    with pytest.raises(UpstreamPermanentError):
        await upstream.send_email("rep@corp.example\r\nBcc: x@y", "ada@example.com", MESSAGE)
    assert list(tmp_path.iterdir()) == []
