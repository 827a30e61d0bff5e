"""Wall time of `compliance-gateway suppress import` for a million-row file, as an operator
runs it (a new process: start-up, reading, checking every row, one store transaction).

Files: a US National DNC download (one 10-digit number a line) and a CRM export (CSV with a
header, the address in the first column). Each import goes into an empty store, then the DNC
file is imported again (every row already present). Baseline in the same run: what a naive
script does with the same file: read it and `executemany` an INSERT of the same rows into an
empty SQLite table, no checking, no normalizing, no audit.

    python bench/bench_import.py [--rows N] [--store-url URL]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG = """
[gateway]
data_dir = "var"
public_url = "https://gw.example.com"
[store]
url = "{store_url}"
[sender]
name = "Example Corp"
postal_address = "548 Market St #12345, San Francisco, CA 94104"
email = "privacy@example.com"
[tokens]
keys = {{ k1 = "{key}" }}
"""
SUMMARY = re.compile(r"(\d+) rows read, (\d+) valid \((\d+) new, (\d+) already present")
NAIVE_TABLE = """CREATE TABLE suppressions (
    address TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, PRIMARY KEY (address, source))"""
NAIVE_INSERT = "INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?, ?, ?)"
NOW_TEXT = "2026-06-02T16:00:00.000000+00:00"


def write_dnc(path: Path, rows: int) -> None:
    """Random valid NANP numbers (area code and exchange start with 2-9); a few repeat."""
    draw = random.Random(1)
    with path.open("w") as out:
        for _ in range(rows):
            area, exchange = draw.randint(200, 999), draw.randint(200, 999)
            out.write(f"{area}{exchange}{draw.randint(0, 9999):04d}\n")


def write_csv(path: Path, rows: int) -> None:
    """A CRM export: mixed-case addresses at 5,000 company domains and two webmail ones."""
    draw = random.Random(2)
    domains = [f"company{n}.example.com" for n in range(5000)] + ["gmail.com", "yahoo.com"]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "company"])
        for n in range(rows):
            domain = draw.choice(domains)
            writer.writerow([f"First.Last{n}@{domain}", f"Person {n}", domain])


def run_import(config: Path, path: Path, file_format: str) -> dict:
    command = [sys.executable, "-m", "gateway", "suppress", "import", "--format", file_format,
               str(path), "--config", str(config)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"import failed ({result.returncode}): {result.stderr.strip()}")
    rows, valid, new, present = map(int, SUMMARY.search(result.stdout).groups())
    return {"rows": rows, "valid": valid, "new": new, "already_present": present,
            "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def dnc_rows(path: Path) -> Iterator[tuple[str, ...]]:
    with path.open() as lines:
        for line in lines:
            yield ("+1" + line.strip(), "national-dnc", "imported", "script", NOW_TEXT)


def csv_rows(path: Path) -> Iterator[tuple[str, ...]]:
    with path.open(newline="") as lines:
        reader = csv.reader(lines)
        next(reader)
        for row in reader:
            yield (row[0].lower(), "import", "imported", "script", NOW_TEXT)


def naive_insert(database: Path, rows: Iterator[tuple[str, ...]]) -> dict:
    """Default SQLite settings, one transaction, no checks: the floor a script starts from."""
    started = time.perf_counter()
    connection = sqlite3.connect(database)
    connection.execute(NAIVE_TABLE)
    with connection:
        cursor = connection.executemany(NAIVE_INSERT, rows)
    count = connection.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    connection.close()
    seconds = time.perf_counter() - started
    return {"rows_inserted": count, "inserted_by_statement": cursor.rowcount,
            "seconds": round(seconds, 2), "rows_per_s": round(count / seconds)}


def startup_seconds(config: Path, directory: Path) -> float:
    """The fixed cost in every import: a new interpreter, the gateway's imports, the store."""
    empty = directory / "empty.csv"
    empty.write_text("email\n")
    return run_import(config, empty, "csv")["seconds"]


def main(rows: int = 1_000_000, store_url: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-import-") as name:
        directory = Path(name)
        dnc, crm = directory / "dnc-full.txt", directory / "crm-export.csv"
        write_dnc(dnc, rows)
        write_csv(crm, rows)

        def config(case: str) -> Path:
            url = store_url or f"sqlite:///{directory}/{case}/gateway.db"
            path = directory / f"{case}.toml"
            path.write_text(CONFIG.format(store_url=url, key="k" * 40))
            return path

        results = {
            "startup_seconds": startup_seconds(config("startup"), directory),
            "dnc_import": run_import(config("dnc"), dnc, "dnc"),
            "dnc_reimport": run_import(config("dnc"), dnc, "dnc"),
            "csv_import": run_import(config("csv"), crm, "csv"),
            "baseline_dnc_executemany": naive_insert(directory / "naive-dnc.db", dnc_rows(dnc)),
            "baseline_csv_executemany": naive_insert(directory / "naive-csv.db", csv_rows(crm)),
        }
        results["file_bytes"] = {"dnc": dnc.stat().st_size, "csv": crm.stat().st_size}
    return {
        "benchmark": f"suppress import of {rows:,}-row files (CLI wall time)",
        "store": "sqlite (temp dir, one database per case)" if store_url is None
        else store_url.split("@")[-1],
        "results": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--store-url", help="default: SQLite in a temp dir")
    arguments = parser.parse_args()
    print(json.dumps(main(arguments.rows, arguments.store_url), indent=2))
