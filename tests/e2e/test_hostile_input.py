"""Hostile input: SMTP abuse and smuggling, CR/LF injection through every API field,
unsubscribe token forgery, property-based fuzzing of the JSON and form parsers, and
schemathesis against the admin API's OpenAPI document (docs/openapi.yaml).

Every case ends in a clear error, nothing unchecked reaches the upstream, and the gateway
keeps serving: each test sends one good message afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import sys
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.ingress.postmark import RequestProblem, build_request
from gateway.ingress.twilio import FormProblem, check_form
from gateway.mail.compose import compose_mime
from gateway.model import Channel
from gateway.server import Gateway
from tests.conftest import DEMO_SECRET, outbox_messages
from tests.fakes.smtp_sink import SmtpSink
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import raw_post
from tests.ingress.test_twilio import DEMO_AUTH, FROM, NY, SID, outbox, start

REPO = Path(__file__).resolve().parents[2]
AUTH_PLAIN = base64.b64encode(f"\0demo\0{DEMO_SECRET}".encode())


class RawSmtp:
    """A client that writes exactly the bytes it is given and reads single replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(
        cls, gateway: Gateway, login: bool = True, source: str = "127.0.0.1"
    ) -> RawSmtp:
        client = cls(*await asyncio.open_connection(
            "127.0.0.1", gateway.smtp_port, local_addr=(source, 0)
        ))
        await client.reply()
        await client.command(b"EHLO agent.test")
        if login:
            assert (await client.command(b"AUTH PLAIN " + AUTH_PLAIN)).startswith(b"235")
        return client

    async def reply(self) -> bytes:
        """One whole reply (multi-line replies end at the line with a space after the code)."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def still_serving(gateway: Gateway, source: str = "127.0.0.1") -> None:
    client = await RawSmtp.open(gateway, source=source)
    assert (await client.command(b"MAIL FROM:<katie@example.com>")).startswith(b"250")
    assert (await client.command(b"RCPT TO:<bob@client.example.net>")).startswith(b"250")
    assert (await client.command(b"DATA")).startswith(b"354")
    content = first_touch().as_bytes().replace(b"\n", b"\r\n")
    assert (await client.command(content + b"\r\n.")).startswith(b"250")
    await client.command(b"QUIT")
    await client.close()


# SMTP smuggling ----------------------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@client.example.net>\r\nDATA\r\n"
    b"From: CEO <ceo@example.com>\r\nSubject: wire the money\r\n\r\nsmuggled\r\n"
)


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n"],
    ids=["LF.LF", "CR.CR", "CRLF.LF", "LF.CRLF", "CR.CRLF", "CRLF.CR", "CRLF NUL.CRLF"],
)
async def test_smuggled_end_of_data_is_one_message_here_and_upstream(gateway_factory, end) -> None:
    """The gateway ends DATA only at CRLF.CRLF; what it forwards has CRLF line ends only
    (and dot-stuffing), so a lenient receiver cannot find a second message in it either."""
    async with SmtpSink() as sink:
        gateway = await gateway_factory(f"""
[upstream.email]
kind = "smtp"
host = "127.0.0.1"
port = {sink.port}
starttls = false
""")
        client = await RawSmtp.open(gateway)
        await client.command(b"MAIL FROM:<katie@example.com>")
        await client.command(b"RCPT TO:<bob@client.example.net>")
        assert (await client.command(b"DATA")).startswith(b"354")
        head = first_touch().as_bytes().replace(b"\n", b"\r\n")
        reply = await client.command(head + end + SMUGGLED + b"\r\n.")
        assert reply[:3] in (b"250", b"550"), reply
        assert (await client.command(b"QUIT")).startswith(b"221")  # no reply was left over
        await client.close()
        assert sink.mail_commands <= 1
        for received in sink.messages:
            assert received.rcpt_tos == ("bob@client.example.net",)
            assert received.mail_from == "katie@example.com"
            assert not re.search(rb"\r(?!\n)|(?<!\r)\n", received.data)
        await still_serving(gateway)


# SMTP abuse --------------------------------------------------------------------------------

async def test_relay_without_auth_is_refused_for_every_recipient(gateway) -> None:
    client = await RawSmtp.open(gateway, login=False)
    await client.command(b"MAIL FROM:<katie@example.com>")
    for recipient in (b"bob@client.example.net", b"postmaster@example.com", b"a@[127.0.0.1]"):
        assert (await client.command(b"RCPT TO:<" + recipient + b">")).startswith(b"530 5.7.0")
    assert (await client.command(b"DATA")).startswith(b"503")
    await client.close()
    assert outbox_messages(gateway) == []
    await still_serving(gateway)


async def test_noop_flood_is_cut_off_and_others_are_served(gateway) -> None:
    client = await RawSmtp.open(gateway)
    client.writer.write(b"NOOP\r\n" * 1001)
    replies = [await client.reply() for _ in range(1001)]
    assert all(r.startswith(b"250") for r in replies[:1000])
    assert replies[1000].startswith(b"421 4.7.0 NOOP sent too many times")
    assert await client.reader.read() == b""  # closed
    await still_serving(gateway)


async def test_unknown_command_flood_is_cut_off(gateway) -> None:
    client = await RawSmtp.open(gateway)
    replies = [await client.command(b"XYZZY") for _ in range(5)]
    assert replies[-1].startswith(b"502 5.5.1")
    assert await client.reader.read() == b""
    await still_serving(gateway)


@pytest.mark.parametrize("length", [1_000, 100_000, 1_000_000])
async def test_over_long_command_lines_are_refused_and_the_session_goes_on(
    gateway, length
) -> None:
    client = await RawSmtp.open(gateway)
    reply = await client.command(b"MAIL FROM:<" + b"a" * length + b"@example.com>")
    assert reply.startswith(b"500"), reply
    assert (await client.command(b"NOOP")).startswith(b"250")
    await client.close()
    await still_serving(gateway)


async def test_rep_with_a_foreign_from_is_refused_at_rcpt_and_data(gateway) -> None:
    client = await RawSmtp.open(gateway)
    await client.command(b"MAIL FROM:<ceo@other-company.example>")
    assert (await client.command(b"RCPT TO:<bob@client.example.net>")).startswith(b"550 5.7.1")
    await client.command(b"RSET")
    await client.command(b"MAIL FROM:<katie@example.com>")
    await client.command(b"RCPT TO:<bob@client.example.net>")
    await client.command(b"DATA")
    content = first_touch(sender="ceo@other-company.example").as_bytes().replace(b"\n", b"\r\n")
    assert (await client.command(content + b"\r\n.")).startswith(b"550 5.7.1")
    await client.close()
    assert outbox_messages(gateway) == []


# CR/LF injection through the Postmark-shaped API --------------------------------------------

INJECTED = "x\r\nBcc: victim@client.example.net"


def good_item(**changes: object) -> dict:
    item: dict = {"From": "katie@example.com", "To": "bob@client.example.net",
                  "Subject": "Fleet costs", "TextBody": "Hi Bob"}
    item.update(changes)
    return item


@pytest.mark.parametrize(
    "changes",
    [
        {"From": f"katie@example.com{INJECTED}"},
        {"To": f"bob@client.example.net{INJECTED}"},
        {"Cc": f"ann@client.example.net{INJECTED}"},
        {"Bcc": f"ann@client.example.net{INJECTED}"},
        {"ReplyTo": f"katie@example.com{INJECTED}"},
        {"Subject": f"Fleet costs{INJECTED}"},
        {"Tag": INJECTED},
        {"MessageStream": INJECTED},
        {"Headers": [{"Name": f"X-Campaign{INJECTED}", "Value": "q3"}]},
        {"Headers": [{"Name": "X-Campaign", "Value": f"q3{INJECTED}"}]},
        {"Headers": [{"Name": "X-Campaign\n", "Value": "q3"}]},
        {"Metadata": {f"campaign{INJECTED}": "q3"}},
        {"Metadata": {"campaign": f"q3{INJECTED}"}},
        {"Attachments": [{"Name": f"a.txt{INJECTED}", "Content": "aGk=",
                          "ContentType": "text/plain"}]},
        {"Attachments": [{"Name": "a.txt", "Content": "aGk=",
                          "ContentType": f"text/plain{INJECTED}"}]},
        {"Attachments": [{"Name": "a.png", "Content": "aGk=", "ContentType": "image/png",
                          "ContentID": f"cid:a{INJECTED}"}]},
    ],
    ids=lambda changes: "-".join(changes) + (
        "." + next(iter(v[0])) if isinstance(v := next(iter(changes.values())), list) else ""
    ),
)
async def test_line_breaks_in_any_postmark_field_are_refused(gateway, changes) -> None:
    status, answer = await raw_post(gateway, "/email", json.dumps(good_item(**changes)).encode())
    assert status == 422 and answer["ErrorCode"] == 300, answer
    assert outbox_messages(gateway) == []
    status, answer = await raw_post(gateway, "/email", json.dumps(good_item()).encode())
    assert (status, answer["ErrorCode"]) == (200, 0)
    [delivered] = outbox_messages(gateway)
    assert b"victim" not in delivered


async def test_megabytes_of_hostile_html_are_refused_not_sent_unfooted(gateway) -> None:
    """9 MB of unclosed tags (Postmark's limit is 10 MB per message) is parsed off the event
    loop; a footer past Gmail's ~102 KB clip is not conspicuous, so the send is refused."""
    hostile = "<div style='display:none'><p><table><tr><td><b>x" * 190_000
    assert len(hostile) > 9_000_000
    body = json.dumps(good_item(HtmlBody=hostile)).encode()
    status, answer = await raw_post(gateway, "/email", body)
    assert status == 422, answer
    assert "FOOTER_NOT_VISIBLE" in answer["Message"]
    assert outbox_messages(gateway) == []
    status, answer = await raw_post(gateway, "/email", json.dumps(good_item()).encode())
    assert (status, answer["ErrorCode"]) == (200, 0)


@pytest.mark.parametrize("value", [[], {}, ["HtmlOnly"], 1])
async def test_track_links_of_the_wrong_type_is_a_422_not_a_500(gateway, value) -> None:
    """Found by the fuzzer below: a list made the membership test raise TypeError."""
    body = json.dumps(good_item(TrackLinks=value)).encode()
    status, answer = await raw_post(gateway, "/email", body)
    assert (status, answer["ErrorCode"]) == (422, 300)
    assert "TrackLinks" in answer["Message"]


# CR/LF through the Twilio-shaped API ---------------------------------------------------------

@pytest.mark.parametrize("field", ["To", "From"])
async def test_line_breaks_in_twilio_numbers_are_refused(gateway_factory, field) -> None:
    gateway = await start(gateway_factory)
    url = f"http://127.0.0.1:{gateway.http_port}/2010-04-01/Accounts/{SID}/Messages.json"
    form = {"To": NY, "From": FROM, "Body": "Hi"}
    form[field] += "\r\nTo: +13055550123"
    async with aiohttp.ClientSession(headers=DEMO_AUTH) as http:
        async with http.post(url, data=form) as response:
            assert response.status == 400
            assert (await response.json())["code"] in (21211, 21212, 21604, 21603)
        assert outbox(gateway) == []
        body = "Line one\r\nTo: +13055550123\r\nline three"
        async with http.post(url, data={"To": NY, "From": FROM, "Body": body}) as response:
            assert response.status == 201
    [forwarded] = outbox(gateway)
    assert forwarded["To"] == NY
    assert forwarded["Body"].startswith(body)


# Unsubscribe tokens ---------------------------------------------------------------------------

async def test_forged_truncated_and_replayed_tokens_unsubscribe_nobody_else(gateway) -> None:
    tokens = gateway.services.unsubscribe.tokens
    now = gateway.clock.now()
    bob = tokens.issue("bob@client.example.net", "katie@example.com", Channel.EMAIL, now)
    key_id, sealed = bob.split(".")
    blob = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    # The cipher is a stream: XOR "bob" into "ann" where the recipient starts (after the
    # version byte, the 16-byte tag, and channel, time and length in the claims).
    at = 1 + 16 + 6
    delta = bytes(b ^ a for b, a in zip(b"bob", b"ann", strict=True))
    blob[at:at + 3] = bytes(c ^ d for c, d in zip(blob[at:at + 3], delta, strict=True))
    ann = base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    # The earlier, signed format (still honoured): bob's signature on ann's claims.
    old_key = tokens.keys[key_id][0]
    claims = {"r": "bob@client.example.net", "s": "katie@example.com", "c": "email", "t": 1}
    payload, ann_payload = (
        base64.urlsafe_b64encode(json.dumps(c, separators=(",", ":")).encode()).decode()
        .rstrip("=") for c in (claims, {**claims, "r": "ann@client.example.net"})
    )
    signature = base64.urlsafe_b64encode(hmac.new(
        old_key, f"{key_id}.{payload}".encode(), hashlib.sha256).digest()[:16]
    ).decode().rstrip("=")
    assert tokens.verify(f"{key_id}.{payload}.{signature}") is not None
    forged = [
        f"{key_id}.{ann}",  # bob's token with ann written into its ciphertext
        f"{key_id}.{ann_payload}.{signature}",  # bob's signature on ann's claims
        bob[:-1],  # truncated
        bob[:-1] + ("A" if bob[-1] != "A" else "B"),  # one character changed
        f"k2.{sealed}",  # unknown key id
        f"k2.{payload}.{signature}",
        f"{key_id}.{payload}",  # no signature
        "a" * 5000,
    ]
    base = f"http://127.0.0.1:{gateway.http_port}/u/"
    form = {"List-Unsubscribe": "One-Click"}
    async with aiohttp.ClientSession() as http:
        for token in forged:
            async with http.post(base + token, data=form) as response:
                assert response.status in (400, 404), (token, response.status)
        store = gateway.services.store
        assert await store.suppressed(["ann@client.example.net", "bob@client.example.net"]) == set()
        for _ in range(2):  # a replay of bob's own token only ever concerns bob
            async with http.post(base + bob, data=form) as response:
                assert response.status == 200
    assert await store.suppressed(["ann@client.example.net", "bob@client.example.net"]) == {
        "bob@client.example.net"
    }


# Property-based fuzzing of the parsers ---------------------------------------------------------

POSTMARK_KEYS = ["From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "TextBody", "HtmlBody", "Tag",
                 "MessageStream", "Headers", "Metadata", "Attachments", "TrackOpens",
                 "TrackLinks"]
HOSTILE_TEXT = st.lists(
    st.sampled_from([*"ab@.<>,;:\"' \r\n\t\x00=?é\u2028\ud800", "katie@example.com"]),
    max_size=20,
).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["Name", "Value", "Content", "ContentType", "ContentID",
                                       "x"]), inner, max_size=4),
    max_leaves=8,
)
ALLOWED_HEADERS = {"from", "to", "cc", "reply-to", "subject", "date", "message-id",
                   "mime-version", "content-type", "content-transfer-encoding", "x-pm-tag",
                   "x-pm-message-stream", "x-pm-trackopens", "x-pm-tracklinks",
                   "content-disposition", "content-id"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(
    {"From": st.just("katie@example.com"), "To": st.just("bob@client.example.net")},
    optional={key: JSON_VALUES for key in POSTMARK_KEYS if key not in ("From", "To")},
))
@example({"From": "katie@example.com", "To": "bob@client.example.net", "TextBody": "a",
          "Metadata": {"Name": False}})
def test_postmark_request_parser_refuses_or_builds_a_message_without_injected_headers(
    item,
) -> None:
    try:
        built = build_request(item, template=False, now=datetime(2026, 6, 2, tzinfo=UTC))
    except RequestProblem as problem:
        assert problem.code == 300 and str(problem)
        return
    assert built.fields is not None
    parsed = message_from_bytes(compose_mime(built.fields), policy=policy.default)
    names = {name.lower() for name in parsed}
    agent_headers = {
        str(h.get("Name", "")).strip().lower() for h in item.get("Headers") or []
        if isinstance(h, dict)
    }
    metadata = item.get("Metadata")
    metadata_headers = {f"x-pm-metadata-{key}".lower() for key in metadata or {}}
    assert names <= ALLOWED_HEADERS | agent_headers | metadata_headers, names
    assert "bcc" not in names
    assert parsed["To"] is not None


FORM_NAMES = st.sampled_from(["To", "From", "Body", "MediaUrl", "StatusCallback", "ContentSid",
                              "SendAt", "to", "Twiml", "Url", "MessagingServiceSid", "X"])


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([Channel.SMS, Channel.CALL]),
    st.lists(st.tuples(FORM_NAMES, HOSTILE_TEXT | st.just("<Response><Dial>1</Dial>")),
             max_size=6),
    st.sampled_from([None, "Reply STOP to opt out."]),
)
def test_twilio_form_check_refuses_with_a_twilio_code_or_passes_only_known_fields(
    channel, form, notice
) -> None:
    try:
        check_form(channel, form, notice)
    except FormProblem as problem:
        assert 20001 <= problem.code <= 30000 and problem.message
        return
    names = {name for name, _ in form}
    assert "SendAt" not in names and "to" not in names and "X" not in names
    assert not any("<Dial" in value for name, value in form if name == "Twiml")


# Schemathesis against the admin API ----------------------------------------------------------

OWNER_SECRET = "owner-secret-0123456789abcdef"


async def test_admin_api_holds_up_against_its_openapi_document(gateway_factory, tmp_path) -> None:
    """Generated requests for every /v1 operation, as the owner (who may call them all):
    no 5xx, every status and content type the document promises, every 2xx body valid.
    Its probes without or with a wrong token lock its address out for a while (429, which
    the document promises too); other clients are served on."""
    gateway = await gateway_factory(f"""
[[accounts]]
name = "owner"
secret = "{OWNER_SECRET}"
role = "owner"
sender_domains = []
""")
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "schemathesis"), "run",
        str(REPO / "docs" / "openapi.yaml"),
        "--url", f"http://127.0.0.1:{gateway.http_port}",
        "-H", f"Authorization: Bearer {OWNER_SECRET}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples", "40", "--seed", "1", "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    assert re.search(r"\b1[0-9] passed|\b1[0-9] operations", text) or "passed" in text
    await still_serving(gateway, source="127.0.99.2")  # its fuzzed tokens lock 127.0.0.0/24


@pytest.mark.parametrize(
    "form",
    [
        [("To", "+12125550100"), ("To", "+12125550199"), ("From", "+14155550100"),
         ("Body", "hi")],
        [("To", "+12125550100"), ("From", "+14155550100"), ("Twiml", "<Response/>"),
         ("Twiml", "<Response><Dial>+15555550100</Dial></Response>")],
    ],
    ids=["two To", "a second Twiml that dials"],
)
def test_a_repeated_parameter_is_refused_rather_than_checked_once(form) -> None:
    """The gateway would check one value while the provider might use the other."""
    channel = Channel.CALL if any(k == "Twiml" for k, _ in form) else Channel.SMS
    with pytest.raises(FormProblem) as refused:
        check_form(channel, form, None)
    assert refused.value.code == 20001
    assert "more than once" in refused.value.message


def test_repeatable_parameters_may_repeat() -> None:
    check_form(Channel.SMS, [("To", "+12125550100"), ("From", "+14155550100"),
                             ("MediaUrl", "https://a.example/1.png"),
                             ("MediaUrl", "https://a.example/2.png")], None)
