"""Launch backends of the training DAG. `local`: the deepspeed launcher as a subprocess (CPU ranks
on a machine without CUDA, one rank per GPU otherwise); the run's result comes back on a
`TWIN_RESULT=` line of rank 0's output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twin.settings import Settings
from twin.training.trainer import REPO_ROOT

log = logging.getLogger(__name__)

RESULT_PREFIX = "TWIN_RESULT="


class LaunchError(RuntimeError):
    """The training subprocess failed or ran out of time; the message carries its output's tail."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def safe_run_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "run"


def launcher_command(*, config: Path, author: str, run_name: str, num_procs: int, deepspeed: Path | None = None,
                     dataset_version: str | None = None, evaluate: bool = False,
                     extra: list[str] | None = None) -> list[str]:
    launcher = Path(sys.executable).parent / "deepspeed"
    cmd = [str(launcher), "--num_gpus", str(num_procs), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(REPO_ROOT / "training" / "train.py"),
           "--config", str(config), "--author", author, "--run-name", run_name]
    if deepspeed is not None:
        cmd += ["--deepspeed", str(deepspeed)]
    if dataset_version:
        cmd += ["--dataset-version", dataset_version]
    if not evaluate:
        cmd.append("--no-evaluate")
    return cmd + list(extra or [])


def run_launcher(cmd: list[str], *, timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the launcher, echo its output to our log, and return rank 0's result."""
    environment = {**os.environ, **(env or {})}
    environment.setdefault("TOKENIZERS_PARALLELISM", "false")
    environment.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log.info("launching: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-4000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-4000:]
        raise LaunchError(f"training ran past {timeout_s:.0f}s; output tail:\n{tail}") from None
    output = proc.stdout + proc.stderr
    for line in output.splitlines()[-200:]:
        log.info("train | %s", line)
    results = [line.split(RESULT_PREFIX, 1)[1] for line in proc.stdout.splitlines() if RESULT_PREFIX in line]
    if proc.returncode != 0 or not results:
        raise LaunchError(f"training exited {proc.returncode} without a result; output tail:\n{output[-4000:]}")
    return json.loads(results[-1])


def launch_local(settings: Settings, author: str, *, run_name: str, config: Path | None = None,
                 dataset_version: str | None = None) -> dict[str, Any]:
    cfg = Path(config or settings.training_config or REPO_ROOT / "training" / "config.yaml")
    cmd = launcher_command(config=cfg, author=author, run_name=safe_run_name(run_name),
                           num_procs=settings.training_num_procs, dataset_version=dataset_version)
    return run_launcher(cmd, timeout_s=settings.training_timeout_s)
