"""GPU check: the same LoRA SFT under `deepspeed --num_gpus N` with ZeRO-2 and ZeRO-3 (bf16 where the GPU
has it), tokens/s and model FLOPs utilisation per stage, then the ZeRO-2 adapter loaded onto the base
model and asked a question. Prints a PASS/FAIL line per check and exits non-zero if any failed.

    .venv/bin/python training/gpu_check.py [--gpus N] [--steps 20] [--stages 2,3] [--peak-tflops T]
    .venv/bin/python training/gpu_check.py --allow-cpu --stages 2 --steps 3   # dry run of the same path on CPUs

Training runs through benchmarks/bench_training.py's worker (TRL SFTTrainer + PEFT LoRA on the packaged
SmolLM2-135M-Instruct and the sample corpus), so nothing is fetched. MFU = 6 * parameters * tokens/s /
(peak FLOP/s per GPU * GPUs): the usual dense-training estimate, an upper bound of the work a LoRA step
does (frozen weights get no weight gradients). Peak: --peak-tflops, else a table of dense bf16 peaks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "include")]

# Dense bf16 tensor-core peaks (TFLOP/s per GPU, no sparsity), matched on the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
               "A10": 125.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def generate_with_adapter(base_path: str | Path, adapter: Path, cuda: bool) -> str:
    """The base model with the trained adapter answers one question (greedy); returns the answer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype).to("cuda" if cuda else "cpu")
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What do you think about backfills?"}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    with torch.inference_mode():
        output = model.generate(**prompt, max_new_tokens=40, do_sample=False, repetition_penalty=1.2)
    return tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, help="ranks (default: every visible GPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per ZeRO stage")
    parser.add_argument("--global-batch", type=int, help="rows per step over all ranks (default 8 per rank)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per row")
    parser.add_argument("--stages", default="2,3", help="ZeRO stages to run (configs training/ds_zero<S>.json)")
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s of one GPU, for MFU")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on CPU ranks when there is no GPU")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per training run")
    args = parser.parse_args(argv)

    import torch

    checks: list[tuple[str, bool, str]] = []
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("FAIL  cuda: no GPU visible to torch (pass --allow-cpu for a CPU dry run)")
        return 1
    gpus = args.gpus or (torch.cuda.device_count() if cuda else 2)
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_tflops(device, args.peak_tflops) if cuda else None
    checks.append(("device", True, f"{gpus} x {device}, torch {torch.__version__}, "
                                   f"bf16 {'yes' if cuda and torch.cuda.is_bf16_supported() else 'no'}"))
    global_batch = args.global_batch or 8 * gpus

    from benchmarks.bench_training import AUTHOR, run
    from twin.llm.local import resolve_model
    from twin.training.launch import launcher_command

    cache = os.environ.get("TWIN_MODEL_CACHE_DIR") or str(ROOT / ".cache" / "models")
    base_path, _ = resolve_model("packaged", Path(cache))
    out = Path(os.environ.get("GPU_CHECK_DIR") or ROOT / ".cache" / "gpu_check")
    worker = str(ROOT / "benchmarks" / "bench_training.py")
    adapters: dict[str, Path] = {}
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        ds_config = ROOT / "training" / f"ds_zero{stage}.json"
        prefix = launcher_command(config=Path(), author=AUTHOR, run_name="gpu-check", num_procs=gpus)[:7]
        cmd = [*prefix, worker, "--worker", "--steps", str(args.steps + 1), "--global-batch", str(global_batch),
               "--max-length", str(args.max_length),
               "--model-cache", cache, "--deepspeed", str(ds_config), "--output-dir", str(out / f"zero{stage}"),
               "--save-adapter"]
        try:
            r = run(cmd, args.timeout)
        except Exception as exc:
            checks.append((f"zero{stage} train", False, str(exc)[-1500:]))
            continue
        mfu = (6 * r["parameters"] * r["tokens_per_s"] / (peak * 1e12 * gpus)) if peak else None
        detail = (f"{r['tokens_per_s']:.0f} tokens/s, {r['steps_per_s']:.2f} steps/s over {r['steps']} steps, "
                  f"bf16 {r['bf16']}, MFU " + (f"{100 * mfu:.1f}%" if mfu is not None else "n/a (no peak known)"))
        adapter = out / f"zero{stage}" / "adapter"
        ok = r["tokens_per_s"] > 0 and (adapter / "adapter_config.json").is_file() and (not cuda or r["bf16"])
        checks.append((f"zero{stage} train", ok, detail))
        if ok:
            adapters[stage] = adapter

    if adapters:
        stage, adapter = next(iter(adapters.items()))
        started = time.perf_counter()
        try:
            text = generate_with_adapter(base_path, adapter, cuda)
            checks.append((f"zero{stage} adapter generates", bool(text),
                           f"{time.perf_counter() - started:.1f}s: {text[:120]!r}"))
        except Exception as exc:
            checks.append((f"zero{stage} adapter generates", False, repr(exc)[:1500]))
    else:
        checks.append(("adapter generates", False, "no stage produced an adapter"))

    print("\n=== GPU check ===")
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    failed = [name for name, ok, _ in checks if not ok]
    print(f"=== {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)} ===")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
