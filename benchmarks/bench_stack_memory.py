"""Memory of the local stack at rest: `twin stack up`, wait until it idles, then the PSS (proportional
set size, from /proc/<pid>/smaps_rollup) of every component's process tree, and the total.

Run: python -m benchmarks.bench_stack_memory [--rest 60] [--processes]
Uses its own temp data dir and free ports, and stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.bench_stack import PORT_FIELDS, free_port
from benchmarks.report import record
from twin.settings import load_settings
from twin.stack import Stack
from twin.stack.process import process_tree
from twin.stack.stack import pss_bytes

MB = 1024 * 1024
README_PSS_MB = 2.2 * 1000 * 1000 * 1000 / MB  # the README states the stack at rest as 2.2 GB


def per_process(stack: Stack) -> list[str]:
    """Each component's processes, largest first (what to trim next)."""
    lines = []
    for comp in stack.components:
        proc = stack._process(comp)
        if proc is None:
            continue
        for p in sorted(process_tree(proc, proc.pid), key=lambda p: -pss_bytes(p.pid)):
            try:
                command = " ".join(p.cmdline())[:90]
            except psutil.Error:
                command = "?"
            lines.append(f"  {comp.name:<22}{p.pid:>8}{pss_bytes(p.pid) / MB:>9.0f} MB  {command}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", type=float, default=60.0, help="seconds to let the stack settle after `up`")
    parser.add_argument("--processes", action="store_true", help="also list every process")
    args = parser.parse_args(argv)
    # Outside any 0700 folder: PostgreSQL runs as its own user and must reach its data dir.
    root = Path(tempfile.mkdtemp(prefix="twin-bench-mem-"))
    try:
        settings = load_settings(data_dir=root / "data", stack_start_timeout_s=600,
                                 **{field: free_port() for field in PORT_FIELDS})
        stack = Stack(settings)
        try:
            stack.up()
            time.sleep(args.rest)
            rows = stack.memory()
            details = per_process(stack) if args.processes else []
        finally:
            stack.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"PSS of the local stack {args.rest:.0f} s after `twin stack up` (MB)")
    print(f"{'component':<24}{'processes':>10}{'PSS MB':>10}")
    for row in rows:
        print(f"{row.name:<24}{row.processes:>10}{row.pss_bytes / MB:>10.0f}")
    print(f"{'total':<24}{sum(r.processes for r in rows):>10}{sum(r.pss_bytes for r in rows) / MB:>10.0f}")
    # No second stack fits beside the first on 2 cores: the baseline is the figure the README states.
    record("stack_memory", "PSS of the stack at rest", sum(r.pss_bytes for r in rows) / MB, "README figure (2.2 GB)",
           README_PSS_MB, "MB", higher_is_better=False)
    if details:
        print("\nprocesses:")
        print("\n".join(details))


if __name__ == "__main__":
    main()
