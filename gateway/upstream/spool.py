"""Durable message files with group commit, for the outbox upstreams.

A message is accepted only once its file is on disk under its final name. Doing that per
message (an fsync of the file, one of the directory, a thread hop each) capped the outbox at
about 150 messages/s: each fsync is a journal commit. Here a writer thread takes every file
waiting, writes them under hidden names, makes all of them durable at once (one `syncfs`),
renames them into place and syncs the directory once, then tells the senders in one
callback per batch: two journal commits per batch, however large. A second writer keeps a
large message from holding up the small ones behind it. A reader polling the directory never
sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.runtime.handoff import Handoff, settle
from gateway.runtime.ids import unique_hex

MAX_BATCH_FILES = 256
WRITERS = 2


@dataclass
class _Pending(Handoff):
    content: bytes = b""
    name: str = ""


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
        pending = _Pending(*Handoff.on_running_loop(), content=content, name=name)
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
            settle(batch)
            if stop_seen:
                return

    def _write_batch(self, batch: list[_Pending]) -> None:
        """Write every file under its hidden name, make all of them durable at once, rename
        them into place, and make the renames durable with one directory sync."""
        written: list[tuple[_Pending, int]] = []
        for pending in batch:
            try:
                descriptor = _write_hidden(self.directory, pending.name, pending.content)
                written.append((pending, descriptor))
            except Exception as exc:  # reported to its sender; the thread must live on
                pending.error = exc
        try:
            flush_to_disk(self.directory, [descriptor for _, descriptor in written])
        except Exception as exc:
            for pending, _ in written:
                pending.error = exc
        finally:
            for _, descriptor in written:
                os.close(descriptor)
        renamed = []
        for pending, _ in written:
            hidden = _hidden(self.directory, pending.name)
            try:
                if pending.error is None:
                    hidden.rename(self.directory / pending.name)
                    renamed.append(pending)
            except Exception as exc:
                pending.error = exc
            if pending.error is not None:
                with contextlib.suppress(OSError):
                    hidden.unlink(missing_ok=True)
        if not renamed:
            return
        try:
            fsync_directory(self.directory)
        except Exception as exc:
            for pending in renamed:
                pending.error = exc


def _hidden(directory: Path, name: str) -> Path:
    return directory / f".{name}.tmp"


def _write_hidden(directory: Path, name: str, content: bytes) -> int:
    """The open descriptor of the written file. O_EXCL: never someone else's file (that
    one must not be removed on failure)."""
    hidden = _hidden(directory, name)
    descriptor = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            hidden.unlink(missing_ok=True)
        raise
    return descriptor


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return None


_SYNCFS = _find_syncfs()


def flush_to_disk(directory: Path, descriptors: list[int]) -> None:
    """The files' data on disk. Linux's syncfs does it for a whole batch in one journal
    commit; an fsync per file costs one each (the fallback elsewhere)."""
    if not descriptors:
        return
    if _SYNCFS is not None:
        if _SYNCFS(descriptors[0]) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs: {os.strerror(error)}", str(directory))
        return
    for descriptor in descriptors:
        os.fsync(descriptor)


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
