"""The decision log at scale: pages of `GET /v1/decisions` and the console's Activity page
over a log of 10 M decisions, on SQLite and (where PostgreSQL binaries exist) on a
throwaway PostgreSQL server with fsync on.

The log is filled with raw SQL in the store's own schema (one decision every ~3.5 s over
400 days, 20 accounts, 5% blocked, one recipient and one upstream id each), then each query
runs `REPEATS` times (`SCAN_REPEATS` for a search that reads the whole log) and its median
and slowest time are reported: the first page, a page deep in the log by its cursor, each
indexed filter, the exact upstream id, one decision with its evidence, the partial searches
(recipient, subject), which scan the time index until the page is full (for a term that
matches little, that is the whole log), and, where the store has `decision_summary`, what
the Activity page asks of it for the default 7-day window (a page of 51, the counts and the
chart's series), for one filter and for 30 days. Unless `--no-http`, `GET /review` is then
timed from a `gateway serve` over the same store, signed in as a manager.

    python bench/bench_decisions.py [--rows 10000000] [--sqlite-only | --postgres-only]
        [--keep DIRECTORY] [--no-http]

With `--keep`, the filled SQLite file and PostgreSQL data directory stay in DIRECTORY
(outside the repository: a 10 M-row log is several GB) and a later run with the same
`--rows` reuses them instead of filling again; the fill time reported is then the first
run's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.model import Channel, DecisionOutcome
from gateway.store import open_store
from gateway.store.base import DecisionQuery, Store, StoreUnavailable
from tests.postgres_server import (
    PostgresMissing,
    PostgresServer,
    find_binaries,
)

NOW = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)
SPAN_S = 400 * 86_400
REPEATS = 20
SCAN_REPEATS = 3  # a search that reads the whole log takes seconds: fewer runs of it
ACCOUNTS = 20
EVIDENCE = json.dumps({
    "ingress": "postmark", "zones": [], "consent": None, "suppression": [], "upstream": None,
    "rules": [{"id": "email.suppression", "citation": "15 U.S.C. 7704(a)(4)"}],
    "rewrites": [],
}, separators=(",", ":"))
COLUMNS = (
    "time, channel, account, key_id, sender, recipient, recipient_lower, purpose, outcome,"
    " reasons_json, reason_codes, rules_version, upstream_id, subject, subject_lower,"
    " gateway_id, evidence_json"
)


def row(i: int, rows: int) -> tuple[object, ...]:
    moment = NOW - timedelta(seconds=SPAN_S * (rows - i) / rows)
    blocked = i % 20 == 0
    channel = ("email", "sms", "call")[i % 3]
    recipient = (
        f"lead{i}@client{i % 1000}.example" if channel == "email" else f"+1{2_000_000_000 + i}"
    )
    code = ("SUPPRESSED", "QUIET_HOURS", "NO_CONSENT")[i % 3]
    reasons = json.dumps([{"code": code, "message": "m", "rule": "r"}]) if blocked else "[]"
    subject = f"Fleet costs {i % 5000}" if channel == "email" else ""
    return (
        moment.isoformat(timespec="microseconds"), channel, f"agent{i % ACCOUNTS}", None,
        "katie@example.com", recipient, recipient.lower(), "marketing",
        "blocked" if blocked else "allowed", reasons, f",{code}," if blocked else ",",
        "v1", None if blocked else f"up-{i}", subject, subject.lower(), f"g{i}", EVIDENCE,
    )


def fill_sqlite(path: Path, rows: int) -> None:
    placeholders = ", ".join("?" * len(COLUMNS.split(",")))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        chunk = 200_000
        for start in range(0, rows, chunk):
            conn.executemany(
                f"INSERT INTO decisions ({COLUMNS}) VALUES ({placeholders})",
                (row(i, rows) for i in range(start, min(rows, start + chunk))),
            )
            conn.commit()


def without_statistics(path: Path) -> None:
    """The gateway never runs ANALYZE on SQLite, so the planner has no statistics: statistics
    from an earlier run of this benchmark, gathered before a later migration's index existed,
    would make it choose differently than a real deployment's would."""
    with sqlite3.connect(path) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            conn.execute("DELETE FROM sqlite_stat1")


FILL_POSTGRES = f"""
INSERT INTO decisions ({COLUMNS})
SELECT $2::timestamptz - make_interval(secs => {SPAN_S}::float8 * ($1 - i) / $1),
       channel, 'agent' || (i % {ACCOUNTS}), NULL, 'katie@example.com', recipient,
       recipient, 'marketing', CASE WHEN blocked THEN 'blocked' ELSE 'allowed' END,
       CASE WHEN blocked
            THEN '[{{"code": "' || code || '", "message": "m", "rule": "r"}}]' ELSE '[]' END,
       CASE WHEN blocked THEN ',' || code || ',' ELSE ',' END,
       'v1', CASE WHEN blocked THEN NULL ELSE 'up-' || i END,
       CASE WHEN channel = 'email' THEN 'Fleet costs ' || (i % 5000) ELSE '' END,
       CASE WHEN channel = 'email' THEN 'fleet costs ' || (i % 5000) ELSE '' END,
       'g' || i, $3
FROM (
    SELECT i, i % 20 = 0 AS blocked,
           (ARRAY['email', 'sms', 'call'])[i % 3 + 1] AS channel,
           (ARRAY['SUPPRESSED', 'QUIET_HOURS', 'NO_CONSENT'])[i % 3 + 1] AS code,
           CASE WHEN i % 3 = 0 THEN 'lead' || i || '@client' || (i % 1000) || '.example'
                ELSE '+1' || (2000000000 + i) END AS recipient
    FROM generate_series($4::bigint, $5::bigint - 1) AS i
) AS generated
"""


async def fill_postgres(url: str, rows: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        chunk = 1_000_000
        for start in range(0, rows, chunk):
            await conn.execute(
                FILL_POSTGRES, rows, NOW, EVIDENCE, start, min(rows, start + chunk)
            )
        await conn.execute("ANALYZE decisions")
    finally:
        await conn.close()


async def timed(
    call: Callable[[], Awaitable[object]], repeats: int = REPEATS
) -> dict[str, float]:
    await call()  # warm the cache, as a reviewer's second page would
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


async def measure(store: Store, rows: int) -> dict[str, dict[str, float]]:
    middle = rows // 2 + 1  # ids start at 1

    def page(**filters: object) -> Callable[[], Awaitable[object]]:
        return lambda: store.query_decisions(DecisionQuery(limit=101, **filters))  # type: ignore[arg-type]

    cases = {
        "first page (100)": page(),
        "page in the middle, by cursor": page(before_id=middle),
        "account": page(account="agent7"),
        "account, page in the middle": page(account="agent7", before_id=middle),
        "outcome blocked": page(outcome=DecisionOutcome.BLOCKED),
        "channel call, since 24h": page(channel=Channel.CALL, since=NOW - timedelta(hours=24)),
        "reason QUIET_HOURS": page(reason="QUIET_HOURS"),
        "upstream id": page(upstream_id=f"up-{middle + 1}"),
        "one decision with evidence": lambda: store.get_decision(middle),
        "recipient, a common part": page(recipient="client7"),
        "subject, a common part": page(text="FLEET COSTS 12"),
        "recipient, matching one (whole log scanned)": page(recipient=f"lead{rows - 3}@"),
    }
    cases.update(activity_cases(store))
    results = {}
    for name, call in cases.items():
        try:
            results[name] = await timed(call, SCAN_REPEATS if "whole log" in name else REPEATS)
        except StoreUnavailable as exc:  # e.g. PostgreSQL's command timeout (30 s)
            results[name] = {"error": str(exc)[:200]}
        print(f"  {name}: {results[name]}", flush=True)
    return results


ACTIVITY_RECIPIENT = 9_999_999 - 3 * 1000
"""An email recipient (index divisible by 3) about 3 hours before NOW: a search for one
person in the Activity page's window, which reads every decision of the window."""


def activity_cases(store: Store) -> dict[str, Callable[[], Awaitable[object]]]:
    """What the console's Activity page (`GET /review`) asks the store for: a page of the
    window's decisions and their counts per channel, outcome and reason with the chart's
    series (`decision_summary`); none where this tree's store has no summary yet."""
    if not hasattr(store, "decision_summary"):
        return {}
    from multidict import MultiDict

    from gateway.web.review import activity_query, bucket_seconds

    def window(**values: str) -> tuple[DecisionQuery, int]:
        query = activity_query(MultiDict(values), NOW)
        assert query.since is not None and query.until is not None
        return query, bucket_seconds((query.until - query.since).total_seconds())

    def both(query: DecisionQuery, bucket_s: int) -> Callable[[], Awaitable[object]]:
        async def call() -> None:
            await store.query_decisions(query)
            await store.decision_summary(query, bucket_s)  # type: ignore[attr-defined]

        return call

    week, week_bucket = window()
    blocked, blocked_bucket = window(outcome="blocked")
    person, person_bucket = window(recipient=f"lead{ACTIVITY_RECIPIENT}@")
    month, month_bucket = window(since=(NOW - timedelta(days=30)).isoformat())
    return {
        "Activity, 7 days: page (51)": lambda: store.query_decisions(week),
        "Activity, 7 days: counts and series": lambda: store.decision_summary(  # type: ignore[attr-defined]
            week, week_bucket),
        "Activity, 7 days: page + counts + series": both(week, week_bucket),
        "Activity, 7 days, blocked: page + counts + series": both(blocked, blocked_bucket),
        "Activity, 7 days, one recipient: page (51)": lambda: store.query_decisions(person),
        "Activity, 7 days, one recipient: counts and series": lambda: store.decision_summary(  # type: ignore[attr-defined]
            person, person_bucket),
        "Activity, 7 days, one recipient: page + counts + series": both(person, person_bucket),
        "Activity, 30 days: page + counts + series": both(month, month_bucket),
    }


def filled(marker: Path, rows: int) -> float | None:
    """The fill time a kept log of `rows` decisions took, or None when there is none."""
    try:
        kept = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return kept["fill_s"] if kept.get("rows") == rows else None


REVIEWER_SECRET = "reviewer-secret-0123456789"
REVIEW_CONFIG = """
[store]
url = "{url}"
[retention]
decision_days = 3650
[[accounts]]
name = "reviewer"
secret = "{secret}"
role = "manager"
"""


REVIEW_PAGES = {
    "GET /review over HTTP (Activity, 7 days)": "/review",
    "GET /review over HTTP (Activity, 7 days, one recipient)":
        f"/review?recipient=lead{ACTIVITY_RECIPIENT}%40",
    "GET /review over HTTP (Activity, 30 days)": "/review?since=30d",
}


async def review_over_http(url: str) -> dict[str, dict[str, float]]:
    """`GET /review` (the Activity page: REVIEW_PAGES) from a `gateway serve` over this
    store, its clock at NOW, signed in as a manager with an account secret: the page as a
    browser gets it, HTML rendered and sent."""
    import aiohttp
    from harness import HOST, gateway

    with tempfile.TemporaryDirectory(prefix="bench-review-") as name:
        config = REVIEW_CONFIG.format(url=url, secret=REVIEWER_SECRET)
        with gateway(Path(name), config, now=NOW.isoformat()) as served:
            base = f"http://{HOST}:{served['http']}"
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/review/login", data={"secret": REVIEWER_SECRET},
                                     allow_redirects=False) as answer:
                    assert answer.status == 303, (answer.status, await answer.text())
                    # The cookie is Secure (public_url is https): sent by hand over loopback.
                    cookies = [header.split(";", 1)[0]
                               for header in answer.headers.getall("Set-Cookie", [])]
                headers = {"Cookie": "; ".join(cookies)}

                def activity(path: str) -> Callable[[], Awaitable[None]]:
                    async def get() -> None:
                        async with http.get(f"{base}{path}", headers=headers,
                                            allow_redirects=False) as page:
                            body = await page.text()
                            if page.status != 200 or "Activity" not in body:
                                log = (Path(name) / "gateway.log").read_text()[-3000:]
                                raise RuntimeError(
                                    f"GET {path}: {page.status} {body[:300]}\n{log}")

                    return get

                return {label: await timed(activity(path))
                        for label, path in REVIEW_PAGES.items()}


async def on_store(
    url: str, rows: int, fill: Callable[[], Awaitable[None]], marker: Path | None = None,
    over_http: bool = False,
) -> dict:
    """Fill (unless `marker` says a log of `rows` is there already), then time the pages
    through the store and, with `over_http`, the Activity page from a running gateway."""
    filled_s = filled(marker, rows) if marker is not None else None
    if filled_s is None:
        store = open_store(url)
        await store.open()
        await store.close()
        started = time.perf_counter()
        await fill()
        filled_s = round(time.perf_counter() - started, 1)
        if marker is not None:
            marker.write_text(json.dumps({"rows": rows, "fill_s": filled_s}))
    store = open_store(url)
    await store.open()
    try:
        queries = await measure(store, rows)
        summarised = hasattr(store, "decision_summary")
    finally:
        await store.close()
    if over_http and summarised:
        for label, timing in (await review_over_http(url)).items():
            queries[label] = timing
            print(f"  {label}: {timing}", flush=True)
    return {"rows": rows, "fill_s": filled_s, "queries": queries}


async def on_sqlite(directory: Path, rows: int, keep: bool, over_http: bool) -> dict:
    path = directory / f"decisions-{rows}.db"
    marker = directory / f"decisions-{rows}.json" if keep else None
    if marker is not None and filled(marker, rows) is None:
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
    if path.exists():
        without_statistics(path)
    print(f"SQLite, {rows:,} decisions", flush=True)
    return await on_store(
        f"sqlite:///{path}", rows, lambda: asyncio.to_thread(fill_sqlite, path, rows), marker,
        over_http,
    )


async def on_postgres(directory: Path, rows: int, keep: bool, over_http: bool) -> dict:
    try:
        binaries = find_binaries()
    except PostgresMissing as missing:
        return {"skipped": f"no PostgreSQL binaries: {missing}"}
    root = directory / f"postgres-{rows}"
    marker = directory / f"postgres-{rows}.json" if keep else None
    if marker is not None and filled(marker, rows) is None:
        shutil.rmtree(root, ignore_errors=True)
    server = PostgresServer(binaries, durable=True, root=root if keep else None)
    server.start()
    try:
        if not server.sql("SELECT 1 FROM pg_database WHERE datname = 'bench_decisions'"):
            server.sql("CREATE DATABASE bench_decisions")
        url = server.url("bench_decisions")
        print(f"PostgreSQL, {rows:,} decisions", flush=True)
        return await on_store(url, rows, lambda: fill_postgres(url, rows), marker, over_http)
    finally:
        if keep:
            server.stop()
        else:
            server.destroy()


async def run(
    rows: int, sqlite_only: bool, keep: Path | None, over_http: bool, postgres_only: bool = False
) -> dict:
    report: dict = {"benchmark": f"decision log pages at {rows:,} decisions"}
    with tempfile.TemporaryDirectory() as scratch:
        directory = keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        if not postgres_only:
            report["sqlite"] = await on_sqlite(directory, rows, keep is not None, over_http)
        if not sqlite_only:
            report["postgres"] = await on_postgres(directory, rows, keep is not None, over_http)
    return report


def main(
    rows: int = 10_000_000, sqlite_only: bool = False, keep: Path | None = None,
    over_http: bool = True, postgres_only: bool = False,
) -> dict:
    """`run.py` calls this with no arguments: 10 M decisions, filled in /tmp and kept there
    (BENCH_DECISIONS_KEEP, default /tmp/bench-decisions) so a second run reuses them."""
    if keep is None:
        keep = Path(os.environ.get("BENCH_DECISIONS_KEEP", "/tmp/bench-decisions"))
    return asyncio.run(run(rows, sqlite_only, keep, over_http, postgres_only))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="fill once into this directory, then reuse")
    parser.add_argument("--no-http", action="store_true",
                        help="time the store calls only, not GET /review from a gateway")
    arguments = parser.parse_args()
    print(json.dumps(main(arguments.rows, arguments.sqlite_only, arguments.keep,
                          not arguments.no_http, arguments.postgres_only), indent=2))
