"""Lookups by a list of keys on SQLite: `rows_for_stored_forms` asks a few keys as one
equality each joined by UNION ALL, more as an IN list. Whatever the route, the rows are
those of one IN query over the distinct keys: no row twice for a repeated key, none lost,
parameters bound before each key, an aggregate per key."""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections import Counter

import pytest

from gateway.store.sqlite.sql import UNION_ARMS, rows_for_keys, rows_for_stored_forms

ROWS = [(f"r{n % 7}", f"2026-01-{n % 28 + 1:02d}", n) for n in range(60)]
QUERIES = {
    "rows": "SELECT recipient, time, n FROM contacts WHERE recipient IN ({keys})",
    "distinct": "SELECT DISTINCT recipient FROM contacts WHERE recipient IN ({keys})",
    "grouped": "SELECT recipient, COUNT(*) FROM contacts WHERE time >= ? AND recipient IN ({keys})"
               " GROUP BY recipient",
    "filtered": "SELECT n FROM contacts WHERE time > ? AND recipient IN ({keys}) AND n % 2 = 0",
}
PARAMETERS = {"rows": [], "distinct": [], "grouped": ["2026-01-10"], "filtered": ["2026-01-05"]}


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE contacts (recipient TEXT, time TEXT, n INTEGER)")
    conn.execute("CREATE INDEX contacts_by_recipient ON contacts (recipient, time)")
    conn.executemany("INSERT INTO contacts VALUES (?, ?, ?)", ROWS)
    return conn


def one_in_query(conn: sqlite3.Connection, shape: str, keys: list[str]) -> Counter:
    distinct = list(dict.fromkeys(keys))
    if not distinct:
        return Counter()
    query = QUERIES[shape].format(keys=", ".join("?" * len(distinct)))
    return Counter(conn.execute(query, [*PARAMETERS[shape], *distinct]).fetchall())


KEY_LISTS = [
    [], ["r1"], ["r1", "r1"], ["r1", "r2"], ["r2", "nobody"], ["r1", "r2", "r1", "r3"],
    [f"r{n}" for n in range(UNION_ARMS)], [f"r{n}" for n in range(UNION_ARMS + 1)],
    ["r3"] * (UNION_ARMS + 3), [f"r{n % 7}" for n in range(30)], ["nobody", "nobody either"],
]


@pytest.mark.parametrize(("shape", "keys"), list(itertools.product(QUERIES, KEY_LISTS)))
def test_the_rows_are_those_of_one_in_query_over_the_distinct_keys(
    conn: sqlite3.Connection, shape: str, keys: list[str]
) -> None:
    found = Counter(rows_for_stored_forms(conn, QUERIES[shape], keys, PARAMETERS[shape]))
    assert found == one_in_query(conn, shape, keys)


def test_random_key_lists_agree_with_the_in_list(conn: sqlite3.Connection) -> None:
    draw = random.Random(20261206)
    for _ in range(300):
        keys = [f"r{draw.randrange(10)}" for _ in range(draw.randrange(12))]
        shape = draw.choice(list(QUERIES))
        found = Counter(rows_for_stored_forms(conn, QUERIES[shape], keys, PARAMETERS[shape]))
        assert found == one_in_query(conn, shape, keys), (shape, keys)


def test_a_count_without_group_comes_back_once_per_key(conn: sqlite3.Connection) -> None:
    query = "SELECT COUNT(*) FROM contacts WHERE recipient IN ({keys})"
    counts = [n for (n,) in rows_for_stored_forms(conn, query, ["r1", "r2", "r1"])]
    assert sorted(counts) == sorted(n for (n,) in (
        conn.execute("SELECT COUNT(*) FROM contacts WHERE recipient = ?", (key,)).fetchone()
        for key in ("r1", "r2")
    ))


def test_a_repeated_key_in_a_long_list_returns_its_rows_once(conn: sqlite3.Connection) -> None:
    keys = ["r1"] + [f"x{n}" for n in range(2_000)] + ["r1"]
    found = Counter(rows_for_keys(conn, QUERIES["rows"], keys))
    assert found == Counter(row for row in ROWS if row[0] == "r1")
