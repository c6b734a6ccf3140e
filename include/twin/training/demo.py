"""One call for the demo (and anyone at a prompt): train the author's twin on the latest dataset version
with the CPU-sized config, evaluate and gate it, and say what happened.

    from twin.training.demo import demo_run
    outcome = demo_run(settings, "mara-lindqvist")   # {"model_version": "3", "gate": "passed", ...}

The same as `twin train --author A` followed by `twin model evaluate VERSION`: the deepspeed launcher
with TWIN_TRAINING_NUM_PROCS CPU ranks and ZeRO-2, then the gate; a passing version waits as
`challenger` (approval=pending) for a person (`twin model approve VERSION`, or the training DAG).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.settings import Settings
from twin.training.trainer import REPO_ROOT

DEMO_CONFIG = REPO_ROOT / "training" / "config.yaml"


def demo_run(settings: Settings, author: str, *, config: Path | None = None, dataset_version: str | None = None,
             run_name: str | None = None) -> dict[str, Any]:
    from twin.evaluation.gate import gate_version
    from twin.training.launch import launch_local

    started = time.perf_counter()
    run_name = run_name or f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    result = launch_local(settings, author, run_name=run_name, config=config or DEMO_CONFIG,
                          dataset_version=dataset_version)
    trained = time.perf_counter()
    if not result.get("model_version"):
        raise RuntimeError(f"training of {author} registered no version: {result}")
    report = gate_version(settings, author, result["model_version"])
    sft = (result.get("stages") or {}).get("sft", {})
    figures = ("perplexity", "style", "style_gain_over_base", "style_scale", "passage_similarity", "authorship",
               "grounding", "method")
    return {"author": author, "model_version": result["model_version"], "run_id": result.get("run_id"),
            "dataset_version": result.get("dataset_version"), "gate": report["gate"], "reasons": report["reasons"],
            **{key: report.get(key) for key in figures}, "sft_loss": (sft.get("first_loss"), sft.get("last_loss")),
            "train_s": round(trained - started, 1), "evaluate_s": round(time.perf_counter() - trained, 1)}
