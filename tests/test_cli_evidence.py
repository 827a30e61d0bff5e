"""`compliance-gateway evidence ID` (issue 20 item 1), as a real process beside a running
gateway on the same store: by decision id and by the upstream id the agent was given (a
Twilio sid, a Postmark MessageID, an SMTP queue id), the same JSON as the API."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiosmtplib

from gateway.server import Gateway
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, record_written_consents
from tests.fakes.clock import SteppingClock
from tests.ingress.smtp.test_submission import first_touch
from tests.ingress.test_postmark import send as postmark_send
from tests.ingress.test_twilio import NOON_NY, NY, TWILIO_CONFIG, sdk, send_sms
from tests.test_cli import cli
from tests.web.test_admin import call

BOB, ANN = "bob@client.example.net", "ann@client.example.net"


async def evidence(gateway: Gateway, name: str) -> tuple[int, object, str]:
    assert gateway.config.source is not None
    done = await asyncio.to_thread(cli, Path(gateway.config.source), "evidence", name)
    return done.returncode, json.loads(done.stdout) if done.stdout else None, done.stderr


async def test_evidence_by_decision_id_and_by_upstream_id_prints_the_apis_json(
    gateway_factory,
) -> None:
    gateway = await gateway_factory(TWILIO_CONFIG, clock=SteppingClock(NOON_NY))
    await record_written_consents(gateway)
    text = await send_sms(sdk(gateway))
    email = await postmark_send(gateway)

    listed = (await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET)).json()
    by_upstream = {d["upstream_id"]: d["id"] for d in listed["decisions"]}
    text_id = by_upstream[text.sid]
    api = (await call(gateway, "GET", f"/v1/decisions/{text_id}/evidence",
                      MANAGER_SECRET)).json()

    code, by_id, _ = await evidence(gateway, str(text_id))
    assert code == 0 and by_id == api
    code, by_sid, _ = await evidence(gateway, text.sid)
    assert code == 0 and by_sid == api
    assert by_sid["decision"]["recipient"] == NY  # type: ignore[index]
    assert by_sid["zones"][0]["zone"] == "America/New_York"  # type: ignore[index]
    code, by_message_id, _ = await evidence(gateway, email["MessageID"])
    assert code == 0
    assert by_message_id["decision"]["id"] == by_upstream[email["MessageID"]]  # type: ignore[index]
    assert by_message_id["rewrites"][0]["kind"] == "footer"  # type: ignore[index]


async def test_an_smtp_queue_id_names_every_recipients_decision(gateway: Gateway) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await smtp.connect()
    await smtp.login("demo", DEMO_SECRET)
    _, reply = await smtp.sendmail(
        "katie@example.com", [BOB, ANN], first_touch(to=[BOB, ANN]).as_bytes()
    )
    await smtp.quit()
    queue_id = re.fullmatch(r"2\.0\.0 OK queued as ([0-9a-f]+)", reply).group(1)  # type: ignore[union-attr]

    code, printed, _ = await evidence(gateway, queue_id)

    assert code == 0 and isinstance(printed, list)
    assert sorted(d["decision"]["recipient"] for d in printed) == [ANN, BOB]
    assert {d["decision"]["upstream_id"] for d in printed} == {queue_id}


async def test_an_unknown_id_is_an_error_naming_it(gateway: Gateway) -> None:
    for name in ("999999", "SM00000000000000000000000000000000"):
        code, printed, stderr = await evidence(gateway, name)
        assert (code, printed) == (2, None)
        assert stderr.startswith("error: no decision has the id or upstream id") and name in stderr
