"""Console store queries under hostile input, on both backends: partial searches without
case must match the same rows on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.model import AuditEvent
from gateway.store import open_store
from gateway.store.base import AuditQuery, Store
from tests.store.test_store import T0, backend_url


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(backend_url(request, tmp_path))
    await opened.open()
    yield opened
    await opened.close()


async def test_an_actor_with_non_ascii_capitals_is_found_by_its_own_name(store: Store) -> None:
    """The actor filter folded the term with Python's lower() but the column with SQL's
    (ASCII only on SQLite and under a C collation): a person called Ümit Öz was not found
    by their own name. Now both sides fold A-Z only, on both backends: ASCII letters match
    without case, any other character exactly, and the two stores agree."""
    for n, actor in enumerate(("Ümit.Öz@acme.example", "ÅSA", "olga")):
        await store.append_audit(AuditEvent(T0 + timedelta(minutes=n), actor, "review.signin"))

    async def actors(text: str) -> list[str]:
        return [e.actor for e in await store.query_audit(AuditQuery(actor=text))]

    assert await actors("Ümit.Öz@acme.example") == ["Ümit.Öz@acme.example"]
    assert await actors("ÜMIT") == ["Ümit.Öz@acme.example"]
    assert await actors("Öz@ACME") == ["Ümit.Öz@acme.example"]
    assert await actors("ÅSA") == ["ÅSA"]
    assert await actors("Åsa") == ["ÅSA"]
    assert await actors("ümit") == [], "no store folds Ü (PostgreSQL did under a Unicode collation)"
