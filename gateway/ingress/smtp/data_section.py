"""Reading an SMTP DATA section in large pieces instead of line by line.

aiosmtpd reads DATA one line at a time, in Python: a 20 KB message with an attachment is
some 300 awaits, and that loop was the largest single cost of a submission. Here the section
is read up to its end marker in pieces of up to `READ_LIMIT_BYTES`, and the per-line rules
run over the whole at C speed, with the same outcome as aiosmtpd's loop:

- only CRLF "." CRLF ends the section (a bare LF or CR never does: no SMTP smuggling);
- a line of more than `LINE_LIMIT_BYTES` octets with its CRLF is refused (500), as is a
  section of more than the size limit (552); whichever aiosmtpd's loop would reach first is
  named, and the rest is read and dropped, so the session continues;
- a leading dot is removed from every line (RFC 5321 4.5.2).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

END = b"\r\n.\r\n"
EMPTY_SECTION = b".\r\n"
# aiosmtpd's limit: 998 octets of text (RFC 5322 2.1.1), the CRLF, and one octet of slack.
LINE_LIMIT_BYTES = 1001
# aiosmtpd's reader has the same limit, but on the text before the CRLF: a longer line
# overruns the reader and is refused before its octets are counted against the size limit.
READER_LIMIT_BYTES = LINE_LIMIT_BYTES
# How much the reader buffers before it stops reading the socket (twice this) and the
# longest piece taken at once; also bounds a command line before its own limit applies.
READ_LIMIT_BYTES = 64 * 1024


class DataProblem(enum.Enum):
    NONE = enum.auto()
    LINE_TOO_LONG = enum.auto()
    TOO_MUCH = enum.auto()


@dataclass(frozen=True)
class DataSection:
    content: bytes  # dot-unstuffed, ending in CRLF unless empty; empty when refused
    problem: DataProblem = DataProblem.NONE


async def read_data_section(reader: asyncio.StreamReader, size_limit: int | None) -> DataSection:
    """Read up to and including the end marker, and nothing after it (a pipelined command
    stays in the reader)."""
    received = bytearray(await reader.readexactly(len(EMPTY_SECTION)))
    if received == EMPTY_SECTION:
        return DataSection(b"")
    problem = DataProblem.NONE
    while not received.endswith(END):
        # Search the buffer for the rest of a marker begun in what was read (all of it if
        # none was): a marker completing at the start of the buffer, or lying wholly in it,
        # contains that rest, and its first match never lies past the first marker.
        rest = END[_marker_begun(received) :]
        try:
            received += await reader.readuntil(rest)
        except asyncio.LimitOverrunError as error:
            # No match (or a long way off): what is consumed stops short of any.
            received += await reader.readexactly(error.consumed)
        if problem is DataProblem.NONE and size_limit and len(received) - 3 > size_limit:
            problem = _first_problem(received, size_limit)  # NONE: read on, and look again
        if problem is not DataProblem.NONE:
            del received[: -len(END)]  # drop what was read, keep enough to see the end
    if problem is not DataProblem.NONE:
        return DataSection(b"", problem)
    section = bytes(received[: -len(EMPTY_SECTION)])
    if size_limit and len(section) > size_limit:
        return DataSection(b"", _first_problem(received, size_limit))
    if _longest_line(section) > LINE_LIMIT_BYTES:
        return DataSection(b"", DataProblem.LINE_TOO_LONG)
    return DataSection(_unstuffed(section))


def _marker_begun(received: bytearray) -> int:
    """How much of the end marker `received` ends with (the longest start of it, not all)."""
    return next((n for n in range(len(END) - 1, 0, -1) if received.endswith(END[:n])), 0)


def _longest_line(section: bytes) -> int:
    """The longest line with its CRLF (only CRLF ends a line here, as it does for aiosmtpd)."""
    return max(map(len, section.split(b"\r\n"))) + 2


def _first_problem(received: bytearray, size_limit: int) -> DataProblem:
    """The refusal aiosmtpd's line loop reaches first in a section longer than the limit.

    The loop counts each line against the size limit and then checks its length, except
    that a line too long for its reader is refused before it is counted. NONE while the
    line still arriving decides it (it is at most `READER_LIMIT_BYTES` long).
    """
    # Only lines starting within the limit matter, and of the last of them only whether it
    # overruns the reader: the rest need not be copied and split.
    relevant = received[: size_limit + READER_LIMIT_BYTES + len(b"\r\n") + 1]
    *lines, arriving = relevant.split(b"\r\n")
    counted = 0
    for line in lines:
        if len(line) > READER_LIMIT_BYTES:
            return DataProblem.LINE_TOO_LONG
        counted += len(line) + 2
        if counted > size_limit:
            return DataProblem.TOO_MUCH
        if len(line) + 2 > LINE_LIMIT_BYTES:
            return DataProblem.LINE_TOO_LONG
    if len(arriving.removesuffix(b"\r")) > READER_LIMIT_BYTES:  # a CR may begin its CRLF
        return DataProblem.LINE_TOO_LONG
    return DataProblem.NONE


def _unstuffed(section: bytes) -> bytes:
    """Every line that starts with a dot loses it (RFC 5321 4.5.2)."""
    if section.startswith(b"."):
        section = section[1:]
    return section.replace(b"\r\n.", b"\r\n")
