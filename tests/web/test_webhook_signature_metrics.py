"""Refused provider webhooks are counted at /metrics (issue 21, item 6): a Twilio inbound
message with a bad `X-Twilio-Signature` is a STOP Twilio will not deliver again, so
`gateway_webhook_signature_failures_total{provider}` lets an alert catch a wrong auth token
or public_url. Real sockets; signed as Twilio signs (the SDK's RequestValidator)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import Gateway
from tests.ingress.test_postmark import WEBHOOK_CONFIG, WEBHOOK_PASSWORD, WEBHOOK_USER, hook
from tests.ingress.test_twilio import TWILIO_CONFIG
from tests.web.test_twilio_webhook import inbound, post, start

FAILURES = "gateway_webhook_signature_failures_total"


async def failures(gateway: Gateway) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{gateway.http_port}/metrics"
    ) as response:
        text = await response.text()
    return {
        sample.labels["provider"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == FAILURES
    }


async def post_unsigned(gateway: Gateway, params: dict[str, str], signature: str) -> int:
    url = f"http://127.0.0.1:{gateway.http_port}/webhooks/twilio"
    headers = {"X-Twilio-Signature": signature} if signature else {}
    async with aiohttp.ClientSession() as http, http.post(url, data=params,
                                                          headers=headers) as response:
        return response.status


async def test_a_bad_twilio_signature_is_refused_and_counted_once(gateway_factory) -> None:
    gateway, _ = await start(gateway_factory)
    assert await failures(gateway) == {"twilio": 0, "postmark": 0}, "present before any"
    stop = inbound("STOP")
    assert await post_unsigned(gateway, stop, "bm90IHRoZSBzaWduYXR1cmU=") == 403
    assert await failures(gateway) == {"twilio": 1, "postmark": 0}
    assert not await gateway.services.store.suppressed([stop["From"]])
    assert await post_unsigned(gateway, inbound("STOP"), "") == 403, "no signature at all"
    assert await failures(gateway) == {"twilio": 2, "postmark": 0}


async def test_a_good_twilio_signature_is_not_counted(gateway_factory) -> None:
    gateway, _ = await start(gateway_factory)
    stop = inbound("STOP")
    status, _ = await post(gateway, stop)
    assert status == 200
    assert await gateway.services.store.suppressed([stop["From"]])
    assert await failures(gateway) == {"twilio": 0, "postmark": 0}


async def test_postmark_webhooks_with_wrong_credentials_are_counted(gateway_factory) -> None:
    gateway = await gateway_factory(WEBHOOK_CONFIG + TWILIO_CONFIG)
    event = {"RecordType": "SpamComplaint", "Email": "bob@client.example.net"}
    assert await hook(gateway, event, (WEBHOOK_USER, WEBHOOK_PASSWORD + "x")) == 401
    assert await failures(gateway) == {"twilio": 0, "postmark": 1}
    assert await hook(gateway, event) == 200
    assert await failures(gateway) == {"twilio": 0, "postmark": 1}
