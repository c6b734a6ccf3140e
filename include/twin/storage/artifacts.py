"""The artifact store: a local folder by default, S3 when a bucket is configured.

Artifacts are addressed by a relative key ("quality/etl/2026-11-29/index.html"); `publish_dir`
copies a whole folder (a Data Docs site, a dataset version) under a key prefix and returns where it
can be read.
"""

from __future__ import annotations

import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any


class ArtifactNotFoundError(FileNotFoundError):
    """No artifact under the key; raised the same way by every store."""


def _clean_key(key: str) -> str:
    parts = PurePosixPath(key.strip("/")).parts
    # ".." would escape the store's root; blank parts make keys that no person can tell apart.
    if not parts or any(p in ("..", ".") or not p.strip() for p in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return "/".join(parts)


class ArtifactStore(ABC):
    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store bytes under key; returns the artifact's location (path or s3:// URL)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def location(self, key: str) -> str:
        """Where a person or tool reads the artifact: a file path or an s3:// URL."""

    def publish_dir(self, local_dir: Path, prefix: str) -> str:
        """Copy every file of a folder under prefix; returns the location of the prefix."""
        prefix = _clean_key(prefix)
        if not Path(local_dir).is_dir():
            # An empty publish would look like success and hide a missing report.
            raise NotADirectoryError(f"cannot publish {local_dir}: not an existing folder")
        for file in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            rel = file.relative_to(local_dir).as_posix()
            self.put_bytes(f"{prefix}/{rel}", file.read_bytes(), _content_type(file))
        return self.location(prefix)


def _content_type(path: Path) -> str | None:
    import mimetypes

    return mimetypes.guess_type(path.name)[0]


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per write, so that two writers of one key never share a temporary file.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: readers never see half a file
        finally:
            tmp.unlink(missing_ok=True)
        return str(path)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no artifact {key!r} in {self.root}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def location(self, key: str) -> str:
        return str(self._path(key))

    def remove_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)


class S3ArtifactStore(ArtifactStore):
    """S3 (or any S3-compatible server) through boto3."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client: Any = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        return self.location(key)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFoundError(f"no artifact {key!r} in {self.location(key)}") from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        # A prefix names a folder: "quality" must not match "quality2/...", as in the local store.
        full = self._key(prefix) if prefix else self.prefix
        full = f"{full}/" if full else ""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                keys.append(key[len(self.prefix) + 1:] if self.prefix else key)
        return sorted(keys)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def get_artifact_store(settings: Any = None) -> ArtifactStore:
    from twin.settings import get_settings

    settings = settings or get_settings()
    if settings.artifacts_s3_bucket:
        client = None
        if settings.aws_conn_id:  # credentials from an Airflow connection, when running in Airflow
            client = _client_from_airflow_connection(settings.aws_conn_id, settings.s3_endpoint_url)
        return S3ArtifactStore(settings.artifacts_s3_bucket, settings.artifacts_s3_prefix,
                               endpoint_url=settings.s3_endpoint_url, client=client)
    return LocalArtifactStore(settings.artifacts_dir)


def _client_from_airflow_connection(conn_id: str, endpoint_url: str | None) -> Any:
    """An S3 client with the connection's credentials; TWIN_S3_ENDPOINT_URL wins over its endpoint."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=conn_id)
    if endpoint_url is None:
        return hook.get_conn()
    return hook.get_session().client("s3", endpoint_url=endpoint_url, config=hook.config)
