"""Serving: the batching gain of the LLM deployment at 16 concurrent clients over sequential calls,
and Serve's overhead against the same generation called in-process, all measured in one run.

Ray starts on 127.0.0.1 with the LLM deployment alone (the packaged model, no registry needed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from benchmarks.report import record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    from ray import serve

    from twin.llm.client import local_client
    from twin.serving.llm import TwinLLM
    from twin.settings import load_settings

    settings = load_settings()
    questions = [[{"role": "user", "content": f"Give one tip about data pipeline number {i}."}]
                 for i in range(args.clients)]
    request = {"max_new_tokens": args.max_new_tokens, "temperature": 0}

    client = local_client(settings.base_model, settings)  # the same generation, in-process, one at a time
    sampling = client.settings_for(max_new_tokens=args.max_new_tokens, temperature=0)
    client.chat(questions[:1], sampling=sampling)  # warm
    start = time.perf_counter()
    for q in questions:
        client.chat([q], sampling=sampling)
    in_process = time.perf_counter() - start

    ray.init(num_cpus=4, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        handle = serve.run(TwinLLM.options(ray_actor_options={"num_cpus": 2}).bind(
            {"serve_max_batch_size": args.clients, "serve_batch_wait_s": 0.05}), name="bench-llm", route_prefix=None)
        base = handle.options(multiplexed_model_id="base")
        base.load.remote().result(timeout_s=600)

        async def run(concurrent: bool) -> tuple[float, list[float], list[int]]:
            latencies: list[float] = []
            sizes: list[int] = []

            async def one(messages: list[dict[str, str]]) -> None:
                t = time.perf_counter()
                reply = await base.generate.remote({"messages": messages, **request})
                latencies.append(time.perf_counter() - t)
                sizes.append(reply["batch_size"])

            began = time.perf_counter()
            if concurrent:
                await asyncio.gather(*(one(q) for q in questions))
            else:
                for q in questions:
                    await one(q)
            return time.perf_counter() - began, latencies, sizes

        sequential, seq_lat, _ = asyncio.run(run(False))
        batched, bat_lat, sizes = asyncio.run(run(True))
    finally:
        serve.shutdown()
        ray.shutdown()
    n = args.clients
    print(f"{n} generations of {args.max_new_tokens} tokens (packaged model, CPU):")
    print(f"  in-process, sequential      {n / in_process:6.2f} req/s")
    print(f"  through Serve, sequential   {n / sequential:6.2f} req/s  p50 {statistics.median(seq_lat):.2f} s")
    print(f"  through Serve, {n} at once   {n / batched:6.2f} req/s  p50 {statistics.median(bat_lat):.2f} s  "
          f"batch sizes {sorted(set(sizes))}")
    print(f"batching gain: {sequential / batched:.2f}x (goal >= 4x); Serve overhead sequential: "
          f"{(sequential - in_process) / in_process * 100:+.1f}% (goal <= 10%)")
    record("serving", f"Serve, {n} concurrent (batched)", n / batched, "Serve, sequential", n / sequential, "req/s",
           goal=">= 4x")
    record("serving", "Serve, sequential", n / sequential, "in-process, sequential", n / in_process, "req/s",
           goal=">= 0.91x (overhead <= 10%)")


if __name__ == "__main__":
    main()
