import asyncio
import socket

import pytest

from gateway.config.settings import EmailUpstreamConfig
from gateway.model import UpstreamPermanentError, UpstreamTemporaryError
from gateway.upstream.smtp import SmtpEmailUpstream
from tests.fakes.smtp_sink import HOST, SmtpSink, make_self_signed_cert

SENDER = "rep@corp.example"
RECIPIENT = "ada@example.com"
MESSAGE = b"From: rep@corp.example\r\nTo: ada@example.com\r\nSubject: hi\r\n\r\nHello\r\n.dot\r\n"
LOGIN = ("agent", "correct horse battery")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def make_upstream():
    """Build upstreams against a port and close every one of them after the test."""
    created: list[SmtpEmailUpstream] = []

    def make(port, tls_context=None, **settings):
        settings = {"starttls": False, "timeout_s": 5.0, **settings}
        config = EmailUpstreamConfig(kind="smtp", host=HOST, port=port, **settings)
        upstream = SmtpEmailUpstream(config, tls_context=tls_context)
        created.append(upstream)
        return upstream

    yield make
    for upstream in created:
        await upstream.close()


@pytest.fixture
async def sink():
    async with SmtpSink() as running:
        yield running


def numbered(n):
    return MESSAGE + b"message %d\r\n" % n


async def test_delivers_exact_bytes_and_envelope(sink, make_upstream):
    upstream = make_upstream(sink.port)

    message_id = await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    [received] = sink.accepted
    assert received.data == MESSAGE
    assert received.mail_from == SENDER
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.mail_options == ()
    assert message_id == received.queue_id


async def test_8bit_content_is_declared(sink, make_upstream):
    message = MESSAGE + "Grüße\r\n".encode()

    await make_upstream(sink.port).send_email(SENDER, RECIPIENT, message)

    [received] = sink.accepted
    assert received.data == message
    assert received.mail_options == ("BODY=8BITMIME",)


async def test_reply_without_queue_id_becomes_the_id(sink, make_upstream):
    sink.fail_next("data", 250, "2.0.0 Accepted for delivery")

    message_id = await make_upstream(sink.port).send_email(SENDER, RECIPIENT, MESSAGE)

    assert message_id == "2.0.0 Accepted for delivery"
    assert sink.accepted[0].data == MESSAGE


async def test_sequential_sends_reuse_one_connection(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.start()
    assert sink.connection_count == 0

    for n in range(10):
        await upstream.send_email(SENDER, RECIPIENT, numbered(n))

    assert [m.data for m in sink.accepted] == [numbered(n) for n in range(10)]
    assert sink.connection_count == 1


async def test_concurrent_sends_share_a_bounded_pool(sink, make_upstream):
    upstream = make_upstream(sink.port, pool_size=4)

    ids = await asyncio.gather(
        *(upstream.send_email(SENDER, RECIPIENT, numbered(n)) for n in range(50))
    )

    assert len(set(ids)) == 50
    assert sorted(m.data for m in sink.accepted) == sorted(numbered(n) for n in range(50))
    assert sink.connection_count == 4


@pytest.mark.parametrize(
    ("stage", "code", "error"),
    [
        ("mail", 553, UpstreamPermanentError),
        ("rcpt", 550, UpstreamPermanentError),
        ("data", 554, UpstreamPermanentError),
        ("rcpt", 450, UpstreamTemporaryError),
        ("data", 451, UpstreamTemporaryError),
    ],
)
async def test_refusal_maps_by_code_and_discards_the_connection(
    sink, make_upstream, stage, code, error
):
    upstream = make_upstream(sink.port)
    text = "4.7.1 policy says no" if code < 500 else "5.1.1 <ada@example.com>: no such user"
    sink.fail_next(stage, code, text)

    with pytest.raises(error) as raised:
        await upstream.send_email(SENDER, RECIPIENT, MESSAGE)
    await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    if error is UpstreamPermanentError:
        assert (raised.value.code, raised.value.text) == (code, text)
    else:
        assert f"{code} {text}" in str(raised.value)
    assert len(sink.accepted) == 1
    assert sink.connection_count == 2
    assert sink.open_connection_count == 1


async def test_stalled_message_is_recorded_before_it_is_accepted(sink, make_upstream):
    """Gateway tests rely on seeing a delivery in flight, e.g. to signal the gateway mid-DATA."""
    sink.stall_next("data", 0.2)
    sending = asyncio.create_task(make_upstream(sink.port).send_email(SENDER, RECIPIENT, MESSAGE))
    async with asyncio.timeout(5):
        while not sink.messages:
            await asyncio.sleep(0.01)

    assert not sink.messages[0].accepted
    await sending
    assert sink.messages[0].accepted


async def test_server_down_is_temporary(make_upstream):
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(UpstreamTemporaryError, match="connection setup"):
        await make_upstream(closed_port).send_email(SENDER, RECIPIENT, MESSAGE)


async def test_stall_beyond_timeout_is_temporary(sink, make_upstream):
    sink.stall_next("data", 30)

    with pytest.raises(UpstreamTemporaryError, match=r"timed out after 0\.5s during DATA"):
        await make_upstream(sink.port, timeout_s=0.5).send_email(SENDER, RECIPIENT, MESSAGE)


async def test_auth_over_starttls(tls_files, make_upstream):
    async with SmtpSink(tls=tls_files, auth=LOGIN) as secure_sink:
        upstream = make_upstream(
            secure_sink.port,
            tls_context=tls_files.client_context(),
            starttls=True,
            username=LOGIN[0],
            password=LOGIN[1],
        )
        await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    [received] = secure_sink.accepted
    assert (received.login, received.tls, received.data) == (LOGIN[0], True, MESSAGE)


async def test_rejected_login_is_temporary(tls_files, make_upstream):
    """A 535 says the gateway's settings are wrong, not the message: it must not bounce."""
    async with SmtpSink(tls=tls_files, auth=LOGIN) as secure_sink:
        upstream = make_upstream(
            secure_sink.port,
            tls_context=tls_files.client_context(),
            starttls=True,
            username=LOGIN[0],
            password="wrong password",
        )
        with pytest.raises(UpstreamTemporaryError, match="535"):
            await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    assert secure_sink.mail_commands == 0


async def test_untrusted_certificate_is_temporary(tls_files, make_upstream):
    async with SmtpSink(tls=tls_files, auth=LOGIN) as secure_sink:
        upstream = make_upstream(
            secure_sink.port, starttls=True, username=LOGIN[0], password=LOGIN[1]
        )
        with pytest.raises(UpstreamTemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    assert secure_sink.logins == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_missing_starttls_refuses_before_credentials(make_upstream):
    """The sink would accept the login in clear; the upstream must not offer it."""
    async with SmtpSink(auth=LOGIN) as clear_sink:
        upstream = make_upstream(
            clear_sink.port, starttls=True, username=LOGIN[0], password=LOGIN[1]
        )
        with pytest.raises(UpstreamTemporaryError, match="does not offer STARTTLS"):
            await upstream.send_email(SENDER, RECIPIENT, MESSAGE)

    assert clear_sink.logins == []
    assert clear_sink.mail_commands == 0


async def test_connection_closed_while_idle_is_replaced(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.send_email(SENDER, RECIPIENT, numbered(1))
    sink.drop_connections()

    await upstream.send_email(SENDER, RECIPIENT, numbered(2))

    assert [m.data for m in sink.messages] == [numbered(1), numbered(2)]
    assert sink.connection_count == 2


async def test_pooled_connection_lost_at_mail_is_retried_once(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.send_email(SENDER, RECIPIENT, numbered(1))
    sink.drop_next("mail")

    await upstream.send_email(SENDER, RECIPIENT, numbered(2))

    assert [m.data for m in sink.messages] == [numbered(1), numbered(2)]
    assert sink.mail_commands == 3
    assert sink.connection_count == 2


async def test_pooled_connection_closing_with_421_at_mail_is_retried(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.send_email(SENDER, RECIPIENT, numbered(1))
    sink.fail_next("mail", 421, "4.4.2 sink.test Error: timeout exceeded")

    await upstream.send_email(SENDER, RECIPIENT, numbered(2))

    assert [m.data for m in sink.messages] == [numbered(1), numbered(2)]
    assert sink.connection_count == 2


async def test_retry_at_mail_happens_only_once(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.send_email(SENDER, RECIPIENT, numbered(1))
    sink.drop_next("mail")
    sink.drop_next("mail")

    with pytest.raises(UpstreamTemporaryError, match="MAIL FROM"):
        await upstream.send_email(SENDER, RECIPIENT, numbered(2))

    assert sink.mail_commands == 3


async def test_fresh_connection_lost_at_mail_is_not_retried(sink, make_upstream):
    sink.drop_next("mail")

    with pytest.raises(UpstreamTemporaryError, match="MAIL FROM"):
        await make_upstream(sink.port).send_email(SENDER, RECIPIENT, MESSAGE)

    assert sink.mail_commands == 1


async def test_connection_lost_after_data_is_not_retried(sink, make_upstream):
    upstream = make_upstream(sink.port)
    await upstream.send_email(SENDER, RECIPIENT, numbered(1))
    sink.drop_next("data")

    with pytest.raises(UpstreamTemporaryError, match="DATA"):
        await upstream.send_email(SENDER, RECIPIENT, numbered(2))

    assert [m.data for m in sink.messages] == [numbered(1), numbered(2)]
    assert [m.accepted for m in sink.messages] == [True, False]
    assert sink.mail_commands == 2


async def test_unencodable_address_is_permanent(sink, make_upstream):
    with pytest.raises(UpstreamPermanentError) as raised:
        await make_upstream(sink.port).send_email(SENDER, "jürgen@example.com", MESSAGE)

    assert raised.value.code == 553
    assert sink.messages == []


UTF8_FROM = "From: Jürgen <jürgen@bücher.example>\r\nTo: ada@example.com\r\n\r\nHi\r\n".encode()


async def test_utf8_left_in_the_header_is_sent_with_smtputf8_where_offered(make_upstream):
    async with SmtpSink(smtputf8=True) as sink:
        await make_upstream(sink.port).send_email("jürgen@bücher.example", RECIPIENT, UTF8_FROM)
    [received] = sink.accepted
    assert "SMTPUTF8" in received.mail_options
    assert received.mail_from == "jürgen@bücher.example"
    assert received.data == UTF8_FROM


async def test_utf8_without_smtputf8_upstream_is_permanent_and_sends_nothing(
    sink, make_upstream
):
    upstream = make_upstream(sink.port)
    with pytest.raises(UpstreamPermanentError) as raised:
        await upstream.send_email(SENDER, RECIPIENT, UTF8_FROM)
    assert raised.value.code == 553
    assert "SMTPUTF8" in raised.value.text
    assert sink.messages == []
    await upstream.send_email(SENDER, RECIPIENT, MESSAGE)
    assert len(sink.accepted) == 1, "the connection stays usable"


async def test_close_quits_pooled_connections(sink, make_upstream):
    upstream = make_upstream(sink.port, pool_size=2)
    await asyncio.gather(*(upstream.send_email(SENDER, RECIPIENT, MESSAGE) for _ in range(2)))

    await upstream.close()

    assert sink.quit_count == 2


@pytest.mark.parametrize(
    ("stage", "maybe_delivered"), [("rcpt", False), ("data", True)], ids=["at RCPT", "at DATA"]
)
async def test_close_cuts_off_an_exchange_in_flight_as_a_lost_connection(
    sink, make_upstream, stage, maybe_delivered
):
    """Shutdown after the drain deadline: a send still waiting on the provider fails at
    once, saying whether the content had gone out; nothing is sent after the close."""
    upstream = make_upstream(sink.port)
    sink.stall_next(stage, 30)
    sending = asyncio.create_task(upstream.send_email(SENDER, RECIPIENT, MESSAGE))
    while sink.mail_commands == 0 or (stage == "data" and not sink.messages):
        await asyncio.sleep(0.01)

    await upstream.close()

    with pytest.raises(UpstreamTemporaryError) as raised:
        await asyncio.wait_for(sending, 2)  # well within the upstream's timeout_s (5 s)
    assert raised.value.maybe_delivered is maybe_delivered
    with pytest.raises(UpstreamTemporaryError, match="stopping"):
        await upstream.send_email(SENDER, RECIPIENT, MESSAGE)
    assert sink.mail_commands == 1
