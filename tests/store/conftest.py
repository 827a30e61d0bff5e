"""What the store tests of encryption at rest share: a store with a random data key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from tests.store.test_sealed_lookup_tables import ERASURE_KEY, Sealed, new_cipher
from tests.store.test_store import backend_url


@pytest.fixture(params=["sqlite", "postgres"])
async def sealed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sealed]:
    """A store given a random data key (and an erasure key) before anything is written."""
    url = backend_url(request, tmp_path)
    store = open_store(url)
    await store.open()
    cipher = new_cipher()
    await store.use_data_cipher(cipher)
    await store.use_erasure_key(ERASURE_KEY)
    path = tmp_path / "data" / "gateway.db" if request.param == "sqlite" else None
    yield Sealed(store, cipher, request.param, url, path)
    await store.close()
