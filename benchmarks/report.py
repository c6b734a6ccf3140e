"""One table of every benchmark: each benchmark records its headline ratios here while it runs.

`record(...)` is called by a benchmark's `main` for each figure it reports against its baseline measured
in the same run; `benchmarks.run_all` prints the table, writes benchmarks/results/latest.md and draws
benchmarks/results/latest.png. A benchmark run on its own just records into a list nobody reads.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    benchmark: str
    measure: str  # what was measured, e.g. "crawler fetch + extraction"
    value: float
    baseline: str  # what it is measured against, in the same run
    baseline_value: float
    unit: str  # of value and baseline_value, e.g. "pages/s"
    higher_is_better: bool = True
    goal: str = ""  # the stated target, e.g. ">= 0.8"

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


_ROWS: list[Row] = []


def record(benchmark: str, measure: str, value: float, baseline: str, baseline_value: float, unit: str,
           *, higher_is_better: bool = True, goal: str = "") -> Row:
    row = Row(benchmark, measure, float(value), baseline, float(baseline_value), unit, higher_is_better, goal)
    _ROWS.append(row)
    return row


def recorded() -> list[Row]:
    return list(_ROWS)


def _figure(value: float) -> str:
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(rows: list[Row], seconds: dict[str, float], failed: dict[str, str]) -> str:
    """The whole run as one Markdown table, with where and when it ran."""
    lines = [
        f"# Benchmarks: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}. Every ratio is "
        "against a baseline measured in the same run (value / baseline; the arrow says which way is better).",
        "",
        "| benchmark | measure | value | baseline | baseline value | ratio | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        arrow = "↑" if r.higher_is_better else "↓"
        lines.append(f"| {r.benchmark} | {r.measure} | {_figure(r.value)} {r.unit} | {r.baseline} | "
                     f"{_figure(r.baseline_value)} {r.unit} | {r.ratio:.3f} {arrow} | {r.goal} |")
    for name in seconds:
        if name in failed:
            lines.append(f"| {name} | **failed**: {failed[name][:200]} | | | | | |")
        elif not any(r.benchmark == name for r in rows):
            lines.append(f"| {name} | (records no ratio; see its own output) | | | | | |")
    lines += ["", "Wall time per benchmark: " + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    """Horizontal bars of every ratio, 1.0 (the baseline) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.ratio == r.ratio]  # drop NaN
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(rows) + 1.5))
    labels = [f"{r.benchmark}: {r.measure}" for r in rows]
    colours = ["tab:green" if (r.ratio >= 1) == r.higher_is_better else "tab:orange" for r in rows]
    ax.barh(labels, [r.ratio for r in rows], color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the baseline measured in the same run (log scale; green: better than baseline)")
    ax.set_title("make bench")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
