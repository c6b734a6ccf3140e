"""`make bench`: run every benchmark in turn with its default sizes, then one table of all of them.

Each benchmark prints its own detail and records its headline ratios (benchmarks.report); the table is
printed at the end and written to benchmarks/results/latest.md, the ratios drawn in latest.png.
Pass names to run a subset: `python -m benchmarks.run_all crawl search` (add `--out DIR` to write
elsewhere: a subset should not replace the committed full run).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from benchmarks import report

BENCHMARKS = ["crawl", "etl", "features", "search", "retrieval_quality", "retrieval_latency", "stack", "stack_memory",
              "scale", "llm", "serving", "training"]
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, default=None, help="folder for latest.md and latest.png")
    args = parser.parse_args(argv)
    names = args.names or BENCHMARKS
    out = args.out or (RESULTS if not args.names else RESULTS / "subset")
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        print(f"\n=== benchmarks.bench_{name} ===", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main([])
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed[name] = repr(exc)
            print(f"bench_{name} failed: {exc!r}", flush=True)
        seconds[name] = time.perf_counter() - started
        print(f"--- bench_{name}: {seconds[name]:.1f}s", flush=True)
    rows = report.recorded()
    table = report.markdown(rows, seconds, failed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(table)
    if rows:
        report.plot(rows, out / "latest.png")
    print("\n" + table)
    print(f"written: {out / 'latest.md'}" + (f", {out / 'latest.png'}" if rows else ""))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
