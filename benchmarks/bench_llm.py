"""LLM client throughput: instruction pairs/s through `LLMClient` beside raw batched `generate` on the
same prompts in the same run, and the local backend's tokens/s at batch 1, 8 and 16.

    .venv/bin/python -m benchmarks.bench_llm [--prompts 16] [--max-new-tokens 32]

The pipeline path is what a dataset build does per passage: render the instruction prompt from its
file, generate through the client (chat template, left padding, seeded sampling, token counts), parse
the reply and run the row filters. The baseline is `model.generate` on the same tokenised batches with
the same settings and seed, then decoding. Goal: a ratio of at least 0.8. The model (the packaged
SmolLM2-135M-Instruct) is loaded and warmed up first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.report import record

SENTENCES = [
    "A backfill is safe to rerun when every task overwrites its own partition.",
    "Late events are normal, so keep a lookback window and reprocess those partitions.",
    "Every alert that wakes someone at night needs a runbook and an owner.",
    "Retries need backoff with jitter, or every client hammers the server at once.",
    "Schema drift is cheaper to catch at the edge than to repair in the warehouse.",
    "Deduplicate on a natural key, and keep the first record you saw.",
    "A data contract names the columns, their types and who is paged when they change.",
    "Pools cap concurrency per resource, so one greedy DAG cannot starve the others.",
]


def passages(count: int) -> list[str]:
    return [" ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(3)) for i in range(count)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    import torch

    from twin.datasets import filters as F
    from twin.datasets.prompts import load_prompt
    from twin.llm import LLMClient, SamplingSettings
    from twin.llm.local import shared_local_backend

    cache = os.environ.get("TWIN_MODEL_CACHE_DIR") or str(Path(tempfile.gettempdir()) / "twin-bench-models")
    backend = shared_local_backend("packaged", cache, None)
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens, seed=11)
    prompt = load_prompt("instruction")
    texts = passages(args.prompts)
    conversations = [prompt.render(kind="an excerpt of an article", passage=t) for t in texts]
    fs = F.FilterSettings()

    def pipeline(batch_size: int) -> tuple[float, list[str], int]:
        client = LLMClient(backend, sampling, batch_size=batch_size)
        started = time.perf_counter()
        results = client.chat([prompt.render(kind="an excerpt of an article", passage=t) for t in texts])
        for result, text in zip(results, texts, strict=True):
            instruction, _ = F.parse_instruction(result)
            if instruction:
                F.instruction_problem(instruction, text, fs)
        return time.perf_counter() - started, [r.text for r in results], sum(r.completion_tokens for r in results)

    def raw(batch_size: int) -> tuple[float, list[str]]:
        tokenizer, model = backend.tokenizer, backend.hf_model
        kwargs = backend.generate_kwargs(sampling)
        started = time.perf_counter()
        out: list[str] = []
        for start in range(0, len(conversations), batch_size):
            batch = tokenizer.apply_chat_template(conversations[start:start + batch_size], add_generation_prompt=True,
                                                  padding=True, return_tensors="pt", return_dict=True)
            torch.manual_seed(sampling.seed)
            with torch.inference_mode():
                generated = model.generate(**batch, **kwargs)
            out += [t.strip() for t in tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:],
                                                              skip_special_tokens=True)]
        return time.perf_counter() - started, out

    LLMClient(backend, sampling.with_(max_new_tokens=4)).chat(conversations[:2])  # load and warm up
    batch = min(8, args.prompts)
    raw_s, raw_texts = raw(batch)
    pipe_s, pipe_texts, _ = pipeline(batch)
    same = sum(a == b for a, b in zip(raw_texts, pipe_texts, strict=True))
    print(f"{args.prompts} passages, {args.max_new_tokens} new tokens, batch {batch}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'path':<28}{'pairs/s':>10}{'seconds':>10}")
    print(f"{'raw model.generate':<28}{args.prompts / raw_s:>10.2f}{raw_s:>10.1f}")
    print(f"{'LLMClient + parse/filters':<28}{args.prompts / pipe_s:>10.2f}{pipe_s:>10.1f}")
    print(f"ratio (client / raw): {raw_s / pipe_s:.2f}  (goal >= 0.8); identical replies {same}/{args.prompts}")
    record("llm", "LLMClient + parse/filters", args.prompts / pipe_s, "raw model.generate", args.prompts / raw_s,
           "pairs/s", goal=">= 0.8")

    print(f"\n{'batch':<8}{'tokens/s':>10}{'prompts':>9}")
    for size in (1, 8, 16):
        n = min(args.prompts, 4 if size == 1 else max(size, 1))
        client = LLMClient(backend, sampling, batch_size=size)
        started = time.perf_counter()
        results = client.chat(conversations[:n])
        elapsed = time.perf_counter() - started
        print(f"{size:<8}{sum(r.completion_tokens for r in results) / elapsed:>10.1f}{n:>9}")


if __name__ == "__main__":
    main()
