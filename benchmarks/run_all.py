"""`make bench`: run every benchmark in turn with its default sizes; each prints its own table.

Pass names to run a subset: `python -m benchmarks.run_all crawl search`.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = ["crawl", "etl", "features", "search", "retrieval_quality", "stack", "stack_memory", "scale", "llm"]


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or BENCHMARKS
    failed = []
    for name in names:
        print(f"\n=== benchmarks.bench_{name} ===", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        try:
            module.main([])
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            print(f"bench_{name} failed: {exc!r}", flush=True)
        print(f"--- bench_{name}: {time.perf_counter() - started:.1f}s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
