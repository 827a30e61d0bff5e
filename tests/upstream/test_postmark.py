"""The Postmark REST upstream: MIME to Postmark's JSON, and the API calls against a fake."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

from gateway.config.settings import EmailUpstreamConfig
from gateway.mail.parse import parse_email
from gateway.model import UpstreamTemporaryError
from gateway.upstream.postmark import (
    PostmarkEmailUpstream,
    PostmarkRefusal,
    mime_to_postmark,
)
from tests.fakes.postmark import SERVER_TOKEN, FakePostmark, suppression_entry
from tests.rewrite.test_properties import mutated_messages, raw_message, trees

RECIPIENT = "jane@customer.test"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) + b"\n%%EOF\n"


def accepted(raw: bytes) -> EmailMessage:
    """The parsed message, as the gateway holds it after parse_email found no problem."""
    content = parse_email(raw.replace(b"\n", b"\r\n"))
    assert content.problems == ()
    assert content.mime is not None
    return content.mime


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


def decoded(attachment: dict[str, str]) -> bytes:
    return base64.b64decode(attachment["Content"])


PLAIN = b"""From: =?utf-8?q?J=C3=B6rg_Sales?= <jorg@example.com>
To: Jane <jane@customer.test>, other@customer.test
Cc: boss@customer.test
Bcc: hidden@customer.test
Reply-To: replies@example.com
Subject: =?utf-8?q?Quick_question_=E2=80=93_caf=C3=A9?=
Date: Tue, 02 Jun 2026 12:00:00 -0400
Message-ID: <abc@example.com>
In-Reply-To: <earlier@customer.test>
References: <first@customer.test> <earlier@customer.test>
MIME-Version: 1.0
List-Unsubscribe: <https://gw.example.com/u/TOKEN>, <mailto:unsubscribe@gw.example.com>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
X-Campaign: =?utf-8?q?Fr=C3=BChling?=
X-Campaign: second
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello Jane, caf=C3=A9?
"""


def test_plain_message_becomes_the_postmark_request_for_one_recipient() -> None:
    request = mime_to_postmark(accepted(PLAIN), RECIPIENT)

    assert request == {
        "From": "Jörg Sales <jorg@example.com>",
        "To": RECIPIENT,
        "Subject": "Quick question \u2013 café",
        "ReplyTo": "replies@example.com",
        "TextBody": "Hello Jane, café?\r\n",
        "Headers": [
            {"Name": "In-Reply-To", "Value": "<earlier@customer.test>"},
            {"Name": "References", "Value": "<first@customer.test> <earlier@customer.test>"},
            {
                "Name": "List-Unsubscribe",
                "Value": "<https://gw.example.com/u/TOKEN>, <mailto:unsubscribe@gw.example.com>",
            },
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            {"Name": "X-Campaign", "Value": "Frühling"},
            {"Name": "X-Campaign", "Value": "second"},
        ],
    }
    assert "Cc" not in request and "Bcc" not in request
    assert "boss@customer.test" not in json.dumps(request)


ALTERNATIVE = b"""From: sales@example.com
Subject: Hi
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=us-ascii

Plain words.
--alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

""" + b64("<p>HTML w\u00f6rds</p>".encode()).encode() + b"""
--alt--
"""


def test_alternative_gives_text_and_html_bodies() -> None:
    request = mime_to_postmark(accepted(ALTERNATIVE), RECIPIENT)

    assert request["TextBody"] == "Plain words."
    assert request["HtmlBody"] == "<p>HTML w\u00f6rds</p>"
    assert "Attachments" not in request and "Headers" not in request


MIXED = b"""From: sales@example.com
Subject: Brochure
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

See the logo.
--alt
Content-Type: text/html; charset=utf-8

<p><img src="cid:logo.png@example.com"></p>
--alt--
--rel
Content-Type: image/png; name="logo.png"
Content-Disposition: inline; filename="logo.png"
Content-ID: <logo.png@example.com>
Content-Transfer-Encoding: base64

""" + b64(PNG).encode() + b"""
--rel--
--mix
Content-Type: application/pdf; name="brochure.pdf"
Content-Disposition: attachment; filename="brochure.pdf"
Content-ID: <not-inline@example.com>
Content-Transfer-Encoding: base64

""" + b64(PDF).encode() + b"""
--mix
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment; filename="notes.txt"

Attached notes, not the body.
--mix
Content-Type: text/plain; charset=utf-8

A second inline text part.
--mix--
"""


def test_mixed_message_keeps_inline_images_and_attachments_byte_for_byte() -> None:
    request = mime_to_postmark(accepted(MIXED), RECIPIENT)

    assert request["TextBody"] == "See the logo."
    assert request["HtmlBody"] == '<p><img src="cid:logo.png@example.com"></p>'
    logo, brochure, notes, second_text = request["Attachments"]
    assert logo == {
        "Name": "logo.png",
        "Content": base64.b64encode(PNG).decode(),
        "ContentType": "image/png",
        "ContentID": "cid:logo.png@example.com",
    }
    assert decoded(logo) == PNG
    assert brochure["Name"] == "brochure.pdf"
    assert brochure["ContentType"] == "application/pdf"
    assert decoded(brochure) == PDF
    assert "ContentID" not in brochure  # an attachment, not shown inline
    assert (notes["Name"], decoded(notes)) == ("notes.txt", b"Attached notes, not the body.")
    assert second_text["Name"] == "part4.txt"  # Postmark requires a name
    assert decoded(second_text) == b"A second inline text part."


NON_UTF8 = (
    b"From: =?iso-8859-1?q?Andr=E9?= <andre@example.com>\n"
    b"Subject: =?iso-8859-1?q?R=E9sum=E9?=\n"
    b'Content-Type: multipart/alternative; boundary="alt"\n'
    b"\n"
    b"--alt\n"
    b"Content-Type: text/plain; charset=iso-8859-1\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Gr\xfc\xdfe, caf\xe9\n"
    b"--alt\n"
    b"Content-Type: text/html; charset=shift_jis\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + b64("<p>こんにちは</p>".encode("shift_jis")).encode() + b"--alt--\n"
)


def test_bodies_are_decoded_with_their_own_charsets() -> None:
    request = mime_to_postmark(accepted(NON_UTF8), RECIPIENT)

    assert request["From"] == "André <andre@example.com>"
    assert request["Subject"] == "Résumé"
    assert request["TextBody"] == "Grüße, café"
    assert request["HtmlBody"] == "<p>こんにちは</p>"


X_PM = b"""From: sales@example.com
Subject: Tagged
X-PM-Tag: spring-outreach
X-PM-Metadata-client-id: 42
X-PM-Metadata-Campaign: =?utf-8?q?Fr=C3=BChling?=
X-PM-Message-Stream: broadcast
X-PM-TrackOpens: TRUE
X-PM-TrackLinks: HtmlAndText
X-PM-KeepID: true
X-Mailer: agent/1.0
Content-Type: text/plain

Hi.
"""


def test_postmark_smtp_headers_become_api_fields() -> None:
    request = mime_to_postmark(accepted(X_PM), RECIPIENT)

    assert request["Tag"] == "spring-outreach"
    assert request["Metadata"] == {"client-id": "42", "Campaign": "Frühling"}
    assert request["MessageStream"] == "broadcast"
    assert request["TrackOpens"] is True
    assert request["TrackLinks"] == "HtmlAndText"
    assert request["Headers"] == [{"Name": "X-Mailer", "Value": "agent/1.0"}]


def test_track_opens_false_is_kept_and_nonsense_is_dropped() -> None:
    off = X_PM.replace(b"X-PM-TrackOpens: TRUE", b"X-PM-TrackOpens: false")
    assert mime_to_postmark(accepted(off), RECIPIENT)["TrackOpens"] is False
    nonsense = X_PM.replace(b"X-PM-TrackOpens: TRUE", b"X-PM-TrackOpens: maybe")
    assert "TrackOpens" not in mime_to_postmark(accepted(nonsense), RECIPIENT)


FORWARDED = b"""From: sales@example.com
Subject: Fwd: the thread
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain

See below.
--mix
Content-Type: message/rfc822

From: old@partner.test
Subject: earlier
Content-Type: text/plain

Old text that must stay inside the attachment.
--mix
Content-Type: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256;
 boundary="sig"

--sig
Content-Type: text/html

<p>Signed words.</p>
--sig
Content-Type: application/pgp-signature

SIG
--sig--
--mix--
"""


def test_attached_messages_and_signed_entities_are_attachments_with_their_bytes() -> None:
    request = mime_to_postmark(accepted(FORWARDED), RECIPIENT)

    assert request["TextBody"] == "See below."
    assert "HtmlBody" not in request  # the signed HTML is not opened
    message, signed = request["Attachments"]
    assert message["Name"] == "part1.eml"
    assert message["ContentType"] == "message/rfc822"
    assert decoded(message) == (
        b"From: old@partner.test\r\nSubject: earlier\r\nContent-Type: text/plain\r\n\r\n"
        b"Old text that must stay inside the attachment."  # the CRLF before "--mix" is
    )  # part of the boundary
    assert signed["ContentType"] == (
        'multipart/signed; protocol="application/pgp-signature"; micalg="pgp-sha256"; '
        'boundary="sig"'
    )
    assert decoded(signed).startswith(b"--sig\r\nContent-Type: text/html\r\n\r\n<p>Signed")
    assert decoded(signed).rstrip(b"\r\n").endswith(b"SIG\r\n--sig--")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_messages())
def test_any_accepted_message_converts_to_utf8_json(raw: bytes) -> None:
    content = parse_email(raw)
    if content.problems:
        return
    request = mime_to_postmark(content.mime, RECIPIENT)
    assert request["To"] == RECIPIENT
    json.dumps(request, ensure_ascii=False).encode("utf-8")  # no escaped bytes left over


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_named_attachments_arrive_byte_identical(tree) -> None:
    message = accepted(raw_message(tree))
    request = mime_to_postmark(message, RECIPIENT)
    sent = {a["Name"]: decoded(a) for a in request.get("Attachments", [])}
    for part in message.walk():
        if part.get_filename():
            assert sent[part.get_filename()] == part.get_payload(decode=True)


# --- the API, against the fake ---------------------------------------------------------


def config(postmark: FakePostmark, **overrides: object) -> EmailUpstreamConfig:
    values: dict[str, object] = {
        "kind": "postmark", "server_token": SERVER_TOKEN, "base_url": postmark.url,
        "timeout_s": 5.0,
    }
    return EmailUpstreamConfig(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def postmark() -> AsyncIterator[FakePostmark]:
    async with FakePostmark() as fake:
        yield fake


@pytest.fixture
async def upstream(postmark: FakePostmark) -> AsyncIterator[PostmarkEmailUpstream]:
    upstream = PostmarkEmailUpstream(config(postmark))
    await upstream.start()
    yield upstream
    await upstream.close()


def raw(message: bytes) -> bytes:
    return message.replace(b"\n", b"\r\n")


async def test_send_email_posts_the_converted_message_with_the_server_token(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    message_id = await upstream.send_email("bounces@example.com", RECIPIENT, raw(PLAIN))

    assert message_id == "00000000-0000-4000-8000-000000000001"
    [request] = postmark.requests
    assert (request.method, request.path) == ("POST", "/email")
    assert request.headers["X-Postmark-Server-Token"] == SERVER_TOKEN
    assert request.headers["Accept"] == "application/json"
    assert request.json == mime_to_postmark(accepted(PLAIN), RECIPIENT)


async def test_configured_stream_applies_unless_the_message_names_one(
    postmark: FakePostmark,
) -> None:
    upstream = PostmarkEmailUpstream(config(postmark, message_stream="outreach"))
    await upstream.start()
    try:
        await upstream.send_email("", RECIPIENT, raw(PLAIN))
        await upstream.send_email("", RECIPIENT, raw(X_PM))
    finally:
        await upstream.close()
    assert [r.json["MessageStream"] for r in postmark.requests] == ["outreach", "broadcast"]


async def test_inactive_recipient_is_a_refusal_with_postmarks_document(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    document = {
        "ErrorCode": 406,
        "Message": "You tried to send to recipient(s) that have been marked as inactive.",
    }
    postmark.answer_next(422, document)

    with pytest.raises(PostmarkRefusal) as refused:
        await upstream.send_email("", RECIPIENT, raw(PLAIN))

    assert (refused.value.status, refused.value.code) == (422, 406)
    assert refused.value.recipient_inactive
    assert refused.value.document == document


async def test_other_refusals_are_permanent_but_not_inactive(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.answer_next(422, {"ErrorCode": 300, "Message": "Invalid email request"})
    with pytest.raises(PostmarkRefusal) as refused:
        await upstream.send_email("", RECIPIENT, raw(PLAIN))
    assert refused.value.code == 300
    assert not refused.value.recipient_inactive


async def test_wrong_token_is_postmarks_401(postmark: FakePostmark) -> None:
    upstream = PostmarkEmailUpstream(config(postmark, server_token="wrong"))
    await upstream.start()
    try:
        with pytest.raises(PostmarkRefusal) as refused:
            await upstream.send_email("", RECIPIENT, raw(PLAIN))
    finally:
        await upstream.close()
    assert (refused.value.status, refused.value.code) == (401, 10)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"ErrorCode": 500, "Message": "Internal Server Error"}),
        (503, "<html>Service Unavailable</html>"),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}),
        (400, "<html>Bad Request</html>"),
    ],
)
async def test_outages_and_unreadable_answers_are_temporary(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream, status: int, body: object
) -> None:
    postmark.answer_next(status, body)  # type: ignore[arg-type]
    with pytest.raises(UpstreamTemporaryError) as failed:
        await upstream.send_email("", RECIPIENT, raw(PLAIN))
    assert not failed.value.maybe_delivered
    assert len(postmark.requests) == 1  # not retried


async def test_accepted_but_unreadable_answer_may_have_delivered(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.answer_next(200, "<html>OK</html>")
    with pytest.raises(UpstreamTemporaryError) as failed:
        await upstream.send_email("", RECIPIENT, raw(PLAIN))
    assert failed.value.maybe_delivered


async def test_stall_after_the_request_went_out_may_have_delivered(
    postmark: FakePostmark,
) -> None:
    upstream = PostmarkEmailUpstream(config(postmark, timeout_s=0.2))
    await upstream.start()
    postmark.stall_next()
    try:
        with pytest.raises(UpstreamTemporaryError) as failed:
            await upstream.send_email("", RECIPIENT, raw(PLAIN))
    finally:
        await upstream.close()
    assert failed.value.maybe_delivered
    assert [r.path for r in postmark.requests] == ["/email"]  # sent once, never retried


async def test_unreachable_postmark_is_temporary_and_not_delivered() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the upstream connects
    upstream = PostmarkEmailUpstream(
        EmailUpstreamConfig(kind="postmark", server_token="t", base_url=f"http://127.0.0.1:{port}")
    )
    await upstream.start()
    try:
        with pytest.raises(UpstreamTemporaryError) as failed:
            await upstream.send_email("", RECIPIENT, raw(PLAIN))
    finally:
        await upstream.close()
    assert not failed.value.maybe_delivered


async def test_send_template_replaces_the_recipients(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.add_template(1234, alias="welcome", html_body="<p>{{name}}</p>")
    request = {
        "From": "sales@example.com",
        "To": "a@customer.test, b@customer.test",
        "Cc": "boss@customer.test",
        "Bcc": "hidden@customer.test",
        "TemplateAlias": "welcome",
        "TemplateModel": {"name": "Jane"},
        "Tag": "welcome",
    }

    message_id = await upstream.send_template(RECIPIENT, request)

    assert message_id == "00000000-0000-4000-8000-000000000001"
    [sent] = postmark.requests_to("/email/withTemplate")
    assert sent.json == {
        "From": "sales@example.com",
        "To": RECIPIENT,
        "TemplateAlias": "welcome",
        "TemplateModel": {"name": "Jane"},
        "Tag": "welcome",
    }
    assert request["To"] == "a@customer.test, b@customer.test"  # the caller's copy is intact


async def test_send_template_with_unknown_template_is_refused(
    upstream: PostmarkEmailUpstream,
) -> None:
    with pytest.raises(PostmarkRefusal) as refused:
        await upstream.send_template(RECIPIENT, {"From": "s@example.com", "TemplateId": 9})
    assert refused.value.code == 1101


async def test_template_uses_finds_mustachio_references(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.add_template(
        1, alias="footered",
        html_body="<p>Hi {{ name }}</p>{{{  compliance_footer_html }}}",
        text_body="Hi {{name}}\n{{compliance_footer_text}}",
    )
    postmark.add_template(2, html_body="<p>Hi {{name}}</p>", text_body="compliance_footer_text")

    assert await upstream.template_uses(1, ["compliance_footer_html", "compliance_footer_text"])
    assert await upstream.template_uses("footered", ["name"])
    assert await upstream.template_uses(1, [])
    assert not await upstream.template_uses(2, ["compliance_footer_text"])
    assert not await upstream.template_uses(1, ["compliance_footer"])  # whole names only
    assert not await upstream.template_uses(1, ["compliance_footer_html", "missing"])


async def test_template_uses_counts_the_layout_the_template_is_wrapped_in(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.add_template(
        10, alias="brand", template_type="Layout",
        html_body="<body>{{{@content}}}<footer>{{{ pm:unsubscribe }}}</footer></body>",
    )
    postmark.add_template(11, html_body="<p>Offer</p>", layout="brand")

    assert await upstream.template_uses(11, ["pm:unsubscribe"])
    assert [r.path for r in postmark.requests] == ["/templates/11", "/templates/brand"]


FOOTER = "{{{compliance_footer_html}}}"
FOOTER_PLACEMENTS = [
    ("normal placement", f"<p>Hi</p>{FOOTER}", True),
    ("in an attribute (a link's href)", "<a href='{{{compliance_footer_html}}}'>x</a>", True),
    ("after a closed comment", f"<!-- note --><p>Hi</p>{FOOTER}", True),
    ("after a comment closed by --!>", f"<!-- note --!>{FOOTER}", True),
    ("in a comment", f"<p>Hi</p><!-- {FOOTER} -->", False),
    ("in a comment before <html>", f"<!-- {FOOTER} --><html><body>Hi</body></html>", False),
    ("in a conditional comment", f"<!--[if mso]><p>{FOOTER}</p><![endif]-->", False),
    ("in a comment never closed", f"<p>Hi</p><!-- {FOOTER}", False),
    ("in a bogus comment", f"<? {FOOTER} ?>", False),
    ("splitting a comment end in two", f"<!-- note --{FOOTER}>", False),
    ("astride a comment end", "<!-- {{{compliance_footer_html -->}}}", False),
    ("split by a comment", "{{{compliance_foot<!-- -->er_html}}}", False),
    ("after a comment end only a tag writes", f"<!-- {{{{! -->}}}} {FOOTER}", False),
    ("in <template>", f"<template>{FOOTER}</template>", False),
]


@pytest.mark.parametrize(
    ("html", "shown"), [(h, s) for _, h, s in FOOTER_PLACEMENTS],
    ids=[name for name, _, _ in FOOTER_PLACEMENTS],
)
async def test_a_placeholder_counts_only_where_a_reader_is_shown_it(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream, html: str, shown: bool
) -> None:
    """Postmark fills the tags in, then the reader's client parses the HTML: a placeholder
    in a comment is filled in and never seen."""
    postmark.add_template(1, html_body=html)
    assert await upstream.template_uses(1, ["compliance_footer_html"]) is shown


async def test_comments_hide_nothing_in_a_text_body_nor_a_layouts_content(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    """A text body shows `<!--` as it is written; a layout whose `{{{@content}}}` is in a
    comment hides the whole template's HTML."""
    postmark.add_template(1, html_body="<p>Hi</p>", text_body=f"<!-- {FOOTER} -->")
    postmark.add_template(10, alias="hiding", template_type="Layout",
                          html_body="<body><!-- {{{@content}}} --><p>Our news</p></body>")
    postmark.add_template(11, html_body=f"<p>Offer</p>{FOOTER}", layout="hiding")

    assert await upstream.template_uses(1, ["compliance_footer_html"])
    assert not await upstream.template_uses(11, ["compliance_footer_html"])


async def test_template_answers_are_cached_and_shared(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.add_template(7, html_body="{{a}} {{b}}")

    answers = await asyncio.gather(
        *(upstream.template_uses(7, ["a"]) for _ in range(20)),
        upstream.template_uses(7, ["c"]),
    )
    assert await upstream.template_uses(7, ["a", "b"])

    assert answers == [True] * 20 + [False]
    assert len(postmark.requests_to("/templates/7")) == 1


async def test_template_cache_expires_after_its_ttl(postmark: FakePostmark) -> None:
    now = [1000.0]
    upstream = PostmarkEmailUpstream(config(postmark), cache_ttl_s=300, monotonic=lambda: now[0])
    await upstream.start()
    postmark.add_template(7, html_body="{{a}}")
    try:
        assert await upstream.template_uses(7, ["a"])
        now[0] += 299
        assert await upstream.template_uses(7, ["a"])
        assert len(postmark.requests) == 1
        postmark.add_template(7, html_body="no longer")
        now[0] += 1
        assert not await upstream.template_uses(7, ["a"])
    finally:
        await upstream.close()
    assert len(postmark.requests) == 2


async def test_failed_template_lookups_are_not_cached(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    postmark.add_template(7, html_body="{{a}}")
    postmark.answer_next(503, "<html>down</html>")

    with pytest.raises(UpstreamTemporaryError) as failed:
        await upstream.template_uses(7, ["a"])
    assert await upstream.template_uses(7, ["a"])

    assert not failed.value.maybe_delivered
    assert len(postmark.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [(422, None, 1101), (404, "Not Found", 404)],
)
async def test_unknown_template_is_refused(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream, status: int, body: object, code: int
) -> None:
    if body is not None:
        postmark.answer_next(status, body)  # type: ignore[arg-type]
    with pytest.raises(PostmarkRefusal) as refused:
        await upstream.template_uses("no-such-template", ["a"])
    assert (refused.value.status, refused.value.code) == (status, code)


async def test_suppression_dump_lists_the_streams_suppressions(
    postmark: FakePostmark, upstream: PostmarkEmailUpstream
) -> None:
    entries = [
        suppression_entry("jane@customer.test"),
        suppression_entry("bob@customer.test", reason="HardBounce", origin="Recipient"),
    ]
    postmark.suppressions["outbound"] = entries

    assert await upstream.suppression_dump("outbound") == entries
    assert await upstream.suppression_dump("broadcast") == []
    assert [r.path for r in postmark.requests] == [
        "/message-streams/outbound/suppressions/dump",
        "/message-streams/broadcast/suppressions/dump",
    ]
    with pytest.raises(PostmarkRefusal):
        await upstream.suppression_dump("no-such-stream")


async def test_the_fake_answers_what_the_official_sdk_expects(postmark: FakePostmark) -> None:
    """Keeps the fake honest: postmarker reads its answers and its errors."""
    postmark.add_template(5, html_body="<p>{{name}}</p>", subject="Hi")
    client = PostmarkClient(server_token=SERVER_TOKEN, root_api_url=postmark.url + "/")

    sent = await asyncio.to_thread(
        client.emails.send, From="s@example.com", To=RECIPIENT, Subject="Hi", TextBody="Hello"
    )
    template = await asyncio.to_thread(client.templates.get, 5)

    assert sent["MessageID"] and sent["ErrorCode"] == 0
    assert template.HtmlBody == "<p>{{name}}</p>"
    intruder = PostmarkClient(server_token="wrong", root_api_url=postmark.url + "/")
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(intruder.emails.send, From="s@example.com", To=RECIPIENT,
                                Subject="Hi", TextBody="Hello")
    assert refused.value.error_code == 10
