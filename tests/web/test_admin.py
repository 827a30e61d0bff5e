"""The admin API over real HTTP: who may call what, the block log's filters, pages and CSV,
counts, and suppression and consent changes landing in the store and the audit log."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateway.model import BlockRecord, Channel, Reason
from gateway.runtime.clock import Clock
from gateway.server import Gateway
from gateway.services.block_reports import BLOCK_CSV_COLUMNS
from tests.conftest import DEMO_SECRET, MANAGER_SECRET

ADMIN_SECRET = "admin-secret-0123"
OWNER_SECRET = "owner-secret-0123"
MORE_ACCOUNTS = f"""
[[accounts]]
name = "ada"
secret = "{ADMIN_SECRET}"
role = "admin"
sender_domains = []

[[accounts]]
name = "olga"
secret = "{OWNER_SECRET}"
role = "owner"
sender_domains = []
"""
CALLERS: dict[str, str | None] = {
    "no token": None,
    "bad token": "not-anyones-secret-0123",
    "rep": DEMO_SECRET,
    "manager": MANAGER_SECRET,
    "admin": ADMIN_SECRET,
    "owner": OWNER_SECRET,
}
RANK = {"rep": 1, "manager": 2, "admin": 3, "owner": 4}
# Half a minute past the minute: seeded blocks sit on whole minutes, so a span such as 24h
# cuts between the same records however long the test takes to ask.
NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
SEEDED = 3000
NY = "+12125550123"
CODES = ("SUPPRESSED", "QUIET_HOURS", "NO_CONSENT", "FOOTER_MISSING")


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def call(
    gateway: Gateway,
    method: str,
    path: str,
    token: str | None,
    *,
    params: dict[str, str] | None = None,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    url = f"http://127.0.0.1:{gateway.http_port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, params=params, json=body, headers=sent) as response,
    ):
        return Reply(response.status, response.headers, await response.text())


async def start(gateway_factory: Callable[..., Awaitable[Gateway]]) -> Gateway:
    return await gateway_factory(MORE_ACCOUNTS, clock=Clock(NOW))


# --- the role matrix ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    minimum: str
    body: object = None
    # Run before each caller: a removal needs something to remove every time.
    prepare: Callable[[Gateway], Awaitable[None]] | None = field(default=None, compare=False)


async def seed_one_block(gateway: Gateway) -> None:
    await gateway.services.store.record_block(seeded_block(random.Random(1), 0))


async def suppress_victim(gateway: Gateway) -> None:
    await gateway.services.suppressions.add(
        ["victim@example.org"], source="test", reason="setup", actor="test"
    )


async def suppress_victim_and_block(gateway: Gateway) -> None:
    await suppress_victim(gateway)
    await seed_one_block(gateway)


ENDPOINTS = [
    Endpoint("POST", "/v1/check", "rep", {"channel": "call", "to": NY}),
    Endpoint("GET", "/v1/blocks", "manager"),
    Endpoint("GET", "/v1/blocks/1", "manager", prepare=seed_one_block),
    Endpoint("GET", "/v1/blocks/counts", "manager"),
    Endpoint("GET", "/v1/suppressions", "manager"),
    Endpoint(
        "POST",
        "/v1/suppressions",
        "admin",
        {"addresses": ["someone@example.org"], "reason": "asked by phone"},
    ),
    Endpoint("DELETE", "/v1/suppressions/victim@example.org", "admin", prepare=suppress_victim),
    Endpoint("GET", "/v1/audit", "admin"),
    Endpoint(
        "POST",
        "/v1/consents",
        "admin",
        {
            "subject": NY,
            "channel": "sms",
            "kind": "express",
            "obtained_at": "2026-05-01T10:00:00Z",
            "source": "web form",
        },
    ),
    Endpoint("GET", "/v1/privacy/victim@example.org", "admin", prepare=suppress_victim),
    Endpoint("DELETE", "/v1/privacy/victim@example.org", "owner", prepare=suppress_victim),
    Endpoint("POST", "/v1/purge", "owner", {"confirm": "purge workspace"},
             prepare=suppress_victim_and_block),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
async def test_role_matrix(gateway_factory, endpoint: Endpoint) -> None:
    gateway = await start(gateway_factory)
    answers = {}
    for caller, token in CALLERS.items():
        if endpoint.prepare is not None:
            await endpoint.prepare(gateway)
        reply = await call(gateway, endpoint.method, endpoint.path, token, body=endpoint.body)
        answers[caller] = reply.status
        if reply.status >= 400:
            assert reply.json() == {"error": reply.json()["error"], "status": reply.status}
        if reply.status == 401:
            assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    expected = {
        caller: 401
        if caller not in RANK
        else 200
        if RANK[caller] >= RANK[endpoint.minimum]
        else 403
        for caller in CALLERS
    }
    assert answers == expected


# --- the block log ------------------------------------------------------------------------


def seeded_block(rng: random.Random, n: int) -> BlockRecord:
    """Times are drawn at random, so record order is not time order, and whole minutes
    over ten days, so some blocks share a time."""
    codes = rng.sample(CODES, rng.choice((1, 1, 2)))
    return BlockRecord(
        time=NOW.replace(second=0) - timedelta(minutes=rng.randrange(10 * 24 * 60)),
        channel=rng.choice(list(Channel)),
        account=rng.choice(("demo", "boss", "other")),
        sender="agent@example.com",
        recipient=f"r{rng.randrange(40)}@client.example.net",
        reasons=tuple(Reason(code, f"{code} because", "email.suppression") for code in codes),
        rules_version="v1",
        message_id=f"<m{n}@example.com>",
        subject=f'Subject, "{n}"\nsecond line',
    )


@pytest.fixture
async def seeded(gateway_factory) -> tuple[Gateway, list[BlockRecord]]:
    gateway = await start(gateway_factory)
    rng = random.Random(20260601)
    records = []
    for n in range(SEEDED):
        record = seeded_block(rng, n)
        records.append(replace(record, id=await record_id(gateway, record)))
    return gateway, records


async def record_id(gateway: Gateway, record: BlockRecord) -> int:
    return await gateway.services.store.record_block(record)


def newest_first(records: list[BlockRecord]) -> list[int]:
    return [r.id for r in sorted(records, key=lambda r: (r.time, r.id), reverse=True)]


async def walk(gateway: Gateway, params: dict[str, str], token: str = MANAGER_SECRET) -> list[Any]:
    """Every page, following next_cursor; checks each page against the limit."""
    pages, cursor = [], None
    while True:
        sent = params if cursor is None else {**params, "cursor": cursor}
        reply = await call(gateway, "GET", "/v1/blocks", token, params=sent)
        assert reply.status == 200, reply.text
        body = reply.json()
        pages.append(body["blocks"])
        assert len(body["blocks"]) <= int(params.get("limit", 100))
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_walking_every_page_gives_every_block_once_newest_first(seeded) -> None:
    gateway, records = seeded
    pages = await walk(gateway, {"limit": "137"})
    walked = [b["id"] for page in pages for b in page]
    assert walked == newest_first(records)
    assert len(pages) == -(-SEEDED // 137)
    assert all(len(page) == 137 for page in pages[:-1])


async def test_the_default_page_is_a_hundred_and_a_full_last_page_ends_the_walk(
    seeded,
) -> None:
    gateway, _ = seeded
    reply = await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET)
    assert len(reply.json()["blocks"]) == 100
    pages = await walk(gateway, {"limit": "1000"})
    assert [len(page) for page in pages] == [1000, 1000, 1000]


def chosen(records: list[BlockRecord], **want: Any) -> list[BlockRecord]:
    return [
        r
        for r in records
        if ("since" not in want or r.time >= want["since"])
        and ("until" not in want or r.time < want["until"])
        and ("reason" not in want or want["reason"] in {x.code for x in r.reasons})
        and ("channel" not in want or r.channel.value == want["channel"])
        and ("account" not in want or r.account == want["account"])
        and ("recipient" not in want or r.recipient == want["recipient"])
    ]


async def test_filters_select_what_a_direct_computation_selects(seeded) -> None:
    gateway, records = seeded
    day_ago, three_days_ago = NOW - timedelta(hours=24), NOW - timedelta(days=3)
    cases: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({"since": "24h"}, {"since": day_ago}),
        (
            {"since": "3d", "until": day_ago.isoformat()},
            {"since": three_days_ago, "until": day_ago},
        ),
        ({"until": "2026-05-29T00:00:00"}, {"until": datetime(2026, 5, 29, tzinfo=UTC)}),
        ({"reason": "QUIET_HOURS"}, {"reason": "QUIET_HOURS"}),
        ({"channel": "sms", "account": "boss"}, {"channel": "sms", "account": "boss"}),
        (
            {"recipient": "r7@client.example.net", "reason": "NO_CONSENT"},
            {"recipient": "r7@client.example.net", "reason": "NO_CONSENT"},
        ),
        ({"reason": "QUIET"}, {"reason": "QUIET"}),
    ]
    for params, want in cases:
        expected = newest_first(chosen(records, **want))
        assert expected or params == {"reason": "QUIET"}, "each filter should select some"
        pages = await walk(gateway, {**params, "limit": "250"})
        assert [b["id"] for page in pages for b in page] == expected, params


async def test_a_walk_is_stable_while_blocks_are_recorded(seeded) -> None:
    """A block newer than the walk does not shift later pages; one older than the cursor
    (a slow decision recorded late) is met further on; nothing repeats or goes missing."""
    gateway, records = seeded
    first = (
        await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET, params={"limit": "500"})
    ).json()
    newer = seeded_block(random.Random(2), 1)
    await record_id(gateway, replace(newer, time=NOW))
    late_id = await record_id(gateway, replace(newer, time=NOW - timedelta(days=30)))
    rest = await walk(gateway, {"limit": "500", "cursor": first["next_cursor"]})
    walked = [b["id"] for b in first["blocks"]] + [b["id"] for page in rest for b in page]
    assert walked == [*newest_first(records), late_id]


async def test_csv_pages_parse_back_to_the_json_pages(seeded) -> None:
    gateway, _ = seeded
    params = {"limit": "300", "channel": "email"}
    json_page = (await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET, params=params)).json()
    by_format = await call(
        gateway, "GET", "/v1/blocks", MANAGER_SECRET, params={**params, "format": "csv"}
    )
    by_accept = await call(
        gateway,
        "GET",
        "/v1/blocks",
        MANAGER_SECRET,
        params=params,
        headers={"Accept": "text/csv"},
    )
    assert by_format.text == by_accept.text
    assert by_format.headers["Content-Type"] == "text/csv; charset=utf-8"
    reader = csv.DictReader(io.StringIO(by_format.text))
    assert tuple(reader.fieldnames or ()) == BLOCK_CSV_COLUMNS
    rows = list(reader)
    assert [int(row["id"]) for row in rows] == [b["id"] for b in json_page["blocks"]]
    for row, block in zip(rows, json_page["blocks"], strict=True):
        assert row["time"] == block["time"]
        assert row["subject"] == block["subject"]
        assert row["reasons"].split(",") == block["reasons"]
        assert (row["channel"], row["account"], row["recipient"]) == (
            block["channel"],
            block["account"],
            block["recipient"],
        )
    assert by_format.headers["X-Next-Cursor"] == json_page["next_cursor"]
    forced_json = await call(
        gateway,
        "GET",
        "/v1/blocks",
        MANAGER_SECRET,
        params={**params, "format": "json"},
        headers={"Accept": "text/csv"},
    )
    assert forced_json.json() == json_page


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "5w"}, "until"),
        ({"channel": "fax"}, "channel"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "YjE6LTE="}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"reason": ""}, "reason"),
        ({"sender": "x"}, "sender"),
    ],
)
async def test_bad_block_parameters_are_400_naming_the_parameter(
    gateway_factory, params: dict[str, str], parameter: str
) -> None:
    gateway = await start(gateway_factory)
    reply = await call(gateway, "GET", "/v1/blocks", MANAGER_SECRET, params=params)
    assert reply.status == 400
    assert reply.json()["error"].startswith(f"{parameter}: ")


async def test_a_block_in_full_with_each_reason_cited(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    rules = gateway.services.ruleset
    calling_id = next(iter(rules.calling.rules))
    record = BlockRecord(
        time=NOW,
        channel=Channel.SMS,
        account="demo",
        sender="+14155550100",
        recipient=NY,
        reasons=(
            Reason("SUPPRESSED", "on the list", "email.suppression"),
            Reason("QUIET_HOURS", "too late", calling_id),
            Reason("OLD", "a rule since retired", "retired.rule"),
        ),
        rules_version="v9",
        subject="hi",
        size=12,
    )
    block_id = await record_id(gateway, record)
    reply = await call(gateway, "GET", f"/v1/blocks/{block_id}", MANAGER_SECRET)
    assert reply.status == 200
    body = reply.json()
    assert body["id"] == block_id
    assert body["reasons"] == ["SUPPRESSED", "QUIET_HOURS", "OLD"]
    assert body["rules_version"] == "v9"
    email_rule, calling_rule = rules.rule("email.suppression"), rules.calling.rule(calling_id)
    assert body["reason_details"] == [
        {
            "code": "SUPPRESSED",
            "message": "on the list",
            "rule": "email.suppression",
            "citation": email_rule.citation,
            "confidence": email_rule.confidence,
        },
        {
            "code": "QUIET_HOURS",
            "message": "too late",
            "rule": calling_id,
            "citation": calling_rule.citation,
            "confidence": calling_rule.confidence,
        },
        {
            "code": "OLD",
            "message": "a rule since retired",
            "rule": "retired.rule",
            "citation": None,
            "confidence": None,
        },
    ]
    missing = await call(gateway, "GET", f"/v1/blocks/{block_id + 1}", MANAGER_SECRET)
    assert (missing.status, missing.json()["status"]) == (404, 404)
    assert (await call(gateway, "GET", "/v1/blocks/x1", MANAGER_SECRET)).status == 404


async def test_counts_match_a_direct_computation(seeded) -> None:
    gateway, records = seeded
    windows: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({}, {}),
        ({"since": "2d"}, {"since": NOW - timedelta(days=2)}),
        (
            {"since": "7d", "until": "2026-05-30T06:00:00+02:00"},
            {"since": NOW - timedelta(days=7), "until": datetime(2026, 5, 30, 4, tzinfo=UTC)},
        ),
    ]
    for params, want in windows:
        pairs = Counter(
            (r.channel.value, code)
            for r in chosen(records, **want)
            for code in {x.code for x in r.reasons}
        )
        reply = await call(gateway, "GET", "/v1/blocks/counts", MANAGER_SECRET, params=params)
        assert reply.status == 200
        body = reply.json()
        assert {
            (e["channel"], e["reason"]): e["count"] for e in body["by_channel_and_reason"]
        } == pairs
        by_reason: Counter[str] = Counter()
        by_channel: Counter[str] = Counter()
        for (channel, code), n in pairs.items():
            by_reason[code] += n
            by_channel[channel] += n
        assert body["by_reason"] == dict(by_reason)
        assert body["by_channel"] == dict(by_channel)
    bad = await call(gateway, "GET", "/v1/blocks/counts", MANAGER_SECRET, params={"since": "soon"})
    assert (bad.status, bad.json()["error"].split(":")[0]) == (400, "since")


# --- suppressions, consents and the audit log ---------------------------------------------


async def test_suppressions_added_and_removed_over_the_api_reach_store_and_audit(
    gateway_factory,
) -> None:
    gateway = await start(gateway_factory)
    store = gateway.services.store
    added = await call(
        gateway,
        "POST",
        "/v1/suppressions",
        ADMIN_SECRET,
        body={
            "addresses": ["Bob@Client.Example.NET", "+1 212 555 0123"],
            "reason": "asked on a call",
        },
    )
    assert added.status == 200
    assert added.json() == {"suppressed": ["+12125550123", "bob@client.example.net"], "new": 2}
    assert await store.suppressed(["bob@client.example.net", NY]) == {
        "bob@client.example.net",
        NY,
    }
    listed = await call(
        gateway,
        "GET",
        "/v1/suppressions",
        MANAGER_SECRET,
        params={"address": "bob@client.example.net"},
    )
    (entry,) = listed.json()["suppressions"]
    assert (entry["source"], entry["reason"], entry["actor"]) == ("api", "asked on a call", "ada")

    removed = await call(gateway, "DELETE", "/v1/suppressions/bob@client.example.net", OWNER_SECRET)
    assert (removed.status, removed.json()) == (200, {"removed": "bob@client.example.net"})
    assert await store.suppressed(["bob@client.example.net", NY]) == {NY}
    again = await call(gateway, "DELETE", "/v1/suppressions/bob@client.example.net", ADMIN_SECRET)
    assert again.status == 404

    events = [e for e in await store.audit_events() if e.action.startswith("suppression.")]
    assert [(e.action, e.actor, e.subject) for e in events] == [
        ("suppression.add", "ada", "bob@client.example.net,+12125550123"),
        ("suppression.remove", "olga", "bob@client.example.net"),
    ]
    audit = (await call(gateway, "GET", "/v1/audit", ADMIN_SECRET, params={"limit": "2"})).json()
    assert [(e["action"], e["actor"]) for e in audit["events"]] == [
        ("suppression.remove", "olga"),
        ("suppression.add", "ada"),
    ]
    assert audit["events"][0]["prev_hash"] == audit["events"][1]["hash"]


@pytest.mark.parametrize(
    ("method", "path", "body", "parameter"),
    [
        ("POST", "/v1/suppressions", {"addresses": ["not an address"], "reason": "r"}, "addresses"),
        ("POST", "/v1/suppressions", {"addresses": [], "reason": "r"}, "addresses"),
        ("POST", "/v1/suppressions", {"addresses": ["a@b.com"]}, "reason"),
        ("POST", "/v1/suppressions", {"addresses": ["a@b.com"], "reason": "r", "x": 1}, "x"),
        ("POST", "/v1/suppressions", ["a@b.com"], "body"),
        ("DELETE", "/v1/suppressions/nobody", None, "address"),
        ("GET", "/v1/suppressions?address=%2B1", None, "address"),
        ("GET", "/v1/audit?limit=-1", None, "limit"),
        (
            "POST",
            "/v1/consents",
            {
                "subject": NY,
                "channel": "sms",
                "kind": "forever",
                "obtained_at": "2026-05-01T10:00:00Z",
                "source": "w",
            },
            None,
        ),
        (
            "POST",
            "/v1/consents",
            {
                "subject": NY,
                "channel": "sms",
                "kind": "express",
                "obtained_at": "May 1st",
                "source": "w",
            },
            "obtained_at",
        ),
    ],
)
async def test_bad_admin_requests_are_400(
    gateway_factory, method: str, path: str, body: object, parameter: str | None
) -> None:
    gateway = await start(gateway_factory)
    reply = await call(gateway, method, path, ADMIN_SECRET, body=body)
    assert reply.status == 400, reply.text
    if parameter is not None:
        assert reply.json()["error"].startswith(f"{parameter}: ")
    assert [e for e in await gateway.services.store.audit_events() if e.actor == "ada"] == []


async def test_an_oversized_body_is_413(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    addresses = [f"user{n}@example.com" for n in range(5000)]
    reply = await call(
        gateway,
        "POST",
        "/v1/suppressions",
        ADMIN_SECRET,
        body={"addresses": addresses, "reason": "r"},
    )
    assert (reply.status, reply.json()["status"]) == (413, 413)
    assert await gateway.services.store.list_suppressions() == []


async def test_a_consent_added_over_the_api_is_stored_and_audited(gateway_factory) -> None:
    gateway = await start(gateway_factory)
    store = gateway.services.store
    body = {
        "subject": "+1 (212) 555-0123",
        "channel": "sms",
        "kind": "implied-inquiry",
        "obtained_at": "2026-05-01T10:00:00",
        "source": "web form",
        "evidence": "req 42",
    }
    reply = await call(gateway, "POST", "/v1/consents", ADMIN_SECRET, body=body)
    assert reply.status == 200
    assert reply.json() == {
        "new": 1,
        "consent": {
            "subject": NY,
            "channel": "sms",
            "kind": "implied-inquiry",
            "obtained_at": "2026-05-01T10:00:00+00:00",
            "expires_at": "2026-11-01T10:00:00+00:00",
            "source": "web form",
            "evidence": "req 42",
        },
    }
    (consent,) = (await store.consents_for([NY]))[NY]
    assert (consent.source, consent.evidence) == ("web form", "req 42")
    event = (await store.audit_events())[-1]
    assert (event.action, event.actor, event.subject, event.details) == (
        "consent.add",
        "ada",
        NY,
        {"count": 1, "new": 1},
    )
