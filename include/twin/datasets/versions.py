"""Dataset versions in the artifact store: `datasets/<author>/<version>/` holds one JSONL file per
dataset and split plus `manifest.json`; `datasets/<author>/LATEST` names the newest version.

The manifest is written after the data files and LATEST after the manifest, so a reader never
sees a version whose files are missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twin.storage.artifacts import ArtifactNotFoundError, ArtifactStore

PREFIX = "datasets"
MANIFEST = "manifest.json"
DATASETS = ("instruction", "preference")
SPLITS = ("train", "test")


class VersionNotFoundError(LookupError):
    """No dataset version of that name (or more than one matches a short name)."""


def file_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}.jsonl"


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")


class DatasetVersions:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    @staticmethod
    def prefix(author: str, version: str) -> str:
        return f"{PREFIX}/{author}/{version}"

    def latest(self, author: str) -> str | None:
        try:
            return self.artifacts.get_bytes(f"{PREFIX}/{author}/LATEST").decode().strip() or None
        except ArtifactNotFoundError:
            return None

    def exists(self, author: str, version: str) -> bool:
        return self.artifacts.exists(f"{self.prefix(author, version)}/{MANIFEST}")

    def write(self, author: str, version: str, files: dict[str, bytes], manifest: dict[str, Any]) -> str:
        prefix = self.prefix(author, version)
        for name, data in files.items():
            self.artifacts.put_bytes(f"{prefix}/{name}", data, "application/jsonl")
        self.artifacts.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode(),
                                 "application/json")
        self.set_latest(author, version)
        return self.artifacts.location(prefix)

    def put_json(self, author: str, version: str, name: str, data: dict[str, Any]) -> None:
        self.artifacts.put_bytes(f"{self.prefix(author, version)}/{name}", json.dumps(data, indent=2).encode(),
                                 "application/json")

    def set_latest(self, author: str, version: str) -> None:
        self.artifacts.put_bytes(f"{PREFIX}/{author}/LATEST", version.encode(), "text/plain")

    def manifest(self, author: str, version: str) -> dict[str, Any]:
        try:
            return json.loads(self.artifacts.get_bytes(f"{self.prefix(author, version)}/{MANIFEST}"))
        except ArtifactNotFoundError:
            raise VersionNotFoundError(f"no dataset version {version!r} of author {author!r}") from None

    def rows(self, author: str, version: str, dataset: str, split: str) -> list[dict[str, Any]]:
        data = self.artifacts.get_bytes(f"{self.prefix(author, version)}/{file_name(dataset, split)}")
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]

    def all_rows(self, author: str, version: str) -> dict[str, list[dict[str, Any]]]:
        return {d: [r for s in SPLITS for r in self.rows(author, version, d, s)] for d in DATASETS}

    def list(self, author: str | None = None) -> list[dict[str, Any]]:
        """Every version's manifest (of one author, or all), oldest first."""
        base = f"{PREFIX}/{author}" if author else PREFIX
        manifests = []
        for key in self.artifacts.list(base):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST:
                manifests.append(json.loads(self.artifacts.get_bytes(key)))
        return sorted(manifests, key=lambda m: (m.get("created_at", ""), m["version"]))

    def find(self, version: str, author: str | None = None) -> dict[str, Any]:
        """The manifest of a version named in full or by a unique prefix."""
        matches = [m for m in self.list(author) if m["version"].startswith(version)]
        exact = [m for m in matches if m["version"] == version]
        if len(exact) == 1 or len(matches) == 1:
            return (exact or matches)[0]
        if not matches:
            raise VersionNotFoundError(f"no dataset version {version!r}" + (f" of author {author!r}" if author else ""))
        raise VersionNotFoundError(f"{version!r} names {len(matches)} versions; give more of it")


def diff_versions(versions: DatasetVersions, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from one version to another: rows by source passage, counts and filters."""
    old_rows = versions.all_rows(old["author_id"], old["version"])
    new_rows = versions.all_rows(new["author_id"], new["version"])
    datasets: dict[str, Any] = {}
    for dataset in DATASETS:
        before = {r["passage_id"]: r for r in old_rows[dataset]}
        after = {r["passage_id"]: r for r in new_rows[dataset]}
        changed = sorted(p for p in before.keys() & after.keys() if _content(before[p]) != _content(after[p]))
        datasets[dataset] = {"added": sorted(after.keys() - before.keys()),
                             "removed": sorted(before.keys() - after.keys()), "changed": changed,
                             "rows": {"old": len(before), "new": len(after)}}
    filters = {}
    for dataset, counts in new["filters"].items():
        old_counts = old["filters"].get(dataset, {})
        filters[dataset] = {name: {"old": old_counts.get(name, 0), "new": n}
                            for name, n in counts.items() if old_counts.get(name, 0) != n}
    settings_changed = {k: {"old": old.get(k), "new": new.get(k)} for k in ("generator", "base_model", "prompts",
                        "filter_settings", "split") if old.get(k) != new.get(k)}
    return {"old": old["version"], "new": new["version"], "datasets": datasets, "filters": filters,
            "settings": settings_changed}


def _content(row: dict[str, Any]) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in row.items() if k != "id"))
