"""aiosmtpd's DATA command reading the section in large pieces instead of line by line.

aiosmtpd reads DATA one line at a time, in Python: a 20 KB message with an attachment is
some 300 awaits, and that loop was the largest single cost of a submission. Here the section
is read up to its end marker in pieces of up to `READ_LIMIT_BYTES`, and the per-line rules
run over the whole at C speed, with the same outcome as aiosmtpd's loop:

- only CRLF "." CRLF ends the section (a bare LF or CR never does: no SMTP smuggling);
- a line of more than `LINE_LIMIT_BYTES` octets with its CRLF is refused (500), as is a
  section of more than the size limit (552); whichever aiosmtpd's loop would reach first is
  named, and the rest is read and dropped, so the session continues;
- a leading dot is removed from every line (RFC 5321 4.5.2).

The command around the reader is aiosmtpd's own, written with its private members
(`_reader`, `_writer`, `_call_handler_hook`, `_set_post_data_state`, and the reader's
`_limit`), and the reader copies its loop's limits, whose outcome aiosmtpd changed within
1.4 (only CRLF "." CRLF ends DATA since 1.4.5). So it replaces `SMTP.smtp_DATA` only on the
aiosmtpd release and Python version it was checked against, and while aiosmtpd's
`smtp_DATA` is the code it was checked against.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, SMTP, syntax

from gateway.speedups.base import PYTHON, Patch, Speedup, source_digest

END = b"\r\n.\r\n"
EMPTY_SECTION = b".\r\n"
# aiosmtpd's limit: 998 octets of text (RFC 5322 2.1.1), the CRLF, and one octet of slack.
LINE_LIMIT_BYTES = 1001
# aiosmtpd's reader has the same limit, but on the text before the CRLF: a longer line
# overruns the reader and is refused before its octets are counted against the size limit.
READER_LIMIT_BYTES = LINE_LIMIT_BYTES
# The reader's limit while it reads a section: how much it buffers before it stops reading
# the socket (twice this), and the longest piece taken at once.
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


AIOSMTPD_DATA = SMTP.smtp_DATA
# aiosmtpd 1.4.6's SMTP.smtp_DATA, whose loop the reader reproduces.
AIOSMTPD_DATA_SHA256 = "3a33f30d3fd6d02f39c7d78a08288bffea9170525b62e2161568041ae7e018df"
AIOSMTPD_REFUSALS = {
    DataProblem.TOO_MUCH: "552 Error: Too much mail data",
    DataProblem.LINE_TOO_LONG: "500 Line too long (see RFC5321 4.5.3.1.6)",
}
log = logging.getLogger("mail.log")  # aiosmtpd's, as its own DATA loop logs


@syntax("DATA")
async def smtp_DATA(server: SMTP, arg: str) -> None:
    """aiosmtpd's `SMTP.smtp_DATA` with the section read by `read_data_section`, for a
    handler with `handle_DATA` taking the content as bytes (the gateway's); aiosmtpd's own
    for any other."""
    if server._decode_data or "DATA" not in server._handle_hooks:
        await AIOSMTPD_DATA(server, arg)
        return
    if await server.check_helo_needed() or await server.check_auth_needed("DATA"):
        return
    assert server.envelope is not None
    if not server.envelope.rcpt_tos:
        await server.push("503 Error: need RCPT command")
        return
    if arg:
        await server.push("501 Syntax: DATA")
        return
    await server.push("354 End data with <CR><LF>.<CR><LF>")
    reader = server._reader
    # aiosmtpd's reader is limited to a line's length; a section is read in larger pieces.
    line_limit, reader._limit = reader._limit, READ_LIMIT_BYTES
    try:
        section = await read_data_section(reader, server.data_size_limit)
    except (asyncio.CancelledError, asyncio.IncompleteReadError):
        log.info("Connection lost during DATA")
        server._writer.close()
        raise
    finally:
        reader._limit = line_limit
    if section.problem is not DataProblem.NONE:
        await server.push(AIOSMTPD_REFUSALS[section.problem])
        server._set_post_data_state()
        return
    server.envelope.content = server.envelope.original_content = section.content
    status = await server._call_handler_hook("DATA")
    server._set_post_data_state()
    await server.push("250 OK" if status is MISSING else status)


def _library_changed() -> str | None:
    if source_digest(AIOSMTPD_DATA) != AIOSMTPD_DATA_SHA256:
        return "aiosmtpd's SMTP.smtp_DATA is not the code stood in for"
    if SMTP.line_length_limit != LINE_LIMIT_BYTES:
        return "aiosmtpd's line_length_limit is not the limit the reader applies"
    return None


SPEEDUP = Speedup(
    name="data_section",
    # Python for asyncio's StreamReader, whose limit (`_limit`) is raised while reading.
    checked_versions={"aiosmtpd": ("1.4.6",), PYTHON: ("3.11",)},
    patches=(Patch(SMTP, "smtp_DATA", smtp_DATA),),
    library_changed=_library_changed,
)
