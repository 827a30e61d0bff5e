"""Versioned schema migrations, shared by every store backend.

Migrations are SQL files named `NNNN_name.sql` under `migrations/<backend>/`, shipped as
package data. Finding and ordering them lives here and knows nothing about any database
driver; a backend supplies a `MigrationTarget` (or, for an asyncio driver, an
`AsyncMigrationTarget`) that runs one migration on its connection.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Protocol

VERSION_TABLE_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)


class MigrationTarget(Protocol):
    """One backend connection, as the runner needs it."""

    def ensure_version_table(self) -> None:
        """Create `schema_migrations` (VERSION_TABLE_DDL) if it does not exist."""

    def applied_versions(self) -> set[int]: ...

    def apply(self, migration: Migration) -> bool:
        """Run the migration and record it in one transaction.

        Returns False without changing anything when the version is already recorded, which
        happens when another process migrated the same database first.
        """


class AsyncMigrationTarget(Protocol):
    """`MigrationTarget` for a backend whose driver is asynchronous."""

    async def ensure_version_table(self) -> None: ...

    async def applied_versions(self) -> set[int]: ...

    async def apply(self, migration: Migration) -> bool: ...


def migration_directory(backend: str) -> Traversable:
    return resources.files("gateway.store").joinpath("migrations", backend)


def discover_migrations(directory: Traversable) -> list[Migration]:
    """Every `.sql` migration in `directory`, oldest first.

    A misnamed `.sql` file or a repeated version is an error rather than skipped, because
    silently not applying part of the schema would surface much later as a missing table.
    """
    by_version: dict[int, Migration] = {}
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match["version"])
        if version in by_version:
            raise ValueError(f"more than one migration has version {version}")
        by_version[version] = Migration(version, match["name"], entry.read_text("utf-8"))
    return [by_version[version] for version in sorted(by_version)]


def pending_migrations(available: Sequence[Migration], applied: Collection[int]) -> list[Migration]:
    return [migration for migration in available if migration.version not in applied]


def run_migrations(target: MigrationTarget, available: Sequence[Migration]) -> list[Migration]:
    """Apply what is pending, in order; returns the migrations this call applied."""
    target.ensure_version_table()
    applied: list[Migration] = []
    for migration in pending_migrations(available, target.applied_versions()):
        if target.apply(migration):
            applied.append(migration)
    return applied


async def run_migrations_async(
    target: AsyncMigrationTarget, available: Sequence[Migration]
) -> list[Migration]:
    """`run_migrations` for an `AsyncMigrationTarget`."""
    await target.ensure_version_table()
    applied: list[Migration] = []
    for migration in pending_migrations(available, await target.applied_versions()):
        if await target.apply(migration):
            applied.append(migration)
    return applied
