"""The GPU backend: the twin on vLLM through Ray Serve LLM (`ray.serve.llm`), LoRA adapters per version.

vLLM pins its own torch, so it lives in the GPU image (docker compose), not in this lock. The config is
built as plain data here (tested everywhere); `build_vllm_app` turns it into Serve LLM's OpenAI app
where vLLM is installed and says why not elsewhere.
"""

from __future__ import annotations

from typing import Any

from twin.settings import Settings


class VLLMUnavailable(RuntimeError):
    """Ray Serve LLM cannot run here (no vLLM, or no GPU)."""


def llm_config(settings: Settings, *, model_source: str, author: str, lora_root: str | None = None,
               max_model_len: int = 4096) -> dict[str, Any]:
    """Keyword arguments of `ray.serve.llm.LLMConfig` for one author's twin.

    `model_source` is the base model (a folder or model id); `lora_root` a folder or s3:// prefix whose
    sub-folders are the registered versions' adapters (`<root>/<version>/`), loaded on demand and
    addressed as `twin-<author>:<version>`.
    """
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": f"twin-{author}", "model_source": model_source},
        "deployment_config": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2,
                                                     "target_ongoing_requests": settings.serve_max_batch_size * 4}},
        "engine_kwargs": {"max_model_len": max_model_len, "max_num_seqs": settings.serve_max_batch_size * 8,
                          "enable_lora": lora_root is not None, "dtype": "bfloat16"},
        "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}},
    }
    if lora_root is not None:
        config["lora_config"] = {"dynamic_lora_loading_path": lora_root,
                                 "max_num_adapters_per_replica": settings.serve_max_models_per_replica}
        config["engine_kwargs"]["max_lora_rank"] = 64
    return config


def build_vllm_app(configs: list[dict[str, Any]]) -> Any:
    """Serve LLM's OpenAI-compatible application over these configs (needs vLLM and a GPU)."""
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as exc:
        raise VLLMUnavailable(f"Ray Serve LLM needs vLLM, which only the GPU image installs: {exc}") from None
    return build_openai_app({"llm_configs": [LLMConfig(**c) for c in configs]})
