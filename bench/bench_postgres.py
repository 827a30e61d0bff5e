"""The store and import benchmarks again on PostgreSQL: a throwaway server from the machine's
PostgreSQL binaries (the tests' helper, here with fsync on, as in production), created and
removed by this run. Skipped, saying why, where the binaries are missing."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import bench_import
import bench_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.postgres_server import PostgresMissing, PostgresServer, find_binaries


@contextlib.contextmanager
def throwaway_server(*databases: str) -> Iterator[PostgresServer]:
    """A durable server in a temp dir with `databases` created, removed on the way out;
    PostgresMissing where there are no binaries."""
    server = PostgresServer(find_binaries(), durable=True)
    server.start()
    try:
        for database in databases:
            server.sql(f"CREATE DATABASE {database}")
        yield server
    finally:
        server.destroy()


def main() -> dict:
    try:
        with throwaway_server("bench_store", "bench_import") as server:
            return {
                "benchmark": "store lookups and bulk import on PostgreSQL (fsync on)",
                "store": bench_store.main(store_url=server.url("bench_store")),
                "import": bench_import.main(store_url=server.url("bench_import")),
            }
    except PostgresMissing as missing:
        return {"skipped": f"no PostgreSQL binaries: {missing}"}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
