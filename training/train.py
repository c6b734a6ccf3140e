"""Training entry point: LoRA SFT (then optional DPO) of one author's twin.

    python training/train.py --config training/config.yaml [--author A] [--output-dir DIR]
    deepspeed --num_gpus 2 --master_addr 127.0.0.1 training/train.py --config training/config.yaml \
        --deepspeed training/ds_zero2.json

On a machine without CUDA the launcher starts CPU ranks (DS_ACCELERATOR=cpu, gloo). Rerunning with
the same output folder resumes from its last checkpoint. Rank 0 prints the result as one JSON line
prefixed with TWIN_RESULT=, which the training DAG reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))  # run from a checkout without installing the package


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "config.yaml", help="training config YAML")
    parser.add_argument("--author", help="overrides the config's author")
    parser.add_argument("--dataset-version", help="overrides the config's dataset version")
    parser.add_argument("--output-dir", type=Path, help="overrides the config's output folder")
    parser.add_argument("--run-name", help="overrides the config's run name")
    parser.add_argument("--deepspeed", type=Path, help="DeepSpeed JSON config; overrides the config's")
    parser.add_argument("--max-steps", type=int, help="overrides sft.max_steps")
    parser.add_argument("--no-evaluate", action="store_true", help="register without evaluating and gating")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", "0")),
                        help="set by the deepspeed launcher")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported anywhere
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from twin.settings import get_settings
    from twin.training.config import TrainingConfig
    from twin.training.trainer import is_main_process, run_training

    overrides = {"author": args.author or os.environ.get("TWIN_AUTHOR") or None,
                 "dataset_version": args.dataset_version, "output_dir": args.output_dir, "run_name": args.run_name,
                 "deepspeed": args.deepspeed}
    config = TrainingConfig.from_yaml(args.config, **overrides) if args.config.is_file() else \
        TrainingConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.max_steps is not None:
        config.sft.max_steps = args.max_steps
    if args.no_evaluate:
        config.evaluate = False
    result = run_training(config, get_settings())
    if is_main_process():
        print("TWIN_RESULT=" + json.dumps(result.as_dict(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
