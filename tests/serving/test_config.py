"""The Serve config YAML and the GPU (vLLM) backend's configuration, without starting Serve."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from twin.serving.vllm import VLLMUnavailable, build_vllm_app, llm_config
from twin.settings import load_settings

CONFIG = Path(__file__).resolve().parents[2] / "serving" / "serve_config.yaml"


def test_the_serve_config_is_valid_and_names_both_deployments() -> None:
    from ray.serve.schema import ServeDeploySchema

    from twin.serving.app import TwinRAG
    from twin.serving.llm import TwinLLM

    schema = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    [app] = schema.applications
    assert app.import_path == "twin.serving.app:app_builder" and schema.http_options.host == "127.0.0.1"
    names = {d.name for d in app.deployments}
    assert names == {TwinLLM.name, TwinRAG.name}
    assert all(d.autoscaling_config for d in app.deployments)


def test_the_vllm_config_serves_each_version_as_a_lora_adapter() -> None:
    settings = load_settings(serve_max_models_per_replica=4, serve_max_batch_size=8)
    config = llm_config(settings, model_source="/models/smollm2", author="ada", lora_root="s3://twin/adapters/ada")
    assert config["model_loading_config"] == {"model_id": "twin-ada", "model_source": "/models/smollm2"}
    assert config["lora_config"] == {"dynamic_lora_loading_path": "s3://twin/adapters/ada",
                                     "max_num_adapters_per_replica": 4}
    assert config["engine_kwargs"]["enable_lora"] and config["engine_kwargs"]["max_num_seqs"] == 64
    plain = llm_config(settings, model_source="/models/smollm2", author="ada")
    assert "lora_config" not in plain and not plain["engine_kwargs"]["enable_lora"]


HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: the real build runs in the GPU test")
def test_without_vllm_the_gpu_backend_says_why() -> None:
    with pytest.raises(VLLMUnavailable, match="vLLM"):
        build_vllm_app([llm_config(load_settings(), model_source="/m", author="ada")])


def _gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not (HAS_VLLM and _gpu()), reason="needs vLLM and a CUDA GPU (the GPU image)")
def test_the_vllm_app_answers_on_a_gpu(tmp_path: Path) -> None:
    """On the GPU image: Serve LLM over the packaged base model answers an OpenAI chat request."""
    import httpx
    import ray
    from ray import serve

    from tests.fixtures.processes import free_port
    from twin.llm.local import resolve_model

    settings = load_settings()
    folder, _ = resolve_model("packaged", settings.resolved_model_cache_dir)
    port = free_port()
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_vllm_app([llm_config(settings, model_source=folder, author="ada", max_model_len=2048)]),
                  name="twin-vllm", route_prefix="/")
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300, json={
            "model": "twin-ada", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    finally:
        serve.shutdown()
        ray.shutdown()


def test_serve_up_refuses_to_open_the_api_beyond_loopback_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from twin.cli import app
    from twin.settings import get_settings

    monkeypatch.setenv("TWIN_HOST", "0.0.0.0")
    monkeypatch.delenv("TWIN_SERVE_API_KEYS", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "up", "--no-wait"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "TWIN_SERVE_API_KEYS" in result.output


def test_serve_up_never_serves_without_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TWIN_SERVE_API_KEYS: one key is generated for the local stack, private to its owner, and reused."""
    from twin.serving.cli import api_keys

    settings = load_settings(data_dir=tmp_path, serve_api_keys=None)
    assert api_keys(settings) is None  # reading alone creates nothing
    key = api_keys(settings, create=True)
    path = tmp_path / "stack" / "serve_api_key"
    assert key and len(key) >= 40 and path.read_text().strip() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert api_keys(settings, create=True) == key
    chosen = ",".join(("client-a", "client-b"))  # keys an operator sets win over the generated one
    assert api_keys(load_settings(data_dir=tmp_path, serve_api_keys=chosen)) == chosen
