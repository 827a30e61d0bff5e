"""Suppression lookup latency through the `Store` interface at 1 M and 10 M entries.

Each lookup is `store.suppressed([key])` as the pipeline makes it before every message (with
an erasure key set, as the gateway runs: the key's erased alias is looked up too), one at a
time, half hits and half misses in random order. Baseline in the same run: the same keys as
a raw sqlite3 `SELECT` on the same database file (SQLite only). The store is filled through
`Store.import_suppressions` in chunks of distinct, increasing numbers; the database lives in
a temp dir for the run only.

With `--encryption` the store gets its cipher as `gateway serve` gives it one
(`services.data_keys` from an `[encryption]` section with explicit keys): the fill writes
blind indexes and sealed copies, each lookup asks for a key's blind index, its form in clear
and its erased alias, and the raw baseline selects the blind index.

    python bench/bench_store.py [--sizes 1000000,10000000] [--lookups 10000] [--store-url URL]
        [--encryption]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from harness import gateway_config

from gateway.config.settings import load_config
from gateway.model import AuditEvent
from gateway.services.data_keys import data_keys
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.sealing import PLAIN, DataCipher

FILL_CHUNK = 1_000_000
NOW = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
ERASURE_KEY = b"bench-erasure-key-0123456789abcdef"
ENCRYPTION = """
[encryption]
enabled = true
keys = { d1 = "ZGF0YS1rZXktZm9yLXRoZS1iZW5jaG1hcmtzLTAxMjM=" }
"""


async def gateway_cipher(store: Store, directory: Path) -> DataCipher:
    """The cipher `gateway serve` would give this store with ENCRYPTION configured: its
    index key is made and kept (wrapped) in the store, as on a first start."""
    config_file = directory / "gateway.toml"
    config_file.write_text(gateway_config({"smtp": 0, "http": 0}) + ENCRYPTION)
    keys = await data_keys(load_config(config_file), store, NOW)
    return keys.cipher


def number(index: int) -> str:
    """Entry `index` of the list: even numbers only, so every odd one (`missing`) misses."""
    return f"+1{2_000_000_000 + 2 * index}"


def missing(index: int) -> str:
    return f"+1{2_000_000_001 + 2 * index}"


def fill_audit(new: int) -> AuditEvent:
    return AuditEvent(time=NOW, actor="bench", action="suppression.import",
                      subject="bench", details={"new": new})


async def fill(store: Store, start: int, stop: int) -> float:
    """Entries start..stop-1, a million per transaction; returns seconds."""
    began = time.perf_counter()
    for first in range(start, stop, FILL_CHUNK):
        addresses = [number(i) for i in range(first, min(first + FILL_CHUNK, stop))]
        await store.import_suppressions(
            addresses, source="national-dnc:bench.txt", reason="bench", actor="bench",
            time=NOW, audit=fill_audit,
        )
    return time.perf_counter() - began


def lookup_keys(size: int, lookups: int) -> list[tuple[str, bool]]:
    draw = random.Random(size)
    keys = [(number(draw.randrange(size)), True) for _ in range(lookups // 2)]
    keys += [(missing(draw.randrange(size)), False) for _ in range(lookups - len(keys))]
    draw.shuffle(keys)
    return keys


def percentiles(latencies: list[float], errors: int) -> dict:
    latencies.sort()

    def at(fraction: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1e6, 1)

    return {"lookups": len(latencies), "wrong_answers": errors, "p50_us": at(0.50),
            "p99_us": at(0.99), "max_us": at(1.0),
            "mean_us": round(sum(latencies) / len(latencies) * 1e6, 1)}


async def timed(keys: list[tuple[str, bool]], lookup: Callable[[str], Awaitable[bool]]) -> dict:
    latencies, errors = [], 0
    for key, present in keys:
        started = time.perf_counter()
        found = await lookup(key)
        latencies.append(time.perf_counter() - started)
        errors += found != present
    return percentiles(latencies, errors)


async def through_store(store: Store, keys: list[tuple[str, bool]]) -> dict:
    async def lookup(key: str) -> bool:
        return bool(await store.suppressed([key]))

    await timed(keys[:500], lookup)  # warm the connection and the page cache
    return await timed(keys, lookup)


async def raw_sqlite(path: Path, keys: list[tuple[str, bool]], cipher: DataCipher) -> dict:
    """The stored form alone (the blind index with encryption on), one indexed read."""
    connection = sqlite3.connect(path)
    query = "SELECT 1 FROM suppressions WHERE address = ? LIMIT 1"

    async def lookup(key: str) -> bool:
        return connection.execute(query, (cipher.blind(key),)).fetchone() is not None

    await timed(keys[:500], lookup)
    try:
        return await timed(keys, lookup)
    finally:
        connection.close()


async def measure(url: str, database: Path | None, sizes: list[int], lookups: int,
                  encryption: bool, directory: Path) -> dict:
    store = open_store(url)
    await store.open()
    await store.use_erasure_key(ERASURE_KEY)
    cipher = await gateway_cipher(store, directory) if encryption else PLAIN
    await store.use_data_cipher(cipher)
    results: dict[str, dict] = {}
    try:
        filled = 0
        for size in sorted(sizes):
            seconds = await fill(store, filled, size)
            filled = size
            keys = lookup_keys(size, lookups)
            results[f"at_{size}"] = {
                "entries": size,
                "fill_seconds": round(seconds, 1),
                "store": await through_store(store, keys),
                "baseline_raw_sqlite": (
                    await raw_sqlite(database, keys, cipher) if database else None
                ),
            }
    finally:
        await store.close()
    return results


def main(
    sizes: tuple[int, ...] = (1_000_000, 10_000_000),
    lookups: int = 10_000,
    store_url: str | None = None,
    encryption: bool = False,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as name:
        database = None if store_url else Path(name) / "gateway.db"
        url = store_url or f"sqlite:///{database}"
        results = asyncio.run(
            measure(url, database, list(sizes), lookups, encryption, Path(name))
        )
    return {
        "benchmark": "suppression lookup latency, store.suppressed([key]), one at a time",
        "encryption": encryption,
        "store": "sqlite (temp dir)" if store_url is None else store_url.split("@")[-1],
        "results": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000",
                        help="comma-separated entry counts, filled in turn")
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--store-url", help="default: SQLite in a temp dir")
    parser.add_argument("--encryption", action="store_true",
                        help="[encryption] enabled = true, with explicit keys")
    arguments = parser.parse_args()
    chosen = tuple(int(size) for size in arguments.sizes.split(","))
    print(json.dumps(main(chosen, arguments.lookups, arguments.store_url,
                          arguments.encryption), indent=2))
