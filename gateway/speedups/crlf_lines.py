"""Message bodies written in one piece when their line endings already are CRLF.

The stdlib generator writes every body line on its own to rewrite its line ending, two
writes per line: for a large attachment that is most of the cost of writing a message. A
body whose line endings all are CRLF (as SMTP delivers them), written by a generator whose
line ending is CRLF, comes out as the same bytes written at once. The stand-in replaces the
generator's private `_write_lines` and reads its private `_NL`, so it is installed only on
the Python version it was checked against and while that method's source is the one it
was checked against; and only for `SpeedupBytesGenerator`, the gateway's own generator.
"""

from __future__ import annotations

import email.generator
from email.generator import BytesGenerator, Generator

from gateway.speedups.base import PYTHON, Patch, Speedup, source_digest

STDLIB_WRITE_LINES = Generator._write_lines
# Python 3.11's, which splits the text on NLCRE, this pattern.
STDLIB_WRITE_LINES_SHA256 = "507fbe2e042e8d804ae2f075ffda66bcad30a70dea187de9dd1e6ec002940d9a"
STDLIB_LINE_BREAKS = r"\r\n|\r|\n"


class SpeedupBytesGenerator(BytesGenerator):
    """`BytesGenerator`, writing CRLF bodies in one piece while this speedup is installed."""


def write_lines(generator: Generator, lines: str) -> None:
    """`Generator._write_lines` for a text whose line endings are the generator's already."""
    if generator._NL == "\r\n" and lines.count("\n") == lines.count("\r") == lines.count("\r\n"):
        generator.write(lines)
        return
    STDLIB_WRITE_LINES(generator, lines)


def _library_changed() -> str | None:
    if source_digest(STDLIB_WRITE_LINES) != STDLIB_WRITE_LINES_SHA256:
        return "email.generator.Generator._write_lines is not the code stood in for"
    if email.generator.NLCRE.pattern != STDLIB_LINE_BREAKS:
        return "email.generator.NLCRE is not the pattern stood in for"
    return None


SPEEDUP = Speedup(
    name="crlf_lines",
    checked_versions={PYTHON: ("3.11",)},
    patches=(Patch(SpeedupBytesGenerator, "_write_lines", write_lines),),
    library_changed=_library_changed,
)
