"""Calls through the running gateway with the official `twilio` SDK (issue 18, item 3): what
the call will do must be what the gateway checked, and no Twiml makes the API answer 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import Dial, VoiceResponse

from gateway.server import Gateway
from gateway.store.base import BlockQuery
from tests.conftest import DEMO_SECRET, record_written_consents
from tests.fakes.clock import SteppingClock
from tests.ingress.test_twilio import FROM, NOON_NY, NY, SID, outbox, sdk
from tests.ingress.test_twiml import TWIML

CONFIG = f"""
[upstream.twilio]
kind = "outbox"
account_sid = "{SID}"
auth_token = "gateway-twilio-auth-token-0123"

[twilio]
twiml_hosts = ["twiml.example.com", "127.0.0.1"]
"""


async def start(gateway_factory) -> Gateway:
    gateway = await gateway_factory(CONFIG, clock=SteppingClock(NOON_NY))
    await record_written_consents(gateway)
    return gateway


async def create_call(gateway: Gateway, **kwargs):
    return await asyncio.to_thread(sdk(gateway).calls.create, to=NY, from_=FROM, **kwargs)


async def refused_call(gateway: Gateway, **kwargs) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as error:
        await create_call(gateway, **kwargs)
    assert (error.value.status, error.value.code) == (400, 20001)
    return error.value


def voice(build) -> str:
    response = VoiceResponse()
    build(response)
    return str(response)


async def test_a_call_saying_and_gathering_goes_out_as_written(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    twiml = voice(lambda r: (r.gather(num_digits=1).say("Press 1 to hear about our fleet plan."),
                             r.say("Goodbye."), r.hangup()))
    call = await create_call(gateway, twiml=twiml)
    assert call.sid.startswith("CA") and call.status == "queued"
    [forwarded] = outbox(gateway)
    assert forwarded["Twiml"] == twiml


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (lambda r: r.dial("+13055550199"), "<Dial>"),
        (lambda r: r.redirect("https://agent.example.com/next"), "<Redirect>"),
        (lambda r: r.gather(action="https://agent.example.com/g").say("Press 1"),
         "<Gather action>"),
        (lambda r: r.record(action="https://agent.example.com/r"), "<Record action>"),
        (lambda r: r.connect().stream(url="wss://agent.example.com/s"), "<Connect>"),
        (lambda r: r.refer().sip("sip:bob@pbx.example.com"), "<Refer>"),
        (lambda r: r.enqueue("sales"), "<Enqueue>"),
        (lambda r: r.gather().append(Dial("+13055550199")), "<Dial>"),
    ],
    ids=["dial", "redirect", "gather-action", "record-action", "connect", "refer", "enqueue",
         "dial-in-gather"],
)
async def test_twiml_that_hands_the_call_elsewhere_is_refused_and_recorded(
    gateway_factory, build, says
) -> None:
    gateway = await start(gateway_factory)
    error = await refused_call(gateway, twiml=voice(build))
    assert says in error.msg
    assert outbox(gateway) == []
    [block] = await gateway.services.store.query_blocks(BlockQuery())
    assert block.reasons[0].code == "MESSAGE_MALFORMED"
    assert says in block.reasons[0].message


async def test_a_url_on_a_vouched_host_goes_out_and_any_other_is_refused(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    call = await create_call(gateway, url="https://TWIML.example.com/voice",
                             fallback_url="http://127.0.0.1:9/fallback")
    assert call.sid.startswith("CA")
    [forwarded] = outbox(gateway)
    assert forwarded["Url"] == "https://TWIML.example.com/voice"

    for kwargs, says in [
        ({"url": "https://agent.example.com/voice"}, "twiml_hosts"),
        ({"url": "http://twiml.example.com/voice"}, "https"),
        ({"url": "https://twiml.example.com.evil.example.net/voice"}, "twiml_hosts"),
        ({"url": "https://twiml.example.com/v", "fallback_url": "https://agent.example.com/f"},
         "FallbackUrl"),
        ({"application_sid": "AP" + "0" * 32}, "ApplicationSid"),
    ]:
        error = await refused_call(gateway, **kwargs)
        assert says in error.msg, (kwargs, error.msg)
    assert len(outbox(gateway)) == 1


async def test_with_no_twiml_hosts_every_url_is_refused(gateway_factory) -> None:
    gateway = await gateway_factory(CONFIG.replace(
        'twiml_hosts = ["twiml.example.com", "127.0.0.1"]', "twiml_hosts = []"
    ), clock=SteppingClock(NOON_NY))
    await record_written_consents(gateway)
    error = await refused_call(gateway, url="https://twiml.example.com/voice")
    assert "twiml_hosts" in error.msg
    assert (await create_call(gateway, twiml="<Response><Say>Hi</Say></Response>")).sid


def post_twiml(port: int, twiml: str) -> int:
    """One form POST, as blocking code in a worker thread (the gateway runs on the loop)."""
    data = urllib.parse.urlencode({"To": NY, "From": FROM, "Twiml": twiml}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Calls.json", data=data,
        headers={"Authorization": "Basic "
                 + base64.b64encode(f"demo:{DEMO_SECRET}".encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        assert set(body) == {"code", "message", "more_info", "status"}, body
        return error.code


async def test_no_twiml_makes_the_api_answer_500(gateway_factory) -> None:
    """Generated Twiml (mostly TwiML, with strays: other verbs, attributes, entities, text)
    through the real HTTP API: a refusal in Twilio's shape or an accepted call, never a 5xx."""
    gateway = await start(gateway_factory)
    statuses: set[int] = set()

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(TWIML)
    def post_any(twiml: str) -> None:
        status = post_twiml(gateway.http_port, twiml)
        assert status in (201, 400), (status, twiml)
        statuses.add(status)

    await asyncio.to_thread(post_any)
    assert statuses == {201, 400}
