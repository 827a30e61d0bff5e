"""Run every benchmark, write bench/results.json and the table in docs/benchmarks.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import bench_http
import bench_policy

ROOT = Path(__file__).resolve().parent.parent


def markdown(report: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`bench/run.py`); raw numbers in `bench/results.json`.",
        f"Last run: {report['time']}, Python {report['policy']['python']}, "
        f"{report['policy']['machine']}, 2 cores.",
        "",
        "## Policy decisions in process",
        "",
        "`decide(message, facts, rules, now)` with facts prepared beforehand, as the pipeline",
        "calls it. Baseline: building an allow decision with no rules at all.",
        "",
        "| case | best µs/decision | median µs | decisions/s (best) |",
        "|---|---:|---:|---:|",
    ]
    for name, numbers in report["policy"]["results"].items():
        rate = 1e6 / numbers["best_us"]
        lines.append(f"| {name} | {numbers['best_us']} | {numbers['median_us']} | {rate:,.0f} |")
    http = report["http"]["results"]
    lines += [
        "",
        "## HTTP `/email` (Postmark-shaped), outbox upstream",
        "",
        "Gateway (`compliance-gateway serve`, SQLite, outbox with fsync) and baseline (a minimal",
        "fake Postmark answering `/email`) each run in their own process; the load generator",
        "(aiohttp) in a third. Closed loop: 32 concurrent connections for 10 s. Open loop:",
        "requests sent on a fixed schedule for 10 s.",
        "",
        "| measurement | gateway | baseline (fake upstream direct) |",
        "|---|---:|---:|",
        f"| max requests/s (closed loop) | {http['gateway_max']['requests_per_s']} | "
        f"{http['baseline_max']['requests_per_s']} |",
    ]
    for rate in bench_http.OFFERED_RATES:
        gateway, baseline = http[f"gateway_at_{rate}"], http[f"baseline_at_{rate}"]
        lines.append(
            f"| p50 / p99 ms at {rate}/s offered | {gateway['p50_ms']} / {gateway['p99_ms']} | "
            f"{baseline['p50_ms']} / {baseline['p99_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    report = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": bench_policy.main(),
        "http": bench_http.main(),
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
