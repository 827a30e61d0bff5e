"""A command's output and its failures: exit 74 (sysexits.h EX_IOERR) when the output could
not be written, never Python's own report of it (a traceback, or "Exception ignored" at
exit), whether the failure shows at a write or at the final flush, and whether stderr
still works."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from gateway.cli.common import EXIT_IO

HOST_IO_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
"""Failed writes that are the host's trouble (a full disk, a quota, a device), not ours."""


class OutputLost(Exception):
    """stdout would not take a write: the reader went away (`| head`), or the disk is full."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _GuardedStdout:
    """stdout, its failed writes told apart from every other OSError (a broken pipe to an
    upstream or a database is a fault of ours, not lost output)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputLost(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputLost(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def guarded_output() -> Iterator[None]:
    """While open, stdout is guarded; a stream closed at start (`>&-`) points nowhere."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
    plain = sys.stdout
    sys.stdout = _GuardedStdout(plain)
    try:
        yield
    finally:
        sys.stdout = plain


def host_io_error(exc: OSError) -> bool:
    """A file the host could not write or read (a full disk, a quota, a device)."""
    return exc.errno in HOST_IO_ERRORS and not isinstance(exc, TimeoutError | ConnectionError)


def say(text: str) -> None:
    """One line on stderr; a stderr that will not take it points nowhere, so the status is
    what tells (and Python's report at exit does not)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        point_nowhere(sys.stderr)


def output_lost(exc: OSError) -> int:
    """One line for a full disk, none for a reader gone; stdout then points nowhere, so
    what it still buffers does not fail again at exit."""
    if not isinstance(exc, BrokenPipeError):
        say(f"error: {exc}")
    point_nowhere(sys.stdout)
    return EXIT_IO


def point_nowhere(stream: TextIO) -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except OSError:  # no descriptor left to point it with: leave without Python's report
        os._exit(EXIT_IO)
