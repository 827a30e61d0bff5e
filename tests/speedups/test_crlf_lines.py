"""Bodies written in one piece against the stdlib generator's line by line: the same bytes,
whatever the line endings."""

from __future__ import annotations

import io
from email.generator import BytesGenerator

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.parse import MIME_POLICY, parse_email
from gateway.speedups.crlf_lines import SPEEDUP, SpeedupBytesGenerator
from tests.speedups import switched

# 8-bit bytes reach the generator escaped (as surrogates), as a parsed body has them.
TEXT = st.lists(
    st.sampled_from(["\r\n", "\r", "\n", "\n\r", "a", " ", ".", "\udcc3\udca9", "\udcff"]),
    max_size=30,
).map("".join)


def written(generator_class: type[BytesGenerator], text: str, linesep: str) -> bytes:
    buffer = io.BytesIO()
    generator = generator_class(buffer, policy=MIME_POLICY.clone(linesep=linesep))
    generator._NL = linesep  # as flatten() sets it
    generator._write_lines(text)
    return buffer.getvalue()


@settings(max_examples=2000)
@given(text=TEXT, linesep=st.sampled_from(["\r\n", "\n"]))
def test_lines_are_written_as_the_stdlib_writes_them(text: str, linesep: str) -> None:
    with switched(SPEEDUP, True):
        ours = written(SpeedupBytesGenerator, text, linesep)
    assert ours == written(BytesGenerator, text, linesep)


@settings(max_examples=300, deadline=None)
@given(body=TEXT)
def test_a_whole_message_is_written_as_the_stdlib_writes_it(body: str) -> None:
    raw = ("From: katie@example.com\r\nSubject: hi\r\n\r\n" + body).encode(
        "utf-8", "surrogateescape"
    )
    message = parse_email(raw).mime

    def flattened(generator_class: type[BytesGenerator]) -> bytes:
        buffer = io.BytesIO()
        generator_class(buffer, policy=MIME_POLICY).flatten(message)
        return buffer.getvalue()

    with switched(SPEEDUP, True):
        ours = flattened(SpeedupBytesGenerator)
    assert ours == flattened(BytesGenerator)


def test_uninstalled_the_generator_is_the_stdlibs() -> None:
    with switched(SPEEDUP, False):
        assert "_write_lines" not in vars(SpeedupBytesGenerator)
