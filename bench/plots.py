"""The figures in docs/benchmarks.md, drawn with matplotlib from bench/results.json.

Each function takes one benchmark's results and writes one PNG; run.py links the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"gateway": "tab:blue", "gateway-dkim": "tab:purple", "relay": "tab:orange",
           "postfix": "tab:green",
           "baseline": "tab:orange"}


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _sizes(cells: list[dict]) -> list[str]:
    return list(dict.fromkeys(cell["size"] for cell in cells))


def _targets(cells: list[dict]) -> list[str]:
    return list(dict.fromkeys(cell["target"] for cell in cells))


def smtp_throughput(smtp: dict, path: Path, target_rate: float) -> Path:
    """Messages/s against concurrency, one panel per message size; dashed: no reuse."""
    cells = smtp["cells"]
    figure, axes = plt.subplots(1, len(_sizes(cells)), figsize=(11, 4), squeeze=False)
    for axis, size in zip(axes[0], _sizes(cells), strict=True):
        for target in _targets(cells):
            for reuse, style in ((True, "-"), (False, "--")):
                points = [(c["concurrency"], c["messages_per_s"]) for c in cells
                          if (c["size"], c["target"], c["reuse"]) == (size, target, reuse)]
                label = f"{target} ({'reused' if reuse else 'new'} connections)"
                axis.plot(*zip(*points, strict=True), style, marker="o", label=label,
                          color=COLOURS.get(target))
        if size.startswith("20"):
            axis.axhline(target_rate, color="grey", linestyle=":", label="target")
        axis.set(title=size, xlabel="concurrent connections", ylabel="messages/s",
                 xscale="log")
        axis.set_xticks([c["concurrency"] for c in cells], [str(c["concurrency"]) for c in cells])
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return _save(figure, path)


def smtp_latency(smtp: dict, path: Path) -> Path:
    """p50 (solid) and p99 (light) per concurrency, connections reused, one panel per size."""
    cells = [c for c in smtp["cells"] if c["reuse"]]
    targets = _targets(cells)
    figure, axes = plt.subplots(1, len(_sizes(cells)), figsize=(11, 4), squeeze=False)
    width = 0.8 / len(targets)
    for axis, size in zip(axes[0], _sizes(cells), strict=True):
        levels = sorted({c["concurrency"] for c in cells})
        for offset, target in enumerate(targets):
            row = {c["concurrency"]: c for c in cells if (c["size"], c["target"]) == (size, target)}
            xs = [i + offset * width for i in range(len(levels))]
            axis.bar(xs, [row[n]["p99_ms"] for n in levels], width, alpha=0.35,
                     color=COLOURS.get(target))
            axis.bar(xs, [row[n]["p50_ms"] for n in levels], width, label=target,
                     color=COLOURS.get(target))
        axis.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(levels))],
                        [f"{n} conn." for n in levels])
        axis.set(title=f"{size}: p50 (solid), p99 (light)", ylabel="ms", yscale="log")
        axis.grid(alpha=0.3, axis="y")
    axes[0][-1].legend(fontsize=8)
    return _save(figure, path)


def http_latency(panels: dict[str, dict], path: Path) -> Path:
    """p50/p99 at each offered load, gateway against its baseline, one panel per endpoint."""
    figure, axes = plt.subplots(1, len(panels), figsize=(11, 4), squeeze=False)
    for axis, (title, results) in zip(axes[0], panels.items(), strict=True):
        rates = sorted(int(m.group(1)) for key in results
                       if (m := re.fullmatch(r"gateway_at_(\d+)", key)))
        for offset, side in enumerate(("gateway", "baseline")):
            runs = [results.get(f"{side}_at_{rate}", {}) for rate in rates]
            xs = [i + offset * 0.4 for i in range(len(rates))]
            axis.bar(xs, [r.get("p99_ms", 0) for r in runs], 0.4, alpha=0.35,
                     color=COLOURS[side])
            axis.bar(xs, [r.get("p50_ms", 0) for r in runs], 0.4, label=side,
                     color=COLOURS[side])
        axis.set_xticks([i + 0.2 for i in range(len(rates))], [f"{r}/s" for r in rates])
        axis.set(title=f"{title}: p50 (solid), p99 (light)", xlabel="offered load",
                 ylabel="ms", yscale="log")
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8)
    return _save(figure, path)


def memory(results: dict, path: Path) -> Path:
    """Resident MiB per phase, gateway against the raw relay."""
    phases = {"idle": lambda r: r["idle_rss_kb"], "under load": lambda r: r["load"]["rss_peak_kb"],
              "10 x 10 MB at once": lambda r: r["big"]["hwm_kb"]}
    figure, axis = plt.subplots(figsize=(7, 4))
    for offset, (name, figures) in enumerate(results.items()):
        xs = [i + offset * 0.4 for i in range(len(phases))]
        axis.bar(xs, [read(figures) / 1024 for read in phases.values()], 0.4, label=name,
                 color=COLOURS.get(name))
    axis.set_xticks([i + 0.2 for i in range(len(phases))], list(phases))
    axis.set(title="Resident memory (peak in each phase)", ylabel="MiB")
    axis.grid(alpha=0.3, axis="y")
    axis.legend()
    return _save(figure, path)
