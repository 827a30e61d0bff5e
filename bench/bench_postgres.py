"""The store and import benchmarks again on PostgreSQL: a throwaway server from the machine's
PostgreSQL binaries (the tests' helper, here with fsync on, as in production), created and
removed by this run. Skipped, saying why, where the binaries are missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bench_import
import bench_store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.postgres_server import PostgresMissing, PostgresServer, find_binaries


def main() -> dict:
    try:
        binaries = find_binaries()
    except PostgresMissing as missing:
        return {"skipped": f"no PostgreSQL binaries: {missing}"}
    server = PostgresServer(binaries, durable=True)
    server.start()
    try:
        for database in ("bench_store", "bench_import"):
            server.sql(f"CREATE DATABASE {database}")
        return {
            "benchmark": "store lookups and bulk import on PostgreSQL (fsync on)",
            "store": bench_store.main(store_url=server.url("bench_store")),
            "import": bench_import.main(store_url=server.url("bench_import")),
        }
    finally:
        server.destroy()


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
