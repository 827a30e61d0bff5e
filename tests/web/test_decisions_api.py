"""`GET /v1/decisions` and `GET /v1/decisions/{id}/evidence` over real HTTP (issue 20 items 1
and 4): who sees what, every filter (recipient in part and without case, free text over the
subject), pages, the streamed formula-safe CSV read back with the csv module, the evidence as
JSON and as a printable page, and every bad filter refused naming it."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

import gateway.web.decisions as decisions_api
from gateway.model import Channel, DecisionOutcome, DecisionRecord, Purpose, Reason
from gateway.server import Gateway
from gateway.services.csv_cells import read_cell
from gateway.services.decision_reports import DECISION_CSV_COLUMNS
from tests.conftest import DEMO_SECRET, MANAGER_SECRET, record_written_consents
from tests.fakes.clock import SteppingClock
from tests.ingress.test_twilio import FROM, LATE_NY, NOON_NY, NY, TWILIO_CONFIG, sdk, send_sms
from tests.web.test_admin import MORE_ACCOUNTS, NOW, call, start

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def decision(
    n: int,
    recipient: str,
    *,
    account: str = "demo",
    channel: Channel = Channel.EMAIL,
    codes: tuple[str, ...] = (),
    subject: str = "",
    sender: str = "katie@example.com",
) -> DecisionRecord:
    return DecisionRecord(
        time=NOW - timedelta(minutes=n),
        channel=channel,
        account=account,
        sender=sender,
        recipient=recipient,
        purpose=Purpose.MARKETING,
        outcome=DecisionOutcome.BLOCKED if codes else DecisionOutcome.ALLOWED,
        reasons=tuple(Reason(code, f"{code} because", "rule.x") for code in codes),
        rules_version="v1",
        upstream_id=None if codes else f"up-{n}",
        subject=subject,
        gateway_id=f"g{n}",
        evidence={"zones": [], "rules": [{"id": "rule.x", "citation": "Law 1"}],
                  "consent": None, "suppression": [], "rewrites": [], "upstream": None},
    )


SEEDS = [
    decision(1, "Bob.Smith@Client.Example.NET", subject="Fleet costs"),
    decision(2, "ann@client.example.net", codes=("SUPPRESSED",), subject="FLEET renewal"),
    decision(3, "+12125550123", channel=Channel.SMS, account="other", sender="+14155550100"),
    decision(4, "+12125550199", channel=Channel.CALL, codes=("QUIET_HOURS",),
             sender="+14155550100"),
    decision(5, "carl@example.org", subject='=HYPERLINK("http://x","y")'),
    decision(6, "+14155550123", channel=Channel.SMS, subject="", codes=("NO_CONSENT",)),
    decision(7, "dora@example.org", subject=XSS, codes=("DECEPTIVE_SUBJECT",)),
]


async def seeded(gateway_factory: Callable[..., Awaitable[Gateway]]) -> tuple[Gateway, list[int]]:
    gateway = await start(gateway_factory)
    ids = await gateway.services.store.record_decisions(SEEDS)
    return gateway, ids


async def listed(gateway: Gateway, token: str = MANAGER_SECRET, **params: str) -> list[str]:
    reply = await call(gateway, "GET", "/v1/decisions", token, params=params)
    assert reply.status == 200, reply.text
    return [d["recipient"] for d in reply.json()["decisions"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [s.recipient for s in SEEDS]),
        ({"recipient": "bob.SMITH@client"}, ["Bob.Smith@Client.Example.NET"]),
        ({"recipient": "CLIENT.example"}, ["Bob.Smith@Client.Example.NET",
                                           "ann@client.example.net"]),
        ({"recipient": "2125550"}, ["+12125550123", "+12125550199"]),
        ({"q": "fleet"}, ["Bob.Smith@Client.Example.NET", "ann@client.example.net"]),
        ({"q": "=hyperlink"}, ["carl@example.org"]),
        ({"outcome": "blocked"}, ["ann@client.example.net", "+12125550199", "+14155550123",
                                  "dora@example.org"]),
        ({"outcome": "allowed", "channel": "email"}, ["Bob.Smith@Client.Example.NET",
                                                      "carl@example.org"]),
        ({"channel": "call"}, ["+12125550199"]),
        ({"reason": "QUIET_HOURS"}, ["+12125550199"]),
        ({"account": "other"}, ["+12125550123"]),
        ({"sender": "+14155550100"}, ["+12125550123", "+12125550199"]),
        ({"since": "2026-06-01T11:56:00Z", "until": "2026-06-01T11:58:00Z"},
         ["+12125550123", "+12125550199"]),
        ({"since": "270s"}, ["Bob.Smith@Client.Example.NET", "ann@client.example.net",
                             "+12125550123", "+12125550199"]),
        ({"upstream_id": "up-5"}, ["carl@example.org"]),
    ],
)
async def test_filters(gateway_factory, params: dict[str, str], expected: list[str]) -> None:
    gateway, _ = await seeded(gateway_factory)
    assert await listed(gateway, **params) == expected


async def test_each_decision_carries_the_interface_fields(gateway_factory) -> None:
    gateway, ids = await seeded(gateway_factory)
    reply = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                       params={"channel": "call"})
    [only] = reply.json()["decisions"]
    assert only == {
        "id": ids[3], "time": "2026-06-01T11:56:30+00:00", "channel": "call",
        "outcome": "blocked", "account": "demo", "key_id": None, "sender": "+14155550100",
        "recipient": "+12125550199", "purpose": "marketing", "reasons": ["QUIET_HOURS"],
        "reason_details": [
            {"code": "QUIET_HOURS", "message": "QUIET_HOURS because", "rule": "rule.x"}
        ],
        "rules_version": "v1", "upstream_id": None, "subject": "", "gateway_id": "g4",
    }
    assert reply.json()["next_cursor"] is None


async def test_a_rep_sees_only_its_own_accounts_decisions(gateway_factory) -> None:
    """The agent-facing status: why was this contact refused, without a manager."""
    gateway, _ = await seeded(gateway_factory)
    mine = await listed(gateway, DEMO_SECRET)
    assert "+12125550123" not in mine and len(mine) == len(SEEDS) - 1
    assert await listed(gateway, DEMO_SECRET, recipient="2125550123") == []
    assert await listed(gateway, DEMO_SECRET, recipient="1212555019") == ["+12125550199"]
    assert await listed(gateway, DEMO_SECRET, account="demo") == mine
    refused = await call(gateway, "GET", "/v1/decisions", DEMO_SECRET,
                         params={"account": "other"})
    assert refused.status == 403 and refused.json()["error"].startswith("account:")
    evidence = await call(gateway, "GET", "/v1/decisions/1/evidence", DEMO_SECRET)
    assert evidence.status == 403
    assert (await call(gateway, "GET", "/v1/decisions", None)).status == 401


async def test_pages_walk_every_decision_once(gateway_factory) -> None:
    gateway, ids = await seeded(gateway_factory)
    seen: list[int] = []
    params = {"limit": "3"}
    while True:
        reply = (await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                            params=params)).json()
        seen += [d["id"] for d in reply["decisions"]]
        if reply["next_cursor"] is None:
            break
        params = {"limit": "3", "cursor": reply["next_cursor"]}
    assert seen == ids


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "99999999d"}, "since"),  # a span past the calendar's start
        ({"until": "999999999h"}, "until"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-06-01T12:00:00Z", "until": "2026-06-01T11:00:00Z"}, "until"),
        ({"channel": "fax"}, "channel"),
        ({"outcome": "maybe"}, "outcome"),
        ({"reason": "quiet hours"}, "reason"),
        ({"account": ""}, "account"),
        ({"sender": " "}, "sender"),
        ({"recipient": "bob\x00@x"}, "recipient"),
        ({"q": "x" * 201}, "q"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "YjE6Mw=="}, "cursor"),  # a block cursor ("b1:3")
        ({"format": "xml"}, "format"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_every_bad_filter_is_a_400_naming_it(
    gateway_factory, params: dict[str, str], named: str
) -> None:
    gateway = await start(gateway_factory)
    reply = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET, params=params)
    assert reply.status == 400
    assert reply.json()["error"].startswith(f"{named}:")


async def test_a_repeated_filter_is_refused(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    url = "/v1/decisions?outcome=allowed&outcome=blocked"
    reply = await call(gateway, "GET", url, MANAGER_SECRET)
    assert reply.status == 400 and reply.json()["error"].startswith("outcome:")


# --- CSV ----------------------------------------------------------------------------------


async def test_the_csv_export_streams_every_page_with_neutralised_cells(
    gateway_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_api, "EXPORT_PAGE", 2)
    gateway, ids = await seeded(gateway_factory)

    reply = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                       params={"format": "csv"})

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.headers["Transfer-Encoding"] == "chunked", "streamed, not built in memory"
    rows = list(csv.DictReader(io.StringIO(reply.text, newline="")))
    assert [int(row["id"]) for row in rows] == ids
    assert tuple(rows[0]) == DECISION_CSV_COLUMNS
    by_recipient = {read_cell(row["recipient"]): row for row in rows}
    carl = by_recipient["carl@example.org"]
    assert carl["subject"] == '\'=HYPERLINK("http://x","y")'
    assert by_recipient["+12125550123"]["recipient"] == "'+12125550123"
    assert read_cell(carl["subject"]) == SEEDS[4].subject
    assert by_recipient["+12125550199"]["reasons"] == "QUIET_HOURS"


async def test_a_csv_page_names_the_next_cursor(gateway_factory) -> None:
    gateway, ids = await seeded(gateway_factory)
    first = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                       params={"format": "csv", "limit": "4", "outcome": "blocked"})
    rows = list(csv.DictReader(io.StringIO(first.text, newline="")))
    assert len(rows) == 4 and "X-Next-Cursor" not in first.headers
    second = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                        params={"format": "csv", "limit": "3", "outcome": "blocked"})
    assert len(list(csv.DictReader(io.StringIO(second.text, newline="")))) == 3
    rest = await call(gateway, "GET", "/v1/decisions", MANAGER_SECRET,
                      params={"format": "csv", "limit": "3", "outcome": "blocked",
                              "cursor": second.headers["X-Next-Cursor"]})
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(rest.text, newline=""))] == [
        ids[6]
    ]


# --- evidence -----------------------------------------------------------------------------


async def test_the_evidence_of_a_decision_as_json_and_as_a_page(gateway_factory) -> None:
    gateway, ids = await seeded(gateway_factory)
    dora = ids[6]
    as_json = await call(gateway, "GET", f"/v1/decisions/{dora}/evidence", MANAGER_SECRET)
    assert as_json.status == 200
    document = as_json.json()
    assert set(document) >= {"decision", "zones", "rules", "consent", "suppression",
                             "rewrites", "upstream"}
    assert document["decision"]["subject"] == XSS
    assert document["rules"] == [{"id": "rule.x", "citation": "Law 1"}]

    page = await call(gateway, "GET", f"/v1/decisions/{dora}/evidence", MANAGER_SECRET,
                      headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'none'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "Law 1" in page.text and "DECEPTIVE_SUBJECT" in page.text

    missing = await call(gateway, "GET", f"/v1/decisions/{ids[-1] + 1}/evidence",
                         MANAGER_SECRET)
    assert missing.status == 404


async def test_the_evidence_of_a_sent_text_and_a_blocked_call_through_the_api(
    gateway_factory,
) -> None:
    """Real sends through the official Twilio SDK, read back as the agent (its own status)
    and as a manager (the evidence)."""
    clock = SteppingClock(NOON_NY)
    gateway = await gateway_factory(TWILIO_CONFIG + MORE_ACCOUNTS, clock=clock)
    await record_written_consents(gateway)
    message = await send_sms(sdk(gateway))
    clock.advance((LATE_NY - NOON_NY).total_seconds())
    with pytest.raises(Exception, match="QUIET_HOURS"):
        await asyncio.to_thread(
            sdk(gateway).calls.create, to=NY, from_=FROM, url="https://agent.example.com/voice"
        )

    status = (await call(gateway, "GET", "/v1/decisions", DEMO_SECRET,
                         params={"recipient": NY[2:]})).json()["decisions"]
    assert [(d["channel"], d["outcome"], d["upstream_id"]) for d in status] == [
        ("call", "blocked", None), ("sms", "allowed", message.sid)
    ]
    assert status[0]["reasons"] == ["QUIET_HOURS"]

    call_id, text_id = (d["id"] for d in status)
    text = (await call(gateway, "GET", f"/v1/decisions/{text_id}/evidence",
                       MANAGER_SECRET)).json()
    assert text["zones"][0]["zone"] == "America/New_York"
    assert text["zones"][0]["local_time"].startswith("2026-06-02T12:")
    assert {"id": "tcpa.quiet_hours", "citation": "47 CFR 64.1200(c)(1)"}.items() <= next(
        r for r in text["rules"] if r["id"] == "tcpa.quiet_hours"
    ).items()
    assert text["consent"]["kind"] == "express-written"
    assert text["suppression"] == [] and text["rewrites"][0]["kind"] == "sms_notice"
    assert text["upstream"]["id"] == message.sid

    blocked = (await call(gateway, "GET", f"/v1/decisions/{call_id}/evidence",
                          MANAGER_SECRET)).json()
    assert blocked["decision"]["outcome"] == "blocked"
    assert blocked["zones"][0]["local_time"].startswith("2026-06-02T22:")
    assert blocked["upstream"] is None and blocked["rewrites"] == []
    page = await call(gateway, "GET", f"/v1/decisions/{call_id}/evidence", MANAGER_SECRET,
                      headers={"Accept": "text/html"})
    assert "America/New_York" in page.text and "47 CFR 64.1200(c)(1)" in page.text

