"""The SMTP upstream's stand-ins for aiosmtplib's DATA transforms give aiosmtplib's bytes."""

import pytest
from aiosmtplib import protocol
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.settings import EmailUpstreamConfig
from gateway.speedups import dot_stuffing
from gateway.upstream.smtp import SmtpEmailUpstream
from tests.fakes.smtp_sink import HOST, SmtpSink
from tests.speedups import switched

# Line-ending and period bytes are drawn often, so the cases the transforms treat specially
# (lone CR, lone LF, CR before LF, a period after a line ending or at the start) are common.
MESSAGE_BYTES = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\x00", b"\xff", b"ab\r\n"]),
    max_size=40,
).map(b"".join)


def test_installed_in_aiosmtplib_and_removed_again():
    with switched(dot_stuffing.SPEEDUP, True):
        dot_stuffing.SPEEDUP.install()  # twice: idempotent
        assert protocol.normalize_message_line_endings is dot_stuffing.line_endings_as_crlf
        assert isinstance(protocol.PERIOD_REGEX, dot_stuffing.LineStartPeriods)
        dot_stuffing.SPEEDUP.uninstall()
        assert protocol.normalize_message_line_endings is dot_stuffing.AIOSMTPLIB_LINE_ENDINGS
        assert protocol.PERIOD_REGEX is dot_stuffing.AIOSMTPLIB_PERIODS


@settings(max_examples=3000, deadline=None)
@given(MESSAGE_BYTES)
def test_line_endings_match_aiosmtplib(message):
    assert dot_stuffing.line_endings_as_crlf(message) == dot_stuffing.AIOSMTPLIB_LINE_ENDINGS(
        message
    )


@settings(max_examples=3000, deadline=None)
@given(MESSAGE_BYTES)
def test_period_stuffing_matches_aiosmtplib(message):
    stand_in = dot_stuffing.LineStartPeriods()
    assert stand_in.sub(b"..", message) == dot_stuffing.AIOSMTPLIB_PERIODS.sub(b"..", message)


TRANSFORMS = {
    "line endings": dot_stuffing.line_endings_as_crlf,
    "periods": lambda message: dot_stuffing.LineStartPeriods().sub(b"..", message),
}


@pytest.mark.parametrize(
    ("transform", "message", "expected"),
    [
        ("line endings", b"", b"\r\n"),
        ("line endings", b"a\nb\rc\r\n", b"a\r\nb\r\nc\r\n"),
        ("line endings", b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
        ("line endings", b"done\r\n", b"done\r\n"),
        ("periods", b".", b".."),
        ("periods", b".\r\n.\r\n", b"..\r\n..\r\n"),
        ("periods", b"a.b\r\n..c", b"a.b\r\n...c"),
        ("periods", b"\r.x", b"\r.x"),
    ],
)
def test_transform_table(transform, message, expected):
    assert TRANSFORMS[transform](message) == expected


def test_other_substitutions_go_to_the_pattern():
    stand_in = dot_stuffing.LineStartPeriods()
    assert stand_in.sub(b"!", b".a\n.b") == b"!a\n!b"
    assert stand_in.sub(b"..", b".a\n.b", 1) == b"..a\n.b"


def test_skipped_over_a_different_pattern(monkeypatch):
    monkeypatch.setattr(protocol, "LINE_ENDINGS_REGEX", protocol.re.compile(rb"\n"))
    assert "line-ending pattern" in dot_stuffing.SPEEDUP.skip_reason()


@pytest.mark.parametrize("on", [True, False], ids=["speedup", "aiosmtplib"])
async def test_end_of_data_lookalikes_arrive_as_sent(on):
    """Periods at line starts, a bare `.` line and lone line endings cross a real socket to
    aiosmtpd and are received as the client meant them, not as an early end of DATA."""
    message = b".first\r\n.\r\nmiddle\n.\nlone\rend\r\n..two\r\n"
    with switched(dot_stuffing.SPEEDUP, on):
        async with SmtpSink() as sink:
            config = EmailUpstreamConfig(
                kind="smtp", host=HOST, port=sink.port, starttls=False, timeout_s=5.0
            )
            upstream = SmtpEmailUpstream(config)
            try:
                await upstream.send_email("rep@corp.example", "ada@example.com", message)
            finally:
                await upstream.close()
    [received] = sink.accepted
    assert received.data == dot_stuffing.AIOSMTPLIB_LINE_ENDINGS(message)
