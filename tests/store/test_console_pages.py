"""The console's list pages read the suppression list and the consent registry a page at a
time, after the previous page's last key: on both backends, a walk through the pages
matches the whole filtered list, in key order, without repeats or gaps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from gateway.model import Channel, Consent, ConsentKind, Suppression
from gateway.store.base import ConsentQuery, Store, SuppressionQuery
from tests.store.test_store import T0, consent, store, suppression  # noqa: F401

Row = TypeVar("Row")


async def walk(
    read: Callable[[object], Awaitable[list[Row]]],
    first: object,
    next_query: Callable[[Row], object],
) -> list[list[Row]]:
    pages, query = [], first
    while True:
        page = await read(query)
        if not page:
            return pages
        pages.append(page)
        query = next_query(page[-1])


def suppressions() -> list[Suppression]:
    rows = [suppression(f"person{i:02}@Example.org".lower()) for i in range(12)]
    rows += [suppression(f"+1415555{i:04}") for i in range(5)]
    # A second source for one address: its entries sort by source.
    rows += [suppression("person03@example.org", source="api")]
    return rows


async def test_suppression_pages_walk_the_list_in_key_order(store: Store) -> None:  # noqa: F811
    await store.add_suppressions(suppressions())
    everything = await store.list_suppressions()

    pages = await walk(
        store.suppression_page,  # type: ignore[arg-type]
        SuppressionQuery(limit=5),
        lambda last: SuppressionQuery(after=(last.address, last.source), limit=5),
    )

    assert [len(page) for page in pages] == [5, 5, 5, 3]
    assert [e for page in pages for e in page] == everything
    assert [(e.address, e.source) for e in pages[0][3:5]] == [
        ("+14155550003", "import"), ("+14155550004", "import")]


async def test_suppression_search_matches_any_part_without_case(store: Store) -> None:  # noqa: F811
    await store.add_suppressions(suppressions())

    found = await store.suppression_page(SuppressionQuery(text="SON0", limit=3))
    rest = await store.suppression_page(SuppressionQuery(
        text="SON0", after=(found[-1].address, found[-1].source), limit=50))

    assert [e.address for e in found] == [
        "person00@example.org", "person01@example.org", "person02@example.org"]
    assert [(e.address, e.source) for e in rest][:3] == [
        ("person03@example.org", "api"), ("person03@example.org", "import"),
        ("person04@example.org", "import")]
    assert len(found) + len(rest) == 11
    assert await store.suppression_page(SuppressionQuery(text="5550004")) == [
        suppression("+14155550004")]
    assert await store.suppression_page(SuppressionQuery(text="%")) == []
    assert await store.suppression_page(SuppressionQuery(text="_")) == []


def consents() -> list[Consent]:
    rows = [consent(f"+1415555{i:04}", at=T0 + timedelta(days=i)) for i in range(6)]
    rows += [consent("+14155550001", channel=Channel.CALL, kind=ConsentKind.EBR,
                     expires_at=T0 + timedelta(days=500))]
    rows += [consent("+14155550001", at=T0 + timedelta(days=30))]
    rows += [consent("lead@example.org", channel=Channel.EMAIL)]
    return rows


async def test_consent_pages_walk_the_registry_in_key_order(store: Store) -> None:  # noqa: F811
    await store.add_consents(consents())
    expected = sorted(consents(), key=lambda c: (c.subject, c.channel.value, c.kind.value,
                                                 c.obtained_at))

    pages = await walk(
        store.consent_page,  # type: ignore[arg-type]
        ConsentQuery(limit=2),
        lambda last: ConsentQuery(
            after=(last.subject, last.channel, last.kind, last.obtained_at), limit=2),
    )

    assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
    assert [c for page in pages for c in page] == expected


async def test_consent_search_by_subject_and_channel(store: Store) -> None:  # noqa: F811
    await store.add_consents(consents())

    sms = await store.consent_page(ConsentQuery(text="5550001", channel=Channel.SMS))
    email = await store.consent_page(ConsentQuery(text="LEAD@EXAMPLE"))
    after = await store.consent_page(ConsentQuery(
        text="5550001", after=(sms[0].subject, sms[0].channel, sms[0].kind, sms[0].obtained_at)))

    assert [(c.subject, c.obtained_at) for c in sms] == [
        ("+14155550001", T0 + timedelta(days=1)), ("+14155550001", T0 + timedelta(days=30))]
    assert [c.subject for c in email] == ["lead@example.org"]
    assert [(c.channel, c.obtained_at) for c in after] == [
        (Channel.SMS, T0 + timedelta(days=30))]
    call = await store.consent_page(ConsentQuery(channel=Channel.CALL))
    assert [(c.kind, c.expires_at) for c in call] == [
        (ConsentKind.EBR, T0 + timedelta(days=500))]
