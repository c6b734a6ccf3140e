"""`twin lineage`: a model version and a served trace followed back to documents and crawl runs, on the real
document store, artifact store and MLflow server."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.lineage import LineageError, lineage
from twin.models import CleanedDocument, CrawlRun, DocumentKind, RawDocument, SourceKind
from twin.settings import get_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path, mongodb_uri: str, mlflow_uri: str):
    monkeypatch.setenv("TWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DATABASE", f"t_{os.urandom(5).hex()}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("TWIN_SERVE_EXPERIMENT", f"lineage-{uuid.uuid4().hex[:6]}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def seed_documents(settings, author: str) -> None:
    from twin.storage.documents import DocumentStore

    with DocumentStore.from_settings(settings) as store:
        store.save_crawl_run(CrawlRun(id="crawl-run-1"))
        raw = RawDocument(id="doc-1", kind=DocumentKind.ARTICLE, source_kind=SourceKind.ARTICLE,
                          url="https://example.org/a", author_id=author, author_name="Ada", title="A",
                          content="<p>text</p>", content_hash="h-raw", crawl_run_id="crawl-run-1")
        store.upsert_raw_documents([raw])
        store.upsert_cleaned([CleanedDocument(id="doc-1", raw_id="doc-1", kind=DocumentKind.ARTICLE, url=raw.url,
                                              author_id=author, author_name="Ada", content="text",
                                              content_hash="h-clean", raw_content_hash="h-raw", etl_run_id="etl-7")])


def register_version(settings, author: str) -> str:
    import mlflow

    from twin.datasets.versions import DatasetVersions
    from twin.registry import ModelRegistry
    from twin.storage.artifacts import get_artifact_store
    from twin.tracking import configure_mlflow

    DatasetVersions(get_artifact_store(settings)).write(author, "dsv1", {}, {
        "version": "dsv1", "author_id": author, "created_at": "2026-12-01T00:00:00", "parent_version": None,
        "counts": {"passages": 2}, "sources": [{"document_id": "doc-1"}, {"document_id": "doc-gone"}]})
    configure_mlflow(settings, "lineage-tests")
    with mlflow.start_run() as run:
        mlflow.log_dict({"adapter": "placeholder"}, "adapter/adapter_config.json")
        source = mlflow.get_artifact_uri("adapter")
    registry = ModelRegistry(settings)
    return registry.register(author, run_id=run.info.run_id, source=source,
                             tags={"dataset_version": "dsv1", "base_model": "packaged"})


def test_model_version_back_to_documents_and_crawl_run(env) -> None:
    author = f"lin-{uuid.uuid4().hex[:6]}"
    seed_documents(env, author)
    version = register_version(env, author)
    result = lineage(f"{author}@{version}")
    assert result["model"]["name"] == f"twin-{author}" and result["training_run"]
    assert result["dataset"]["version"] == "dsv1"
    found, gone = result["sources"]
    assert found["cleaned"]["etl_run_id"] == "etl-7" and found["raw"]["url"] == "https://example.org/a"
    assert found["crawl_run"]["id"] == "crawl-run-1" and found["missing"] == []
    assert gone["missing"] == ["cleaned document", "raw document"]  # reported, not guessed

    output = CliRunner().invoke(app, ["lineage", f"{author}@{version}"])
    assert output.exit_code == 0, output.output
    assert json.loads(output.output)["sources"][0]["crawl_run"]["id"] == "crawl-run-1"


def test_trace_back_to_retrieved_documents_and_model(env) -> None:
    import mlflow

    from twin.canary.store import CanaryStore, ServedRequest
    from twin.tracking import configure_mlflow

    author = f"lin-{uuid.uuid4().hex[:6]}"
    seed_documents(env, author)
    version = register_version(env, author)
    trace_id = uuid.uuid4().hex
    CanaryStore.from_settings(env).record_request(ServedRequest(
        trace_id=trace_id, author=author, version=version, role="champion", endpoint="/v1/ask", latency_ms=12.0,
        status_code=200))
    # The shape the Serve ingress writes: a root span tagged twin.trace_id, a retrieval span with its hits.
    configure_mlflow(env, env.serve_experiment)
    root = mlflow.start_span_no_context("/v1/ask", span_type="CHAIN", inputs={"question": "q"},
                                        tags={"twin.trace_id": trace_id})
    retrieval = mlflow.start_span_no_context("retrieval", span_type="RETRIEVER", parent_span=root)
    retrieval.end(outputs=[{"document_id": "doc-1", "url": "https://example.org/a", "score": 0.9}])
    root.end(outputs={"answer": "a"})
    mlflow.flush_trace_async_logging()  # traces are exported in the background

    result = lineage(trace_id)
    assert result["request"]["version"] == version and result["missing"] == []
    assert [d["document_id"] for d in result["retrieved"]] == ["doc-1"]
    assert result["retrieved"][0]["crawl_run"]["id"] == "crawl-run-1"
    assert result["model"]["dataset"]["version"] == "dsv1"


def test_unknown_trace_is_a_clear_error(env) -> None:
    with pytest.raises(LineageError, match="no served request"):
        lineage("no-such-trace")
    output = CliRunner().invoke(app, ["lineage", "no-such-trace"])
    assert output.exit_code == 1 and "no served request" in output.output
