"""The console tests' SQLite store: one per test, at `db_path` (a test may read the file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.store.base import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "console.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{db_path}")
    await opened.open()
    yield opened
    await opened.close()
