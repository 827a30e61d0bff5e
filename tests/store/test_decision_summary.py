"""decision_summary on both backends (the `store` fixture of test_store): the console's
counts and chart follow every filter of DecisionQuery, bucketed on the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import Channel, DecisionOutcome
from gateway.store.base import DecisionQuery, DecisionSummary, Store
from gateway.store.core import summary_of_decisions
from tests.store.test_decisions import decision
from tests.store.test_store import T0, store  # noqa: F401  (the fixture)

HOUR = 3600
WINDOW = {"since": T0 - timedelta(hours=1), "until": T0 + timedelta(hours=5)}


async def seeded(store: Store) -> None:  # noqa: F811
    await store.record_decisions([
        decision("Ann@Client.example", at=0, subject="Fleet costs", upstream_id="up-1"),
        decision("bob@client.example", at=60, codes=("SUPPRESSED",), subject="Fleet offer"),
        decision("+12125550123", at=HOUR, channel=Channel.SMS, codes=("QUIET_HOURS",
                                                                       "NO_CONSENT")),
        decision("+12125550124", at=2 * HOUR, channel=Channel.CALL, account="dialer",
                 sender="+14155550100", upstream_id="CA1"),
        decision("old@client.example", at=-3 * HOUR, codes=("SUPPRESSED",)),
    ])


async def summary(store: Store, **filters: object) -> DecisionSummary:  # noqa: F811
    query = DecisionQuery(**{**WINDOW, **filters})  # type: ignore[arg-type]
    return await store.decision_summary(query, HOUR)


async def test_the_window_is_counted_per_channel_outcome_reason_and_bucket(
    store: Store,  # noqa: F811
) -> None:
    await seeded(store)
    found = await summary(store)
    assert found.total == 4  # the decision 3 hours before T0 is outside the window
    assert found.counts == (
        ("call", "allowed", 1), ("email", "allowed", 1), ("email", "blocked", 1),
        ("sms", "blocked", 1),
    )
    assert found.reasons == (
        ("email", "SUPPRESSED", 1), ("sms", "NO_CONSENT", 1), ("sms", "QUIET_HOURS", 1),
    )
    start = datetime.fromtimestamp(int(T0.timestamp()) // HOUR * HOUR, UTC)
    assert found.series == (
        (start, "allowed", 1), (start, "blocked", 1),
        (start + timedelta(hours=1), "blocked", 1),
        (start + timedelta(hours=2), "allowed", 1),
    )


@pytest.mark.parametrize(("filters", "total"), [
    ({"recipient": "ANN@client"}, 1),
    ({"text": "fleet"}, 2),
    ({"outcome": DecisionOutcome.BLOCKED}, 2),
    ({"outcome": DecisionOutcome.ALLOWED, "channel": Channel.EMAIL}, 1),
    ({"reason": "NO_CONSENT"}, 1),
    ({"account": "dialer"}, 1),
    ({"sender": "+14155550100"}, 1),
    ({"upstream_id": "up-1"}, 1),
    ({"channel": Channel.SMS}, 1),
    ({"until": T0 + timedelta(minutes=30)}, 2),
])
async def test_every_filter_narrows_the_counts_as_it_narrows_the_page(
    store: Store, filters: dict[str, object], total: int  # noqa: F811
) -> None:
    await seeded(store)
    found = await summary(store, **filters)
    page = await store.query_decisions(
        DecisionQuery(**{**WINDOW, **filters}, limit=100)  # type: ignore[arg-type]
    )
    assert found.total == len(page) == total
    assert sum(n for _, _, n in found.series) == total
    blocked = {d.channel.value for d in page if d.reasons}
    assert {channel for channel, _, _ in found.reasons} == blocked


async def test_a_summary_needs_a_window_and_a_positive_bucket(store: Store) -> None:  # noqa: F811
    with pytest.raises(ValueError):
        await store.decision_summary(DecisionQuery(since=T0), HOUR)
    with pytest.raises(ValueError):
        await store.decision_summary(DecisionQuery(**WINDOW), 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("filters", [
    {}, {"recipient": "client"}, {"outcome": DecisionOutcome.BLOCKED}, {"channel": Channel.SMS},
    {"reason": "QUIET_HOURS"},
])
@pytest.mark.parametrize("bucket_s", [60, HOUR, 6 * HOUR])
async def test_a_page_that_holds_every_match_counts_as_the_store_does(
    store: Store, filters: dict[str, object], bucket_s: int  # noqa: F811
) -> None:
    """The console counts a first page that holds every match itself (one read of the
    window, not two): it must agree with the store's own count, cell for cell."""
    await seeded(store)
    query = DecisionQuery(**{**WINDOW, **filters}, limit=100)  # type: ignore[arg-type]
    page = await store.query_decisions(query)
    assert page, "the filter should match something"
    assert summary_of_decisions(page, bucket_s) == await store.decision_summary(query, bucket_s)
