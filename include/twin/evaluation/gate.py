"""Evaluate a registered version on the author's held-out set beside the base model (and the champion),
record the figures on the version and its MLflow run, and gate it.

The gate (thresholds in settings, TWIN_GATE_*) passes a version only if it is measurably more the
author than the base model: the lower bound of its style-similarity gain over the base is above the
threshold, the authorship check attributes more of its answers to the author than the base's, its
held-out perplexity is not above the base's (times a ratio), and it trails the champion by no more than
a tolerance. A version that passes becomes `challenger` with approval=pending; nothing here makes a
champion (a person does, see twin.registry).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from twin.evaluation.grounding import grounded_prompts, judge_from_settings, lexical_support, top_k
from twin.evaluation.metrics import AuthorshipClassifier, bootstrap_mean, centroid_similarity, cosine_rows, perplexity
from twin.registry import CHAMPION, ModelRegistry
from twin.settings import Settings
from twin.training.data import load_training_data

log = logging.getLogger(__name__)

STYLE_SCALE_PASSAGES = 200  # passages per side of the style figure's scale (embedding them costs seconds)
HEURISTIC = "heuristic: embedding similarity, char n-gram authorship and perplexity; no LLM judge configured"


def other_authors_passages(settings: Settings, author: str) -> list[str]:
    """Other authors' training passages: the latest dataset version of each other author."""
    from twin.datasets.versions import DatasetVersions
    from twin.storage.artifacts import get_artifact_store

    versions = DatasetVersions(get_artifact_store(settings))
    latest: dict[str, str] = {}
    for manifest in versions.list():  # oldest first: the last one seen per author is the newest
        if manifest.get("author_id") and manifest["author_id"] != author:
            latest[manifest["author_id"]] = manifest["version"]
    return [r["output"] for other, v in sorted(latest.items())
            for r in versions.rows(other, v, "instruction", "train")]


def stored_report(settings: Settings, author: str, version: str) -> dict[str, Any] | None:
    """The gate's figures as recorded on a version that was evaluated already, else None: a rerun of the
    DAG (or of its evaluate task) on that version decides on the same figures instead of re-scoring."""
    info = ModelRegistry(settings).get(author, version)
    if info.tags.get("gate") not in ("passed", "failed"):
        return None

    def figure(key: str) -> float | None:
        return float(info.metrics[key]) if key in info.metrics else None

    reasons = [r for r in info.tags.get("gate_reasons", "").split("; ") if r]
    authorship = None if figure("authorship") is None else {"candidate": figure("authorship"),
                                                             "base": figure("authorship_base")}
    return {"author": author, "version": str(version), "gate": info.tags["gate"], "reasons": reasons,
            "perplexity": {"candidate": figure("perplexity"), "base": figure("perplexity_base")},
            "style_gain_over_base": {"mean": figure("style_gain"), "low": figure("style_gain_low"),
                                     "high": figure("style_gain_high")},
            "authorship": authorship, "method": info.tags.get("eval_method", ""), "stored": True}


def gate_version(settings: Settings, author: str, version: str) -> dict[str, Any]:
    """The gate's report on a version: its recorded figures when it was evaluated before (a passing, still
    undecided version is challenger again), else a fresh evaluation."""
    report = stored_report(settings, author, version)
    if report is None:
        return evaluate_and_gate(settings, author, version)
    registry = ModelRegistry(settings)
    if report["gate"] == "passed" and registry.get(author, version).approval not in ("approved", "rejected"):
        registry.mark_challenger(author, str(version))
    return report


def evaluate_and_gate(settings: Settings, author: str, version: str) -> dict[str, Any]:
    import mlflow
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twin.features.embedding import Embedder
    from twin.llm.base import SamplingSettings
    from twin.llm.client import LLMClient
    from twin.llm.local import LocalBackend, resolve_model

    registry = ModelRegistry(settings)
    info = registry.get(author, version)
    base_model = info.tags.get("base_model", "packaged")
    data = load_training_data(settings, author, info.tags.get("dataset_version"))
    held_out = data.instruction_test[: settings.eval_max_examples]
    if not held_out:
        raise RuntimeError(f"dataset {author}/{data.version} has no held-out instruction rows to evaluate on")

    cache = settings.resolved_model_cache_dir
    base_path, base_revision = resolve_model(base_model, cache)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    tmp = tempfile.TemporaryDirectory(prefix="twin-eval-")
    candidate_dir = mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=f"{tmp.name}/candidate",
                                                        tracking_uri=settings.resolved_mlflow_uri)
    model = PeftModel.from_pretrained(model, candidate_dir, adapter_name="candidate").eval()
    labels = ["base", "candidate"]
    champion = registry.alias_version(author, CHAMPION)
    champion_note = "no champion yet"
    if champion is not None and champion != str(version):
        champ = registry.get(author, champion)
        if champ.tags.get("base_model", "packaged") == base_model:
            champion_dir = mlflow.artifacts.download_artifacts(artifact_uri=champ.source,
                                                               dst_path=f"{tmp.name}/champion",
                                                               tracking_uri=settings.resolved_mlflow_uri)
            model.load_adapter(champion_dir, adapter_name="champion")
            labels.append("champion")
            champion_note = f"champion is version {champion}, scored on the same held-out set"
        else:
            champion_note = f"champion {champion} has another base model: not compared"

    @contextmanager
    def as_model(label: str) -> Iterator[None]:
        if label == "base":
            with model.disable_adapter():  # the base model is the PEFT model with its adapters off
                yield
        else:
            model.set_adapter(label)
            with nullcontext():
                yield

    backend = LocalBackend.from_loaded(tokenizer, model, name=f"twin-{author}@{version}",
                                       revision=str(version), cache_dir=cache)
    client = LLMClient(backend, SamplingSettings(temperature=0.0, max_new_tokens=settings.eval_max_new_tokens,
                                                 repetition_penalty=settings.llm_repetition_penalty,
                                                 seed=settings.llm_seed), batch_size=settings.llm_batch_size)
    instructions = [r["instruction"] for r in held_out]
    references = [r["output"] for r in held_out]
    embedder = Embedder(settings.embedding_model, batch_size=settings.embedding_batch_size,
                        device=settings.embedding_device)
    # Grounding: a few held-out questions answered with the author's retrieved training passages in the prompt.
    library = [r["output"] for r in data.instruction_train]
    grounded_questions = instructions[: settings.eval_grounding_examples] if library else []
    contexts = [[library[i] for i in row] for row in top_k(
        embedder.encode(grounded_questions), embedder.encode(library), settings.eval_grounding_k)] \
        if grounded_questions else []
    answers: dict[str, list[str]] = {}
    grounded_answers: dict[str, list[str]] = {}
    ppl: dict[str, float] = {}
    for label in labels:
        with as_model(label):
            ppl[label] = perplexity(model, tokenizer, [r["messages"] for r in held_out])
            answers[label] = [g.text for g in client.chat(instructions)]
            if grounded_questions:
                grounded_answers[label] = [g.text for g in client.chat(grounded_prompts(grounded_questions,
                                                                                        contexts))]
    tmp.cleanup()

    # Style: each answer against all of the author's held-out passages (their mean embedding), so it asks
    # "does this read like her writing?" rather than "does it restate the one article the question came from".
    answer_vectors = {label: embedder.encode(answers[label]) for label in labels}
    held_out_texts = list(dict.fromkeys(r["output"] for r in data.instruction_test))
    held_out_vectors = embedder.encode(held_out_texts)
    style = {label: centroid_similarity(answer_vectors[label], held_out_vectors) for label in labels}
    vector_of = dict(zip(held_out_texts, held_out_vectors, strict=True))  # the references are held-out passages
    reference_vectors = [vector_of[text] for text in references]
    passage = {label: float(np.mean(cosine_rows(answer_vectors[label], reference_vectors))) for label in labels}
    boot = settings.eval_bootstrap_samples
    intervals = {label: bootstrap_mean(style[label], samples=boot, seed=settings.llm_seed) for label in labels}
    gain = bootstrap_mean([c - b for c, b in zip(style["candidate"], style["base"], strict=True)], samples=boot,
                          seed=settings.llm_seed)

    others = other_authors_passages(settings, author)
    # What the style figure means on real writing: the author's own training passages (never part of the
    # held-out mean) and other authors' passages, scored the same way. A twin near the first reads like her.
    def style_of(texts: list[str]) -> float | None:
        sample = texts[:STYLE_SCALE_PASSAGES]
        return float(np.mean(centroid_similarity(embedder.encode(sample), held_out_vectors))) if sample else None

    style_scale = {"author_training_passages": style_of(library), "other_authors_passages": style_of(others)}
    authorship: dict[str, float] | None = None
    authorship_note = "no other author's dataset to contrast with: authorship check skipped"
    if others:
        classifier = AuthorshipClassifier([r["output"] for r in data.instruction_train], others, seed=settings.llm_seed)
        authorship = {label: classifier.author_share(answers[label]) for label in labels}
        authorship["held_out_passages"] = classifier.author_share(references)  # the check's own recall
        authorship_note = (f"char n-gram logistic regression on {classifier.training_sizes['author']} passages of the "
                           f"author and {classifier.training_sizes['others']} of others")

    boot_seed = {"samples": boot, "seed": settings.llm_seed}
    grounding = {label: bootstrap_mean([lexical_support(a, c) for a, c in zip(grounded_answers[label], contexts,
                                                                              strict=True)], **boot_seed)
                 for label in grounded_answers}
    grounding_note = (f"lexical support of {len(grounded_questions)} answers in the {settings.eval_grounding_k} "
                      "training passages retrieved for each (heuristic)" if grounding
                      else "no grounding examples (TWIN_EVAL_GROUNDING_EXAMPLES=0 or no training passages)")
    judge = judge_from_settings(settings)
    judged: dict[str, dict[str, float]] = {}
    judge_note = "no judge endpoint configured (TWIN_JUDGE_BASE_URL): heuristics only"
    if judge is not None and grounded_questions:
        n = len(grounded_questions)
        for label in labels:
            style_v = judge.grade(grounded_questions, references[:n], contexts, answers[label][:n])
            ground_v = judge.grade(grounded_questions, references[:n], contexts, grounded_answers[label])
            ok_style = [v.style for v in style_v if v is not None]
            ok_ground = [v.grounded for v in ground_v if v is not None]
            judged[label] = {"style": float(np.mean(ok_style)) if ok_style else float("nan"),
                             "grounded": float(np.mean(ok_ground)) if ok_ground else float("nan"),
                             "unparsed": float(2 * n - len(ok_style) - len(ok_ground))}
        judge_note = f"LLM judge {judge.name} with prompt judge.txt, scores 1-5 on {n} answers per model"
    method = f"llm-judge ({judge.name}) + {HEURISTIC}" if judged else HEURISTIC

    reasons: list[str] = []
    if gain.low <= settings.gate_min_style_gain:
        reasons.append(f"style gain over base {gain.mean:+.4f} (95% CI {gain.low:+.4f}..{gain.high:+.4f}) "
                       f"not above {settings.gate_min_style_gain}")
    if authorship is not None and authorship["candidate"] - authorship["base"] <= settings.gate_min_authorship_gain:
        reasons.append(f"authorship share {authorship['candidate']:.2f} vs base {authorship['base']:.2f}: "
                       f"gain not above {settings.gate_min_authorship_gain}")
    if ppl["candidate"] > ppl["base"] * settings.gate_max_perplexity_ratio:
        reasons.append(f"perplexity {ppl['candidate']:.2f} above base {ppl['base']:.2f} x "
                       f"{settings.gate_max_perplexity_ratio}")
    if "champion" in labels:
        tol = settings.gate_champion_tolerance
        if intervals["candidate"].mean < intervals["champion"].mean - tol:
            reasons.append(f"style {intervals['candidate'].mean:.4f} below champion {intervals['champion'].mean:.4f}")
        if authorship is not None and authorship["candidate"] < authorship["champion"] - tol:
            reasons.append(f"authorship {authorship['candidate']:.2f} below champion {authorship['champion']:.2f}")
    passed = not reasons

    report: dict[str, Any] = {
        "author": author, "version": str(version), "dataset_version": data.version, "base_model": base_model,
        "base_revision": base_revision, "examples": len(held_out), "method": method, "perplexity": ppl,
        "grounding": {k: v.as_dict() for k, v in grounding.items()}, "grounding_note": grounding_note,
        "judge": judged or None, "judge_note": judge_note,
        "style": {k: v.as_dict() for k, v in intervals.items()}, "style_gain_over_base": gain.as_dict(),
        "style_note": f"MiniLM cosine of each answer to the mean of the author's {len(held_out_vectors)} held-out "
                      "passages", "style_scale": style_scale, "passage_similarity": passage,
        "authorship": authorship, "authorship_note": authorship_note, "champion_note": champion_note,
        "gate": "passed" if passed else "failed", "reasons": reasons,
        "samples": [{"instruction": i, "reference": r, **{label: answers[label][n] for label in labels}}
                    for n, (i, r) in enumerate(zip(instructions, references, strict=True))][:8],
    }
    metrics = {"eval.perplexity": ppl["candidate"], "eval.perplexity_base": ppl["base"],
               "eval.style": intervals["candidate"].mean, "eval.style_low": intervals["candidate"].low,
               "eval.style_high": intervals["candidate"].high, "eval.style_base": intervals["base"].mean,
               "eval.style_gain": gain.mean, "eval.style_gain_low": gain.low, "eval.style_gain_high": gain.high,
               "eval.passage_similarity": passage["candidate"], "eval.passage_similarity_base": passage["base"]}
    if authorship is not None:
        metrics.update({"eval.authorship": authorship["candidate"], "eval.authorship_base": authorship["base"]})
    if "champion" in labels:
        metrics["eval.style_champion"] = intervals["champion"].mean
    if grounding:
        ground = grounding["candidate"]
        metrics.update({"eval.grounding": ground.mean, "eval.grounding_low": ground.low,
                        "eval.grounding_high": ground.high, "eval.grounding_base": grounding["base"].mean})
    for label, scores in judged.items():
        suffix = "" if label == "candidate" else f"_{label}"
        metrics.update({f"eval.judge_{key}{suffix}": value for key, value in scores.items()})
    registry.set_tags(author, str(version), {**{k: f"{v:.4f}" for k, v in metrics.items()},
                                             "gate": report["gate"], "gate_reasons": "; ".join(reasons)[:4000],
                                             "eval_method": "llm-judge+heuristic" if judged else "heuristic"})
    if info.run_id:
        client_ml = registry.client
        for key, value in metrics.items():
            client_ml.log_metric(info.run_id, key, value)
        client_ml.log_dict(info.run_id, report, "evaluation/report.json")
        client_ml.set_tag(info.run_id, "twin.gate", report["gate"])
    if passed:
        registry.mark_challenger(author, str(version))
    log.info("evaluation of %s@%s: %s", author, version, json.dumps({k: report[k] for k in ("gate", "reasons")}))
    return report
