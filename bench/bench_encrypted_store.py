"""Suppression lookups at 10 M entries with encryption on, on SQLite and on PostgreSQL:
bench_store.py with the cipher `gateway serve` derives from `[encryption]` with explicit
keys. The list is filled through `Store.import_suppressions` (COPY on PostgreSQL, one
transaction per million rows on SQLite), so every row is in the form the gateway writes: a
blind index for the address, its sealed copy. Each lookup is `store.suppressed([key])`, the
call the pipeline makes before every message: one indexed read of the key's blind index,
its form in clear (a row written before encryption) and its erased alias, in the address
column and in the mailbox column.

    python bench/bench_encrypted_store.py
"""

from __future__ import annotations

import json

import bench_store
from bench_postgres import PostgresMissing, throwaway_server

DATABASE = "bench_encrypted_store"


def main() -> dict:
    sqlite = bench_store.main(encryption=True)
    try:
        with throwaway_server(DATABASE) as server:
            postgres = bench_store.main(store_url=server.url(DATABASE), encryption=True)
    except PostgresMissing as missing:
        postgres = {"skipped": f"no PostgreSQL binaries: {missing}"}
    return {"benchmark": "suppression lookups at 10 M entries, encryption on",
            "sqlite": sqlite, "postgres": postgres}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
