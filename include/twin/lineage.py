"""Lineage you can follow: `twin lineage AUTHOR@VERSION|TRACE_ID`.

From a model version: its registry tags (training run, dataset version) -> the dataset manifest ->
its source documents -> cleaned document (ETL run) -> raw document -> crawl run. From a served trace:
the request in `served_requests` (author, version) -> the MLflow trace's retrieval span (documents the
answer was grounded on) -> the same document chain, and the model version's lineage.
A missing link is reported as missing, never guessed.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from twin.settings import Settings, get_settings


class LineageError(LookupError):
    """The starting point (model version or trace) is unknown."""


def document_chain(store: Any, document_id: str) -> dict[str, Any]:
    """cleaned document -> raw document -> crawl run of one document id; missing links named."""
    from twin.models import CleanedDocument, RawDocument
    from twin.storage.documents import Collections

    chain: dict[str, Any] = {"document_id": document_id, "missing": []}
    cleaned = store.get(Collections.CLEANED_DOCUMENTS, CleanedDocument, document_id)
    if cleaned is None:
        chain["missing"].append("cleaned document")
    else:
        chain["cleaned"] = {"etl_run_id": cleaned.etl_run_id, "content_hash": cleaned.content_hash,
                            "cleaned_at": cleaned.cleaned_at.isoformat(), "duplicate_of": cleaned.duplicate_of}
    raw = store.get(Collections.RAW_DOCUMENTS, RawDocument, cleaned.raw_id if cleaned else document_id)
    if raw is None:
        chain["missing"].append("raw document")
        return chain
    chain["raw"] = {"id": raw.id, "url": raw.url, "title": raw.title, "source_kind": str(raw.source_kind),
                    "content_hash": raw.content_hash, "first_seen": raw.first_seen.isoformat(),
                    "crawl_run_id": raw.crawl_run_id, "tombstoned_at": raw.tombstoned_at and
                    raw.tombstoned_at.isoformat()}
    run = store.get_crawl_run(raw.crawl_run_id)
    if run is None:
        chain["missing"].append("crawl run")
    else:
        chain["crawl_run"] = {"id": run.id, "started_at": run.started_at.isoformat(),
                              "finished_at": run.finished_at and run.finished_at.isoformat(),
                              "links": len(run.outcomes), "error": run.error}
    return chain


def model_lineage(settings: Settings, author: str, version: str, store: Any = None) -> dict[str, Any]:
    from twin.datasets.versions import DatasetVersions, VersionNotFoundError
    from twin.registry import ModelRegistry, RegistryError
    from twin.storage.artifacts import get_artifact_store
    from twin.storage.documents import DocumentStore

    try:
        info = ModelRegistry(settings).get(author, version)
    except RegistryError as exc:
        raise LineageError(str(exc)) from exc
    result: dict[str, Any] = {
        "model": {"name": f"twin-{author}", "version": version, "aliases": info.aliases,
                  "approval": info.approval, "created_at": info.created_at},
        "training_run": info.run_id, "base_model": info.tags.get("base_model"),
        "code_commit": info.tags.get("code_commit"), "missing": [],
    }
    dataset_version = info.tags.get("dataset_version")
    if not dataset_version:
        result["missing"].append("dataset_version tag")
        return result
    try:
        manifest = DatasetVersions(get_artifact_store(settings)).manifest(author, dataset_version)
    except VersionNotFoundError:
        result["dataset"] = {"version": dataset_version}
        result["missing"].append("dataset manifest")
        return result
    result["dataset"] = {"version": dataset_version, "created_at": manifest.get("created_at"),
                         "parent_version": manifest.get("parent_version"), "counts": manifest.get("counts", {})}
    own_store = store is None
    store = store or DocumentStore.from_settings(settings)
    try:
        result["sources"] = [document_chain(store, s["document_id"]) for s in manifest.get("sources", [])]
    finally:
        if own_store:
            store.close()
    return result


def trace_documents(settings: Settings, trace_id: str) -> list[dict[str, Any]] | None:
    """The retrieval span's documents of the MLflow trace tagged with this trace id; None without a trace."""
    import mlflow

    from twin.tracking import configure_mlflow

    configure_mlflow(settings, settings.serve_experiment)
    experiment = mlflow.get_experiment_by_name(settings.serve_experiment)
    if experiment is None:
        return None
    traces = mlflow.search_traces(experiment_ids=[experiment.experiment_id], return_type="list",
                                  filter_string=f"tags.`twin.trace_id` = '{trace_id}'", max_results=1)
    if not traces:
        return None
    for span in traces[0].data.spans:
        if span.name == "retrieval":
            return list(span.outputs or [])
    return []


def trace_lineage(settings: Settings, trace_id: str, store: Any = None) -> dict[str, Any]:
    from twin.storage.documents import DocumentStore

    own_store = store is None
    store = store or DocumentStore.from_settings(settings)
    try:
        served = store.collection("served_requests").find_one({"_id": trace_id})
        if served is None:
            raise LineageError(f"no served request with trace id {trace_id!r}")
        result: dict[str, Any] = {"trace_id": trace_id, "request": {k: served.get(k) for k in (
            "author", "version", "role", "endpoint", "status_code", "latency_ms", "at")}, "missing": []}
        result["request"]["at"] = str(result["request"]["at"])
        documents = trace_documents(settings, trace_id)
        if documents is None:
            result["missing"].append("MLflow trace")
            documents = []
        seen: list[str] = []
        for hit in documents:
            if hit.get("document_id") and hit["document_id"] not in seen:
                seen.append(hit["document_id"])
        result["retrieved"] = [document_chain(store, d) for d in seen]
        version = str(served.get("version") or "")
        if version.isdigit():
            try:
                result["model"] = model_lineage(settings, served["author"], version, store)
            except LineageError as exc:
                result["missing"].append(f"model version ({exc})")
        else:
            result["model"] = {"version": version or None, "note": "not a registered version (base model)"}
        return result
    finally:
        if own_store:
            store.close()


def lineage(target: str, settings: Settings | None = None) -> dict[str, Any]:
    """AUTHOR@VERSION (a registered version of twin-AUTHOR) or a serving trace id."""
    settings = settings or get_settings()
    if "@" in target:
        author, _, version = target.partition("@")
        return model_lineage(settings, author.removeprefix("twin-"), version)
    return trace_lineage(settings, target)


def register(app: typer.Typer) -> None:
    @app.command("lineage")
    def lineage_command(target: str = typer.Argument(..., help="AUTHOR@VERSION of a model, or a trace id")) -> None:
        """Where a model version or an answer came from: run, dataset, documents, crawl run."""
        try:
            typer.echo(json.dumps(lineage(target), indent=2, default=str))
        except LineageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
