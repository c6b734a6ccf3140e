"""The artifact store contract, held against the local folder and a real S3 server (moto, or TWIN_TEST_S3_URL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from twin.settings import load_settings
from twin.storage.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    get_artifact_store,
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dummy credentials: the local S3 server accepts any; never the developer's real ones.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None) -> Iterator[str]:
    name = f"twin-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    bucket_name = request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3ArtifactStore(bucket_name, "twin", endpoint_url=endpoint)


# --- the contract both stores keep ----------------------------------------------------------------

def test_put_get_exists_round_trip(store: ArtifactStore) -> None:
    location = store.put_bytes("datasets/v1/train.jsonl", b'{"a": 1}\n', "application/json")
    assert location == store.location("datasets/v1/train.jsonl")
    assert store.get_bytes("datasets/v1/train.jsonl") == b'{"a": 1}\n'
    assert store.exists("datasets/v1/train.jsonl")
    assert not store.exists("datasets/v1/missing.jsonl")
    assert not store.exists("datasets/v1")  # a folder is not an artifact


def test_put_overwrites(store: ArtifactStore) -> None:
    store.put_bytes("report.html", b"old")
    store.put_bytes("report.html", b"new")
    assert store.get_bytes("report.html") == b"new"
    assert store.list() == ["report.html"]


def test_missing_key_raises_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match=r"nothing/here\.txt"):
        store.get_bytes("nothing/here.txt")


def test_list_is_sorted_and_scoped_to_a_folder_prefix(store: ArtifactStore) -> None:
    for key in ("quality/etl/b.html", "quality/etl/a.html", "quality2/x.html", "datasets/v1/train.jsonl"):
        store.put_bytes(key, key.encode())
    assert store.list() == ["datasets/v1/train.jsonl", "quality/etl/a.html", "quality/etl/b.html",
                            "quality2/x.html"]
    # "quality" names a folder: its sibling "quality2" is not inside it.
    assert store.list("quality") == ["quality/etl/a.html", "quality/etl/b.html"]
    assert store.list("quality/etl/") == ["quality/etl/a.html", "quality/etl/b.html"]
    assert store.list("nothing") == []


def test_keys_are_normalised(store: ArtifactStore) -> None:
    store.put_bytes("/a//b/./c.txt", b"x")
    assert store.list() == ["a/b/c.txt"]
    assert store.get_bytes("a/b/c.txt") == b"x"


@pytest.mark.parametrize("bad_key", ["", "/", "..", "../escape.txt", "a/../../b", "a/..", "  "])
def test_invalid_keys_are_rejected_and_nothing_is_written(store: ArtifactStore, bad_key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put_bytes(bad_key, b"x")
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.get_bytes(bad_key)
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.exists(bad_key)
    assert store.list() == []


def test_publish_dir_copies_every_file_with_content_types(store: ArtifactStore, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "static").mkdir(parents=True)
    (site / "index.html").write_text("<h1>report</h1>")
    (site / "static" / "style.css").write_text("h1 {}")
    (site / "static" / "data.json").write_text(json.dumps({"ok": True}))

    location = store.publish_dir(site, "quality/etl/2026-11-29")

    assert location == store.location("quality/etl/2026-11-29")
    assert store.list("quality/etl/2026-11-29") == [
        "quality/etl/2026-11-29/index.html",
        "quality/etl/2026-11-29/static/data.json",
        "quality/etl/2026-11-29/static/style.css",
    ]
    assert store.get_bytes("quality/etl/2026-11-29/index.html") == b"<h1>report</h1>"
    # Publishing again (an Airflow retry) changes nothing.
    assert store.publish_dir(site, "quality/etl/2026-11-29") == location
    assert len(store.list()) == 3


def test_publish_dir_of_a_missing_folder_is_a_clear_error(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="no-such-site"):
        store.publish_dir(tmp_path / "no-such-site", "quality/etl")
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.publish_dir(tmp_path, "../outside")
    assert store.list() == []


# --- store-specific details ------------------------------------------------------------------------

def test_local_store_writes_under_its_root_only(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    path = Path(store.put_bytes("a/b.txt", b"x"))
    assert path == tmp_path / "root" / "a" / "b.txt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]  # no temporary file left behind


def test_s3_store_keeps_objects_under_its_prefix(bucket: str, s3_endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(Bucket=bucket, Key="twin2/not-mine.txt", Body=b"other")  # a sibling prefix
    store = S3ArtifactStore(bucket, "/twin/", endpoint_url=s3_endpoint)

    assert store.put_bytes("r/index.html", b"<p>", "text/html") == f"s3://{bucket}/twin/r/index.html"
    head = client.head_object(Bucket=bucket, Key="twin/r/index.html")
    assert head["ContentType"] == "text/html"
    assert store.list() == ["r/index.html"]


def test_s3_store_without_prefix_uses_bucket_root(bucket: str, s3_endpoint: str) -> None:
    store = S3ArtifactStore(bucket, endpoint_url=s3_endpoint)
    store.put_bytes("x/y.txt", b"1")
    assert store.location("x/y.txt") == f"s3://{bucket}/x/y.txt"
    assert store.list("x") == ["x/y.txt"]


def test_s3_store_on_a_missing_bucket_fails_loudly(s3_endpoint: str, aws_env: None) -> None:
    from botocore.exceptions import ClientError

    store = S3ArtifactStore(f"no-such-bucket-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint)
    with pytest.raises(ClientError):
        store.put_bytes("a.txt", b"x")


# --- choosing the store from settings ----------------------------------------------------------------

def test_get_artifact_store_defaults_to_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TWIN_ARTIFACTS_S3_BUCKET", raising=False)
    monkeypatch.setenv("TWIN_DATA_DIR", str(tmp_path))
    store = get_artifact_store(load_settings(_env_file=None))
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "artifacts"


def test_get_artifact_store_picks_s3_when_bucket_is_set(
        monkeypatch: pytest.MonkeyPatch, bucket: str, s3_endpoint: str) -> None:
    monkeypatch.setenv("TWIN_ARTIFACTS_S3_BUCKET", bucket)
    monkeypatch.setenv("TWIN_ARTIFACTS_S3_PREFIX", "reports")
    monkeypatch.setenv("TWIN_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("TWIN_AWS_CONN_ID", raising=False)

    store = get_artifact_store(load_settings(_env_file=None))

    assert isinstance(store, S3ArtifactStore)
    store.put_bytes("a.txt", b"via settings")
    body = boto3.client("s3", endpoint_url=s3_endpoint).get_object(Bucket=bucket, Key="reports/a.txt")["Body"]
    assert body.read() == b"via settings"


def test_get_artifact_store_uses_the_airflow_connection(
        monkeypatch: pytest.MonkeyPatch, bucket: str, s3_endpoint: str) -> None:
    # The amazon provider resolves AIRFLOW_CONN_<ID> from the environment without the metadata DB;
    # the endpoint comes from the connection's extra, as in an Airflow deployment.
    pytest.importorskip("airflow.providers.amazon.aws.hooks.s3")
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_TWIN_TEST_S3", json.dumps(connection))
    monkeypatch.setenv("TWIN_AWS_CONN_ID", "twin_test_s3")
    monkeypatch.setenv("TWIN_ARTIFACTS_S3_BUCKET", bucket)
    monkeypatch.delenv("TWIN_S3_ENDPOINT_URL", raising=False)

    store = get_artifact_store(load_settings(_env_file=None))

    assert isinstance(store, S3ArtifactStore)
    assert store.client.meta.endpoint_url == s3_endpoint
    store.put_bytes("hook/a.txt", b"through S3Hook")
    assert store.get_bytes("hook/a.txt") == b"through S3Hook"
    assert store.list("hook") == ["hook/a.txt"]


def test_endpoint_setting_wins_over_a_connection_without_one(
        monkeypatch: pytest.MonkeyPatch, bucket: str, s3_endpoint: str) -> None:
    pytest.importorskip("airflow.providers.amazon.aws.hooks.s3")
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": "us-east-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_TWIN_TEST_S3_PLAIN", json.dumps(connection))
    monkeypatch.setenv("TWIN_AWS_CONN_ID", "twin_test_s3_plain")
    monkeypatch.setenv("TWIN_ARTIFACTS_S3_BUCKET", bucket)
    monkeypatch.setenv("TWIN_S3_ENDPOINT_URL", s3_endpoint)

    store = get_artifact_store(load_settings(_env_file=None))

    assert store.client.meta.endpoint_url == s3_endpoint
    store.put_bytes("b.txt", b"ok")
    assert store.exists("b.txt")


# --- the compose stack's bucket job -------------------------------------------------------------------

def test_compose_bucket_job_creates_buckets_once(
        monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, aws_env: None) -> None:
    import runpy

    job = runpy.run_path(str(Path(__file__).resolve().parents[2] / "docker" / "create_buckets.py"))
    names = [f"twin-job-{uuid.uuid4().hex[:8]}", f"mlflow-job-{uuid.uuid4().hex[:8]}"]
    monkeypatch.setenv("TWIN_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("TWIN_ARTIFACTS_S3_BUCKET", names[0])
    monkeypatch.setenv("MLFLOW_ARTIFACTS_BUCKET", names[1])
    client = boto3.client("s3", endpoint_url=s3_endpoint)

    assert job["main"]() == 0
    existing = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert set(names) <= existing
    client.put_object(Bucket=names[0], Key="kept.txt", Body=b"x")
    assert job["main"]() == 0  # a restart of the stack runs the job again
    assert [job["ensure_bucket"](client, name) for name in names] == [False, False]
    assert client.get_object(Bucket=names[0], Key="kept.txt")["Body"].read() == b"x"
    for name in names:
        client.delete_object(Bucket=name, Key="kept.txt")
        client.delete_bucket(Bucket=name)
