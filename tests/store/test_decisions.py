"""The decision log's store contract, on both backends (the `store` fixture of test_store):
recording, reading with evidence, every filter, keyset pages, retention and erasure."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.model import Channel, DecisionOutcome, DecisionRecord, Purpose, Reason
from gateway.store.base import DecisionQuery, Store
from gateway.store.postgres import decisions as postgres_decisions
from gateway.store.sqlite import decisions as sqlite_decisions
from tests.store.test_store import T0, store  # noqa: F401  (the fixture)

ERASURE_KEY = b"erasure-key-for-tests-0123456789"
EVIDENCE = {
    "zones": [{"zone": "America/New_York", "local_time": "2024-05-01T08:00:00.123456-04:00"}],
    "rules": [{"id": "US.window", "citation": "47 CFR 64.1200(c)(1)", "confidence": "high"}],
    "consent": {"kind": "express-written", "source": "web form", "evidence": "row 12"},
    "suppression": [],
    "rewrites": [{"kind": "sms_notice", "text": "Reply STOP to opt out"}],
    "upstream": {"upstream": "outbox", "accepted": True, "id": "SM123"},
}


def decision(
    recipient: str,
    *,
    at: int = 0,
    channel: Channel = Channel.EMAIL,
    codes: tuple[str, ...] = (),
    account: str = "acme",
    sender: str = "agent@acme.example",
    subject: str = "",
    upstream_id: str | None = None,
) -> DecisionRecord:
    return DecisionRecord(
        time=T0 + timedelta(seconds=at),
        channel=channel,
        account=account,
        sender=sender,
        recipient=recipient,
        purpose=Purpose.MARKETING,
        outcome=DecisionOutcome.BLOCKED if codes else DecisionOutcome.ALLOWED,
        reasons=tuple(Reason(code, f"{code} message", f"rule.{code.lower()}") for code in codes),
        rules_version="v1",
        key_id=None,
        upstream_id=upstream_id,
        subject=subject,
        gateway_id=f"g{at}",
        evidence=EVIDENCE,
    )


async def test_a_decision_round_trips_with_its_evidence(store: Store) -> None:  # noqa: F811
    record = replace(
        decision("+12125550123", channel=Channel.SMS, upstream_id="SM123", subject=""),
        key_id="0123456789abcdef", purpose=Purpose.TRANSACTIONAL,
    )
    blocked = decision("bob@x.com", at=1, codes=("SUPPRESSED", "QUIET_HOURS"))

    ids = await store.record_decisions([record, blocked])

    assert len(ids) == 2 and ids[0] < ids[1]
    assert await store.get_decision(ids[0]) == replace(record, id=ids[0])
    assert await store.get_decision(ids[1]) == replace(blocked, id=ids[1])
    assert await store.get_decision(ids[1] + 1) is None
    listed = await store.query_decisions(DecisionQuery())
    assert [d.id for d in listed] == [ids[1], ids[0]]
    assert listed[1] == replace(record, id=ids[0], evidence={}), "a page reads no evidence"
    assert await store.record_decisions([]) == []


@pytest.fixture
async def logged(store: Store) -> tuple[Store, list[int]]:  # noqa: F811
    ids = await store.record_decisions([
        decision("Bob@Example.COM", at=0, subject="Fleet costs =HYPERLINK(1)",
                 upstream_id="pm-1"),
        decision("ann@example.com", at=1, codes=("SUPPRESSED",), subject="Fleet 100%"),
        decision("+12125550123", at=2, channel=Channel.SMS, account="other",
                 sender="+14155550100", upstream_id="SM1"),
        decision("+12125550199", at=3, channel=Channel.CALL, codes=("QUIET_HOURS",),
                 sender="+14155550100"),
        decision("ÉLODIE@exemple.fr", at=4, subject="Réunion ÉTÉ", upstream_id="pm-2"),
    ])
    return store, ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (DecisionQuery(), [4, 3, 2, 1, 0]),
        (DecisionQuery(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3)), [2, 1]),
        (DecisionQuery(channel=Channel.EMAIL), [4, 1, 0]),
        (DecisionQuery(outcome=DecisionOutcome.BLOCKED), [3, 1]),
        (DecisionQuery(outcome=DecisionOutcome.ALLOWED), [4, 2, 0]),
        (DecisionQuery(reason="QUIET_HOURS"), [3]),
        (DecisionQuery(reason="QUIET"), []),
        (DecisionQuery(account="other"), [2]),
        (DecisionQuery(sender="+14155550100"), [3, 2]),
        (DecisionQuery(recipient="bob@EXAMPLE"), [0]),
        (DecisionQuery(recipient="example.com"), [1, 0]),
        (DecisionQuery(recipient="2125550"), [3, 2]),
        (DecisionQuery(recipient="5550123"), [2]),
        (DecisionQuery(recipient="élodie"), [4]),
        (DecisionQuery(text="fleet"), [1, 0]),
        (DecisionQuery(text="=hyperlink("), [0]),
        (DecisionQuery(text="100%"), [1]),
        (DecisionQuery(text="1_0"), []),
        (DecisionQuery(text="été"), [4]),
        (DecisionQuery(upstream_id="SM1"), [2]),
        (DecisionQuery(channel=Channel.EMAIL, outcome=DecisionOutcome.ALLOWED, limit=1), [4]),
    ],
)
async def test_every_filter_narrows_the_log(
    logged: tuple[Store, list[int]], query: DecisionQuery, expected: list[int]
) -> None:
    """Recipient and subject match any part without case (non-ASCII letters too); LIKE's
    wildcards in a search are text."""
    log, ids = logged
    assert [d.id for d in await log.query_decisions(query)] == [ids[n] for n in expected]


async def test_pages_walk_the_whole_log_once_even_while_decisions_are_recorded(
    store: Store,  # noqa: F811
) -> None:
    await store.record_decisions([decision(f"r{n}@x.com", at=n) for n in range(7)])
    seen: list[int] = []
    cursor = None
    while True:
        page = await store.query_decisions(DecisionQuery(limit=3, before_id=cursor))
        if not page:
            break
        seen += [d.id for d in page if d.id is not None]
        cursor = page[-1].id
        # newer ones arriving meanwhile neither repeat nor hide the older ones
        await store.record_decisions([decision("late@x.com", at=100)])
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)


async def test_retention_deletes_decisions_older_than_the_limit_in_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    for module in (sqlite_decisions, postgres_decisions):
        monkeypatch.setattr(module, "DECISION_DELETE_CHUNK", 2)
    await store.record_decisions([decision(f"r{n}@x.com", at=n) for n in range(7)])

    assert await store.delete_decisions(T0 + timedelta(seconds=5)) == 5
    assert [d.recipient for d in await store.query_decisions(DecisionQuery())] == [
        "r6@x.com", "r5@x.com"
    ]
    assert await store.delete_decisions(T0) == 0


async def test_an_erasure_deletes_the_persons_decisions_and_an_export_shows_them(
    store: Store,  # noqa: F811
) -> None:
    """Recipients are recorded as the agent wrote them: an email key matches without case,
    as recipient and as sender."""
    await store.use_erasure_key(ERASURE_KEY)
    ids = await store.record_decisions([
        decision("Bob@X.com"),
        decision("ann@x.com", sender="BOB@x.com"),
        decision("ann@x.com"),
    ])

    exported = await store.personal_data("bob@x.com")
    assert [d.id for d in exported.decisions] == [ids[1], ids[0]]
    assert exported.decisions[0].evidence == EVIDENCE

    counts = await store.erase_personal_data("bob@x.com", T0, "ops@example.com")

    assert counts["decisions"] == 2
    assert [d.id for d in await store.query_decisions(DecisionQuery())] == [ids[2]]
    assert (await store.personal_data("bob@x.com")).decisions == ()


async def test_a_cursor_whose_decision_is_gone_still_moves_the_walk_on(
    store: Store,  # noqa: F811
) -> None:
    ids = await store.record_decisions([decision(f"r{n}@x.com", at=n) for n in range(4)])
    await store.use_erasure_key(ERASURE_KEY)
    await store.erase_personal_data("r2@x.com", T0, "ops@example.com")

    page = await store.query_decisions(DecisionQuery(before_id=ids[2]))

    assert [d.id for d in page] == [ids[1], ids[0]]
