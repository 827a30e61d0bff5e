import asyncio
import os
import re
import threading
from datetime import UTC, datetime

import pytest

from gateway.model import UpstreamPermanentError, UpstreamTemporaryError
from gateway.upstream import spool
from gateway.upstream.outbox import OutboxEmailUpstream
from gateway.upstream.spool import Spool

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

    monkeypatch.setattr(spool, "datetime", FrozenClock)
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
    """Pause the writer while it makes the data durable: only a dot-named, non-.eml file
    may exist at that moment."""
    upstream = await started(tmp_path)
    reached_flush, release = threading.Event(), threading.Event()
    real_flush = spool.flush_to_disk

    def paused_flush(directory, descriptors):
        reached_flush.set()
        release.wait(5)
        real_flush(directory, descriptors)

    monkeypatch.setattr(spool, "flush_to_disk", paused_flush)
    send = asyncio.create_task(upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE))
    try:
        assert await asyncio.to_thread(reached_flush.wait, 5)
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

    def failing_flush(directory, descriptors):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool, "flush_to_disk", failing_flush)
    with pytest.raises(UpstreamTemporaryError, match="Input/output error"):
        await upstream.send_email("rep@corp.example", "ada@example.com", MESSAGE)

    assert list(tmp_path.iterdir()) == []


async def test_without_syncfs_each_file_is_fsynced(tmp_path, monkeypatch):
    """Where the C library has no syncfs, every file of the batch gets its own fsync."""
    monkeypatch.setattr(spool, "_SYNCFS", None)
    synced = []
    real_fsync = os.fsync

    def counted_fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)
    writer = Spool(tmp_path, writers=1)
    await asyncio.gather(*(writer.write(b"%d" % n, f"{n}.eml") for n in range(3)))
    await writer.close()

    assert len(synced) == 3 + 1  # three files, then the directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.eml", "1.eml", "2.eml"]


def test_syncfs_is_found_on_linux():
    assert spool._SYNCFS is not None


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


async def test_concurrent_writes_share_one_directory_sync(tmp_path, monkeypatch):
    """Group commit: while one batch is on its way to disk, the next fills up, and the whole
    of it costs one data flush and one directory fsync (one writer thread, so the batches are
    predictable)."""
    writer = Spool(tmp_path, writers=1)
    first_flush, release = threading.Event(), threading.Event()
    flushes, directory_syncs = [], []
    real_flush, real_sync_directory = spool.flush_to_disk, spool.fsync_directory

    def held_flush(directory, descriptors):
        flushes.append(len(descriptors))
        first_flush.set()
        release.wait(5)
        real_flush(directory, descriptors)

    def counted_sync_directory(directory):
        directory_syncs.append(directory)
        real_sync_directory(directory)

    monkeypatch.setattr(spool, "flush_to_disk", held_flush)
    monkeypatch.setattr(spool, "fsync_directory", counted_sync_directory)
    first = asyncio.create_task(writer.write(b"first", "first.eml"))
    assert await asyncio.to_thread(first_flush.wait, 5)
    rest = [asyncio.create_task(writer.write(b"%d" % n, f"m{n}.eml")) for n in range(20)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *rest)
    await writer.close()

    assert flushes == [1, 20]
    assert len(directory_syncs) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["first.eml", *(f"m{n}.eml" for n in range(20))]
    )
    assert (tmp_path / "m7.eml").read_bytes() == b"7"


async def test_a_failed_file_fails_only_its_own_sender(tmp_path):
    writer = Spool(tmp_path)
    (tmp_path / ".taken.eml.tmp").write_bytes(b"someone else's")

    results = await asyncio.gather(
        writer.write(b"a", "a.eml"), writer.write(b"x", "taken.eml"), writer.write(b"b", "b.eml"),
        return_exceptions=True,
    )
    await writer.close()

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], FileExistsError)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".taken.eml.tmp", "a.eml", "b.eml"]


async def test_close_writes_what_was_queued(tmp_path):
    writer = Spool(tmp_path)
    sends = [asyncio.create_task(writer.write(b"%d" % n, f"{n}.eml")) for n in range(5)]
    await asyncio.sleep(0)
    await writer.close()
    await asyncio.gather(*sends)

    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n}.eml" for n in range(5)]
