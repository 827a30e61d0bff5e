"""The console's Activity page, a decision's page and the old block bookmarks, over HTTP:
every filter (and a bad one named in a 400), counts and chart that follow the filters,
keyset pages, export links of exactly the view, citations, roles, and agent-written values
shown only as text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.auth.sessions import Sessions
from gateway.config.settings import Config
from gateway.model import Channel, Reason, Role
from gateway.runtime.clock import Clock
from gateway.server import configured_rules
from gateway.services.decision_reports import evidence_document
from gateway.services.people import Identity, People
from gateway.store.base import Store
from gateway.web.evidence_page import evidence_page
from gateway.web.people_sign_in import SESSION_COOKIE
from gateway.web.review import PAGE_SIZE
from tests.web.test_review import (
    NOW,
    SSO,
    assert_protected,
    block,
    client,  # noqa: F401  (the fixture)
    decision,
    review_app,
    sign_in,
)

CALL_EVIDENCE = {
    "ingress": "twilio-calls",
    "zones": [{"zone": "America/New_York", "local_time": "2026-03-10T07:00:00-04:00"}],
    "rules": [
        {"id": "rule.quiet_hours", "citation": "47 CFR 64.1200(c)(1)", "confidence": "high",
         "effective": "2003-10-01", "until": None},
        {"id": "rule.no_consent", "citation": "47 CFR 64.1200(a)(2)", "confidence": "high"},
    ],
    "consent": None, "suppression": [], "rewrites": [], "upstream": None,
    "country": "US", "regions": ["NY"],
}


def decision_links(page: str) -> list[str]:
    return re.findall(r'href="/review/decisions/(\d+)"', page)


async def seed(store: Store) -> dict[str, int]:
    records = {
        "ann": decision(1, "Ann.Lee@Client.example", subject="Fleet maintenance costs"),
        "bob": decision(2, "bob@client.example", "SUPPRESSED", subject="Fleet offer"),
        "sms": decision(3, "+14155550123", "QUIET_HOURS", channel=Channel.SMS,
                        account="dialer"),
        "call": decision(4, "+14155550124", "QUIET_HOURS", "NO_CONSENT", channel=Channel.CALL,
                         account="dialer", evidence=CALL_EVIDENCE),
        "carl": decision(5, "carl@partner.example", sender="katie@example.com",
                         subject="Quarterly review", upstream_id="pm-42"),
        "old": decision(24 * 30, "old@client.example", "SUPPRESSED"),
    }
    ids = await store.record_decisions(list(records.values()))
    return dict(zip(records, ids, strict=True))


async def text_of(client: TestClient, **params: str) -> str:  # noqa: F811
    response = await client.get("/review", params=params)
    assert response.status == 200, await response.text()
    return await response.text()


async def test_activity_shows_every_decision_of_the_last_seven_days(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    ids = await seed(store)
    await sign_in(client)
    response = await client.get("/review")
    page = await response.text()
    assert_protected(response)
    assert "<h1>Activity</h1>" in page and 'aria-current="page"' in page
    assert decision_links(page) == [str(ids[k]) for k in ("ann", "bob", "sms", "call", "carl")]
    assert "old@client.example" not in page  # outside the default window
    for text in ("allowed", "blocked", "Ann.Lee@Client.example", "Fleet offer", "dialer",
                 "QUIET_HOURS, NO_CONSENT", "katie@example.com"):
        assert text in page, text
    assert "<strong>5</strong>" in page


@pytest.mark.parametrize(("params", "expected"), [
    ({"recipient": "ann.LEE@client"}, ["ann"]),
    ({"recipient": "CLIENT.EXAMPLE"}, ["ann", "bob"]),
    ({"q": "fleet"}, ["ann", "bob"]),
    ({"q": "QUARTERLY"}, ["carl"]),
    ({"outcome": "allowed"}, ["ann", "carl"]),
    ({"outcome": "blocked"}, ["bob", "sms", "call"]),
    ({"reason": "QUIET_HOURS"}, ["sms", "call"]),
    ({"reason": "NO_CONSENT"}, ["call"]),
    ({"sender": "katie@example.com"}, ["carl"]),
    ({"account": "dialer"}, ["sms", "call"]),
    ({"channel": "sms"}, ["sms"]),
    ({"upstream_id": "pm-42"}, ["carl"]),
    ({"since": "60d"}, ["ann", "bob", "sms", "call", "carl", "old"]),
    ({"since": "2026-03-10T08:30", "until": "2026-03-10T10:30"}, ["sms", "bob"]),
    ({"recipient": "  ann.lee  ", "q": "", "since": ""}, ["ann"]),  # as a GET form sends them
])
async def test_each_filter_narrows_the_table(
    client: TestClient, store: Store, params: dict[str, str], expected: list[str]  # noqa: F811
) -> None:
    ids = await seed(store)
    await sign_in(client)
    page = await text_of(client, **params)
    shown = {int(i) for i in decision_links(page)}
    assert shown == {ids[k] for k in expected}, params
    for name, value in params.items():
        if value.strip() and name not in ("channel", "outcome"):
            assert f'name="{name}" value="{value.strip()}"' in page
    if "channel" in params:
        assert f'<option value="{params["channel"]}" selected>' in page


@pytest.mark.parametrize(("params", "named"), [
    ({"since": "last tuesday"}, "since: not an ISO 8601 time"),
    ({"since": "99999999d"}, "since: that span reaches beyond the calendar"),
    ({"since": "1h", "until": "2h"}, "until: must be later than since"),
    ({"since": "2099-01-01"}, "since: must be earlier than until"),
    ({"until": "0001-01-02"}, "until: too early to have 7 days before it"),
    ({"channel": "fax"}, "channel: must be one of email, sms, call"),
    ({"outcome": "maybe"}, "outcome: must be one of allowed, blocked"),
    ({"reason": "quiet hours"}, "reason: must be a reason code"),
    ({"recipient": "a\x01b"}, "recipient: must not contain control characters"),
    ({"q": "x" * 201}, "q: at most 200 characters"),
    ({"cursor": "nonsense"}, "cursor: not a cursor this API gave out"),
    ({"format": "csv"}, "format: unknown parameter"),
])
async def test_a_bad_filter_is_a_400_naming_it(
    client: TestClient, params: dict[str, str], named: str  # noqa: F811
) -> None:
    await sign_in(client)
    response = await client.get("/review", params=params)
    page = await response.text()
    assert response.status == 400, params
    assert_protected(response)
    assert 'role="alert"' in page and named in page.replace("&#39;", "'"), page
    assert '<form method="get" action="/review">' in page  # the form stays, to fix it


async def test_a_repeated_filter_is_a_400(client: TestClient) -> None:  # noqa: F811
    await sign_in(client)
    response = await client.get("/review?account=a&account=b")
    assert response.status == 400
    assert "account: given more than once" in await response.text()


def table_rows(page: str, caption: str) -> dict[str, list[int]]:
    start = page.index(f"<caption>{caption}")
    table = page[start:page.index("</table>", start)]
    return {
        name: [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', cells)]
        for name, cells in re.findall(
            r'<th scope="row">(?:<a [^>]*>)?(\w+)(?:</a>)?</th>(.*?)</tr>', table)
    }


async def test_counts_and_chart_follow_the_filters(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    await seed(store)
    await sign_in(client)
    page = await text_of(client)
    assert table_rows(page, "Decisions per channel and outcome") == {
        "email": [2, 1], "sms": [0, 1], "call": [0, 1]}
    assert table_rows(page, "Blocked decisions per reason") == {
        "QUIET_HOURS": [0, 1, 1], "SUPPRESSED": [1, 0, 0], "NO_CONSENT": [0, 0, 1]}
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert 'role="img"' in svg
    # One 6-hour bucket (06:00 to 12:00) holds all five: blocked stacked on allowed.
    assert re.findall(r'class="(\w+)"><title>([^<]+)</title>', svg) == [
        ("allowed", "2026-03-10 06:00 UTC: 2 allowed"),
        ("blocked", "2026-03-10 06:00 UTC: 3 blocked")]
    assert "5 decisions (3 blocked) in buckets of 6 hours" in page

    narrowed = await text_of(client, account="dialer")
    assert table_rows(narrowed, "Decisions per channel and outcome") == {
        "email": [0, 0], "sms": [0, 1], "call": [0, 1]}
    assert table_rows(narrowed, "Blocked decisions per reason") == {
        "QUIET_HOURS": [0, 1, 1], "NO_CONSENT": [0, 0, 1]}
    svg = narrowed[narrowed.index("<svg"):narrowed.index("</svg>")]
    assert svg.count("<rect") == 1 and 'class="allowed"' not in svg
    assert "2 decisions (2 blocked)" in narrowed
    # A reason's link keeps the other filters.
    assert 'href="/review?account=dialer&amp;reason=NO_CONSENT"' in narrowed

    allowed = await text_of(client, outcome="allowed", q="FLEET")
    assert "1 decision (0 blocked)" in allowed
    assert "No decision with these filters was blocked." in allowed


async def test_pages_walk_newest_first_without_overlap_keeping_the_filters(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    total = PAGE_SIZE + 7
    await store.record_decisions([
        decision((total - i) / 10, f"r{i}@example.org", "SUPPRESSED") for i in range(total)
    ] + [decision(1.5, "other@example.org")])
    await sign_in(client)
    first = await text_of(client, outcome="blocked")
    first_ids = decision_links(first)
    assert len(first_ids) == PAGE_SIZE
    assert "First page" not in first
    # more than a page matches: the store counts the window, for every page alike
    assert f"{total} decisions ({total} blocked)" in first
    link = re.search(r'<a href="(/review\?[^"]+)" rel="next">Next page</a>', first)
    assert link is not None
    url = link.group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(url).query)["outcome"] == ["blocked"]

    second = await (await client.get(url)).text()
    second_ids = decision_links(second)
    assert len(second_ids) == total - PAGE_SIZE
    assert f"{total} decisions ({total} blocked)" in second
    assert not set(first_ids) & set(second_ids)
    assert [int(i) for i in first_ids + second_ids] == sorted(
        (int(i) for i in first_ids + second_ids), reverse=True)
    assert 'rel="next"' not in second and "First page" in second
    assert "other@example.org" not in second


async def test_export_links_hold_exactly_the_filtered_view(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    await sign_in(client)
    page = await text_of(client, recipient="Client", outcome="blocked", since="2d")
    links = dict(re.findall(r'<a href="(/v1/decisions\?[^"]+)">(CSV|JSON)</a>', page))
    assert set(links.values()) == {"CSV", "JSON"}
    for url, kind in links.items():
        query = parse_qs(urlsplit(url.replace("&amp;", "&")).query)
        since, until = query.pop("since"), query.pop("until")
        assert query == {"recipient": ["Client"], "outcome": ["blocked"], "format": [kind.lower()]}
        # The window as the page resolved it: absolute, so the file is what was counted.
        assert abs(datetime.fromisoformat(until[0]) - NOW) < timedelta(seconds=5)
        assert datetime.fromisoformat(until[0]) - datetime.fromisoformat(since[0]) == timedelta(
            days=2)


async def test_a_decision_page_shows_every_field_reasons_with_citations_and_evidence(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    ids = await seed(store)
    await sign_in(client)
    response = await client.get(f"/review/decisions/{ids['call']}")
    page = await response.text()
    assert response.status == 200
    assert_protected(response)
    assert f"<h1>Decision {ids['call']}</h1>" in page
    for text in ("blocked", "call", "dialer", "+14155550100", "+14155550124", "marketing",
                 "rules-2026-03", "gw-1", "none (the account&#39;s own secret)",
                 "none: nothing went out",
                 "QUIET_HOURS", "quiet_hours applies", "rule.quiet_hours",
                 "47 CFR 64.1200(c)(1)", "NO_CONSENT", "47 CFR 64.1200(a)(2)",
                 "America/New_York", "2026-03-10T07:00:00-04:00", "from 2003-10-01 until now",
                 "country", "NY",
                 f'href="/v1/decisions/{ids["call"]}/evidence">Printable evidence'):
        assert text in page, text
    assert "bytes" not in page and "Size" not in page  # a call has no size

    missing = await client.get("/review/decisions/999999")
    assert missing.status == 404
    assert_protected(missing)


async def test_the_decision_page_and_the_printable_evidence_share_their_sections(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    ids = await seed(store)
    await sign_in(client)
    console = await (await client.get(f"/review/decisions/{ids['call']}")).text()
    record = await store.get_decision(ids["call"])
    assert record is not None
    printable = evidence_page(evidence_document(record)).text or ""

    def sections(page: str) -> list[str]:
        return re.findall(r"<section>.*?</section>", page, re.S)

    assert len(sections(console)) == 9
    assert sections(console) == sections(printable)
    assert "Signed in as" not in printable  # a page to print, without the console


async def test_a_reason_the_evidence_does_not_cite_is_cited_from_the_rules_loaded_now(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    config = config_factory()
    rules = configured_rules(config)
    record = decision(1, "a@example.org", "SUPPRESSED", evidence={"zones": [], "rules": []})
    record = replace(record, reasons=(Reason("SUPPRESSED", "on the list", "email.suppression"),))
    (decision_id,) = await store.record_decisions([record])
    app = review_app(store, config)
    async with TestClient(TestServer(app)) as test_client:
        await sign_in(test_client)
        page = await (await test_client.get(f"/review/decisions/{decision_id}")).text()
        assert "(not in the rules)" in page  # no rules given to this app
    cited = review_app(store, config, rules=lambda: rules)
    async with TestClient(TestServer(cited)) as test_client:
        await sign_in(test_client)
        page = await (await test_client.get(f"/review/decisions/{decision_id}")).text()
        assert rules.rule("email.suppression").citation in page


async def test_an_old_block_bookmark_opens_its_decision_or_the_block(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    ids = await seed(store)
    with_decision = await store.record_block(
        block(2, "bob@client.example", "SUPPRESSED", subject="Fleet offer"))
    sms = await store.record_block(block(3, "+14155550999", "QUIET_HOURS", channel=Channel.SMS,
                                         subject=""))
    email = await store.record_block(block(30, "x@example.org", "SUPPRESSED"))
    await sign_in(client)
    response = await client.get(f"/review/blocks/{with_decision}", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"/review/decisions/{ids['bob']}"

    page = await (await client.get(f"/review/blocks/{sms}")).text()
    assert f"<h1>Block {sms}</h1>" in page
    assert "rule.quiet_hours" in page and "quiet_hours applies" in page
    assert "bytes" not in page and "Size" not in page  # a text has no size
    page = await (await client.get(f"/review/blocks/{email}")).text()
    assert "1234 bytes" in page and "&lt;m1@example.com&gt;" in page
    assert (await client.get("/review/blocks/999999")).status == 404


async def test_signed_out_visitors_are_sent_to_sign_in(client: TestClient) -> None:  # noqa: F811
    for path in ("/review", "/review?outcome=blocked", "/review/decisions/1",
                 "/review/blocks/1"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"] == "/review/login"


async def test_a_rep_is_refused_with_403(
    store: Store, config_factory: Callable[..., Config]
) -> None:
    await seed(store)
    clock = Clock(NOW)
    sessions = Sessions(store, clock)
    person, _ = await People(store, sessions, clock).signed_in(
        Identity("rae@acme.example", "okta|9", "Rae", ("agents",)), {"agents": Role.REP})
    token = await sessions.open(role="rep", method="oidc:okta", person_id=person.person_id)
    app = review_app(store, config_factory(), clock=clock, sso=SSO)
    async with TestClient(TestServer(app)) as test_client:
        for path in ("/review", "/review/decisions/1", "/review/blocks/1"):
            response = await test_client.get(
                path, headers={"Cookie": f"{SESSION_COOKIE}={token}"}, allow_redirects=False)
            page = await response.text()
            assert response.status == 403, path
            assert "needs the manager role" in page
            assert "Ann.Lee@Client.example" not in page


# --- agent-written values are text ---------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
JS_URL = "javascript:alert(1)"


class Elements(HTMLParser):
    """Every element and attribute the browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)


def assert_only_text(page: str) -> None:
    elements = Elements()
    elements.feed(page)
    assert "script" not in elements.tags and "img" not in elements.tags
    assert not [name for name, _ in elements.attributes if name.startswith("on")]
    assert not [v for name, v in elements.attributes
                if name in ("href", "src", "action") and v.lower().startswith("javascript:")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


async def test_agent_written_values_are_shown_as_text_only(
    client: TestClient, store: Store  # noqa: F811
) -> None:
    hostile = decision(
        1, f'"{SCRIPT}" <{JS_URL}@example.org>', "SUPPRESSED",
        account=f"acct{IMG}", sender=f"{IMG}@example.com", subject=f"{SCRIPT}{IMG} {JS_URL}",
    )
    hostile = replace(hostile, reasons=(Reason("SUPPRESSED", f"{SCRIPT}{IMG}", f"rule{IMG}"),))
    (decision_id,) = await store.record_decisions([hostile])
    with_evidence = decision(2, f"{SCRIPT}@example.org", subject=SCRIPT, evidence={
        **CALL_EVIDENCE, "consent": {"kind": "express-written", "evidence": IMG},
        "suppression": [SCRIPT], "rewrites": [{"kind": "footer", "text": IMG}],
        "upstream": {"upstream": "outbox", "accepted": True, "id": IMG},
        "problem": SCRIPT,
    })
    (allowed_id,) = await store.record_decisions([with_evidence])
    block_id = await store.record_block(block(1, f"{SCRIPT}@example.org", "SUPPRESSED",
                                              subject=f"{SCRIPT}{IMG}"))
    await sign_in(client)
    pages = [
        await text_of(client),
        await text_of(client, q="<script>", recipient=JS_URL),
        await (await client.get(f"/review/decisions/{decision_id}")).text(),
        await (await client.get(f"/review/decisions/{allowed_id}")).text(),
        await (await client.get(f"/review/blocks/{block_id}")).text(),
    ]
    record = await store.get_decision(allowed_id)
    assert record is not None
    pages.append(evidence_page(evidence_document(record)).text or "")
    for page in pages:
        assert_only_text(page)
    bad = await client.get("/review", params={"account": SCRIPT, "reason": IMG})
    assert bad.status == 400
    elements = Elements()
    elements.feed(await bad.text())
    assert "script" not in elements.tags and "img" not in elements.tags

