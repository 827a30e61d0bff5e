"""The suppression list's per-entry reads and audited removals, on both backends: which
sources hold a recipient (`suppression_entries`), and lifting one source's entry with its
audit entry in the same transaction (`remove_suppressions_from_source(audit=...)`), as the
unsubscribe page's undo does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.model import AuditEvent, Suppression
from gateway.store import open_store
from gateway.store.base import Store
from tests.store.test_store import T0, backend_url, suppression

LINK = "one-click:0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(backend_url(request, tmp_path))
    await opened.open()
    yield opened
    await opened.close()


def removal(removed: Sequence[Suppression]) -> AuditEvent:
    return AuditEvent(
        time=T0, actor="recipient via /u", action="suppression.remove",
        subject=",".join(e.address for e in removed),
        details={"removed": [[e.address, e.source, e.reason] for e in removed]},
    )


async def test_entries_are_found_by_address_or_mailbox(store: Store) -> None:
    dotted = replace(suppression("bob.smith@gmail.com", source=LINK), mailbox="bobsmith@gmail.com")
    await store.add_suppressions([
        dotted,
        replace(suppression("bobsmith@gmail.com", source="api"), mailbox="bobsmith@gmail.com"),
        suppression("+14155550100", source="sms-keyword"),
        suppression("other@example.com"),
    ])
    found = await store.suppression_entries(["bobsmith@gmail.com"])
    assert [(e.address, e.source) for e in found] == [
        ("bob.smith@gmail.com", LINK), ("bobsmith@gmail.com", "api"),
    ]
    assert found[0] == dotted
    assert [e.source for e in await store.suppression_entries(["+14155550100"])] == [
        "sms-keyword"
    ]
    assert await store.suppression_entries(["nobody@example.com", ""]) == []
    assert await store.suppression_entries([]) == []


async def test_an_audited_removal_lifts_only_that_source_and_records_it(store: Store) -> None:
    address = "bob@client.example.net"
    await store.add_suppressions([
        suppression(address, source=LINK),
        suppression(address, source="one-click:fedcba9876543210"),
        suppression(address, source="postmark:spam-complaint"),
    ])
    assert await store.remove_suppressions_from_source([address], LINK, audit=removal) == 1
    assert [e.source for e in await store.suppression_entries([address])] == [
        "one-click:fedcba9876543210", "postmark:spam-complaint",
    ]
    events = await store.audit_events()
    assert [(e.actor, e.action) for e in events] == [("recipient via /u", "suppression.remove")]
    assert events[0].details["removed"] == [[address, LINK, f"reason for {address}"]]
    assert await store.verify_audit() is None


async def test_an_audited_removal_of_nothing_writes_nothing(store: Store) -> None:
    await store.add_suppressions([suppression("bob@client.example.net", source="api")])
    assert await store.remove_suppressions_from_source(
        ["bob@client.example.net", "carol@client.example.net"], LINK, audit=removal
    ) == 0
    assert await store.audit_events() == []
    assert await store.suppressed(["bob@client.example.net"]) == {"bob@client.example.net"}


async def test_an_audited_removal_keeps_entries_recorded_later(store: Store) -> None:
    address = "bob@client.example.net"
    await store.add_suppressions([suppression(address, source=LINK, at=T0)])
    kept = await store.remove_suppressions_from_source(
        [address], LINK, recorded_before=T0, audit=removal
    )
    assert kept == 0 and await store.audit_events() == []
    assert await store.remove_suppressions_from_source(
        [address], LINK, recorded_before=T0 + timedelta(microseconds=1), audit=removal
    ) == 1
    assert await store.suppressed([address]) == frozenset()


async def test_an_audit_that_fails_removes_nothing(store: Store) -> None:
    await store.add_suppressions([suppression("bob@client.example.net", source=LINK)])

    def broken(removed: Sequence[Suppression]) -> AuditEvent:
        raise RuntimeError("audit cannot be written")

    with pytest.raises(RuntimeError):
        await store.remove_suppressions_from_source(
            ["bob@client.example.net"], LINK, audit=broken
        )
    assert await store.suppressed(["bob@client.example.net"]) == {"bob@client.example.net"}
