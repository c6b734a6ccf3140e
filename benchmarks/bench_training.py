"""Training throughput: tokens/s of one tiny LoRA SFT under the deepspeed launcher (ZeRO-2, N ranks)
beside the plain transformers Trainer in one `python` process, on the same model, rows and global
batch, in the same run.

    .venv/bin/python -m benchmarks.bench_training [--steps 4] [--max-length 128] [--ranks 2] [--deepspeed …]

Both runs go through TRL's SFTTrainer with a PEFT LoraConfig on the packaged SmolLM2-135M-Instruct
and the sample corpus's mara-lindqvist passages (chat-templated, as training/train.py trains). The
clock starts after the first step (model load, DeepSpeed's op compile and the first step's warm-up
are not counted); tokens are the Trainer's own count of input tokens seen, over all ranks. Goal: a
ratio of at least 1.0 (on CPUs the ranks share the same cores, so the launcher mostly adds overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = "BENCH_RESULT="
AUTHOR = "mara-lindqvist"


def corpus_rows(author: str = AUTHOR) -> list[dict]:
    """Conversational SFT rows from the sample corpus: each paragraph answers a question on its article."""
    from lxml import html

    from twin.demo.corpus_files import SITE_DIR, article_paths

    rows = []
    for path in article_paths(author):
        page = html.fromstring((SITE_DIR / path.lstrip("/")).read_text())
        title = page.findtext(".//h1").strip().split(":")[0].lower()
        for p in page.iterfind(".//div[@class='post-body']/p"):
            text = " ".join(p.text_content().split())
            if len(text) >= 80:
                rows.append({"messages": [{"role": "user", "content": f"What do you think about {title}?"},
                                          {"role": "assistant", "content": text}]})
    return rows


def worker(args: argparse.Namespace) -> None:
    """One training run (one rank of it under the launcher); rank 0 prints the figures."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from twin.llm.local import resolve_model
    from twin.training.config import TrainingConfig
    from twin.training.trainer import distributed_kwargs, is_main_process

    world = int(os.environ.get("WORLD_SIZE", "1"))
    path, _ = resolve_model("packaged", Path(args.model_cache))
    config = TrainingConfig(author=AUTHOR, deepspeed=args.deepspeed or None)
    dist = distributed_kwargs(config)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if dist["bf16"] else torch.float32)
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    per_device = args.global_batch // world
    sft = SFTConfig(output_dir=args.output_dir, max_steps=args.steps, learning_rate=5e-4,
                    per_device_train_batch_size=per_device, gradient_accumulation_steps=1, max_length=args.max_length,
                    gradient_checkpointing=False,  # as training/config.yaml (TRL turns it on by default)
                    save_strategy="no", logging_steps=args.steps, report_to="none", disable_tqdm=True, seed=42,
                    dataloader_num_workers=0, include_num_input_tokens_seen="all", **dist)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_list(corpus_rows()),
                         processing_class=tokenizer, peft_config=lora, callbacks=[Clock()])
    trainer.train()
    if args.save_adapter:
        trainer.save_model(str(Path(args.output_dir) / "adapter"))  # every rank takes part (ZeRO-3 gathers)
    if is_main_process():
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        # Under ZeRO-3 a rank holds a shard of each weight: ds_numel is the whole weight's size.
        params = sum(getattr(p, "ds_numel", 0) or p.numel() for p in trainer.model.parameters())
        print(RESULT + json.dumps({"ranks": world, "steps": len(marks) - 1, "seconds": t1 - t0, "tokens": n1 - n0,
                                   "parameters": params, "bf16": bool(dist["bf16"]),
                                   "tokens_per_s": (n1 - n0) / (t1 - t0), "steps_per_s": (len(marks) - 1) / (t1 - t0)}),
              flush=True)


def run(cmd: list[str], timeout: float) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "include"), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line.split(RESULT, 1)[1] for line in proc.stdout.splitlines() if RESULT in line]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:4])} … exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps (one more runs first, untimed)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per row (longer rows are cut)")
    parser.add_argument("--ranks", type=int, default=2, help="deepspeed launcher ranks")
    parser.add_argument("--global-batch", type=int, default=4, help="rows per optimizer step, all ranks together")
    parser.add_argument("--deepspeed", default=str(ROOT / "training" / "ds_zero2.json"))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--model-cache", help=argparse.SUPPRESS)
    parser.add_argument("--save-adapter", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.worker:
        worker(args)
        return
    if args.global_batch % args.ranks:
        parser.error("--global-batch must be a multiple of --ranks")

    from twin.training.launch import launcher_command

    cache = os.environ.get("TWIN_MODEL_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "twin-bench-models")
    from twin.llm.local import resolve_model

    resolve_model("packaged", Path(cache))  # dequantised once, before any rank starts
    script = str(Path(__file__).resolve())
    common = ["--worker", "--steps", str(args.steps + 1), "--global-batch", str(args.global_batch),
              "--max-length", str(args.max_length),
              "--model-cache", cache]
    with tempfile.TemporaryDirectory(prefix="twin-bench-train-") as tmp:
        plain = run([sys.executable, script, *common, "--deepspeed", "", "--output-dir", f"{tmp}/plain"],
                    args.timeout)
        # The platform's own launcher line (free loopback port, N ranks), pointed at this script.
        prefix = launcher_command(config=Path(), author=AUTHOR, run_name="bench", num_procs=args.ranks)[:7]
        ds = run([*prefix, script, *common, "--deepspeed", args.deepspeed, "--output-dir", f"{tmp}/ds"],
                 args.timeout)
    print(f"\nLoRA SFT of SmolLM2-135M, global batch {args.global_batch}, {args.steps} timed steps")
    print(f"{'run':<34} {'ranks':>5} {'tokens/s':>9} {'steps/s':>8} {'wall s':>7}")
    for name, r in (("plain Trainer (python)", plain), (f"deepspeed launcher, {Path(args.deepspeed).name}", ds)):
        print(f"{name:<34} {r['ranks']:>5} {r['tokens_per_s']:>9.1f} {r['steps_per_s']:>8.3f} {r['wall_s']:>7.1f}")
    from benchmarks import report

    report.record("training", f"LoRA SFT, deepspeed launcher ({args.ranks} ranks, {Path(args.deepspeed).stem})",
                  ds["tokens_per_s"], "plain Trainer (python, 1 process)", plain["tokens_per_s"], "tokens/s",
                  goal=">= 1.0")
    print(f"ratio deepspeed / plain: {ds['tokens_per_s'] / plain['tokens_per_s']:.2f}x tokens/s "
          f"(goal >= 1.0), {ds['steps_per_s'] / plain['steps_per_s']:.2f}x steps/s")


if __name__ == "__main__":
    main()
