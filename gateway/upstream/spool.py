"""Durable message files with group commit, for the outbox upstreams.

A message is accepted only once its file is on disk under its final name. Doing that per
message in the default executor (an fsync of the file, one of the directory, a thread hop
each) capped the outbox at about 150 messages/s. Here writer threads take every file
waiting, write and fsync each, rename them into place and fsync the directory once per batch,
and tell the senders in one callback per batch. Several writers keep several fsyncs in
flight, which the filesystem journal commits together: one writer alone waits for the disk
once per file. A reader polling the directory never sees half a file: each is written under
a hidden name first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.ids import unique_hex

MAX_BATCH_FILES = 64
WRITERS = 16


@dataclass
class _Pending:
    content: bytes
    name: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    error: Exception | None = field(default=None)


class Spool:
    """One directory of message files and the threads that write them."""

    def __init__(self, directory: Path, writers: int = WRITERS) -> None:
        self.directory = directory
        self.writers = writers
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Create the directory now, so a bad path stops start-up instead of every send."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Write what is queued, then stop the threads."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            await asyncio.to_thread(thread.join)

    async def write(self, content: bytes, name: str) -> None:
        """Return once `name` is in the directory and on disk; raise (OSError) otherwise."""
        loop = asyncio.get_running_loop()
        pending = _Pending(content, name, loop, loop.create_future())
        self._ensure_threads()
        self._queue.put(pending)
        await pending.future

    def _ensure_threads(self) -> None:
        with self._lock:
            if not self._threads:
                self._threads = [
                    threading.Thread(
                        target=self._run, name=f"spool-{self.directory.name}-{n}", daemon=True
                    )
                    for n in range(self.writers)
                ]
                for thread in self._threads:
                    thread.start()

    def _run(self) -> None:
        """Each writer stops at the first end marker it takes, once its batch is written."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop_seen = False
            while len(batch) < MAX_BATCH_FILES:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop_seen = True
                    break
                batch.append(item)
            self._write_batch(batch)
            _settle(batch)
            if stop_seen:
                return

    def _write_batch(self, batch: list[_Pending]) -> None:
        renamed = []
        for pending in batch:
            try:
                _write_file(self.directory, pending.name, pending.content)
                renamed.append(pending)
            except Exception as exc:  # reported to its sender; the thread must live on
                pending.error = exc
        if not renamed:
            return
        try:
            fsync_directory(self.directory)
        except Exception as exc:
            for pending in renamed:
                pending.error = exc


def _write_file(directory: Path, name: str, content: bytes) -> None:
    temporary = directory / f".{name}.tmp"
    file = temporary.open("xb")  # never someone else's file: that one must not be removed
    try:
        with file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def _settle(batch: list[_Pending]) -> None:
    """One wake-up per event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for pending in batch:
        by_loop.setdefault(pending.loop, []).append(pending)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed while the file was written
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[_Pending]) -> None:
    for pending in settled:
        if pending.future.done():  # the sender was cancelled; the file stays written
            continue
        if pending.error is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(pending.error)


def new_message_stem() -> str:
    """UTC time to the microsecond sorts files by arrival; the random part keeps them unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{unique_hex(32)}"


def fsync_directory(directory: Path) -> None:
    """Persist the renames themselves, so an accepted message survives a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
