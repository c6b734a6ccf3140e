"""The model registry of the twins: MLflow's registered model `twin-<author>`, its aliases and tags.

The registry is the one record of a promotion. Aliases:
    challenger          a version that passed the evaluation gate and waits for a person
    champion            the version serving answers; moves only when a person approves
    previous-champion   the champion before it (what `rollback` returns to)
Tags on a version:
    approval            pending | approved | rejected   (set by the gate, then by a person)
    approved_by, approved_at / rejected_by, rejected_at, approval_source (cli | airflow | mlflow-ui), reason
    gate                passed | failed, with eval.* tags holding the figures it judged
    dataset_version, base_model, code_commit          lineage, set at registration

From the MLflow UI a person decides by setting the tag `approval` to `approved` or `rejected` on the
challenger version (optionally `approved_by` / `rejected_by` and `reason`); the training DAG's
waiting task notices it and moves the aliases (`ModelRegistry.apply_ui_decision`).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from twin.settings import Settings
from twin.training.config import registered_model_name

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous-champion"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
Source = Literal["cli", "airflow", "mlflow-ui"]


class RegistryError(RuntimeError):
    """A registry action that cannot be taken (unknown version, a version the gate failed, ...)."""


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str | None
    created_at: str
    source: str = ""
    metrics: dict[str, str] = field(default_factory=dict)

    @property
    def approval(self) -> str:
        return self.tags.get("approval", "")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.client = MlflowClient(tracking_uri=settings.resolved_mlflow_uri,
                                   registry_uri=settings.resolved_mlflow_uri)

    # --- registration and gate --------------------------------------------------------------
    def register(self, author: str, *, run_id: str, source: str, tags: dict[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        name = registered_model_name(author)
        try:
            self.client.create_registered_model(name, tags={"author": author},
                                                description=f"LoRA twin of {author} (adapter over tag base_model)")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(name, source=source, run_id=run_id or None,
                                                   tags={k: str(v) for k, v in tags.items()},
                                                   await_creation_for=0)  # the SQL store makes it READY at once
        return str(version.version)

    def set_tags(self, author: str, version: str, tags: dict[str, Any]) -> None:
        name = registered_model_name(author)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    def mark_challenger(self, author: str, version: str) -> None:
        """A version that passed the gate waits for a person: alias challenger, approval=pending."""
        self._version(author, version)
        self.set_tags(author, version, {"approval": PENDING})
        self.client.set_registered_model_alias(registered_model_name(author), CHALLENGER, version)

    # --- decisions --------------------------------------------------------------------------
    def approve(self, author: str, version: str, *, by: str | None = None, source: Source = "cli",
                reason: str = "") -> VersionInfo:
        info = self._version(author, version)
        if info.tags.get("gate") != "passed":
            raise RegistryError(f"version {version} of {registered_model_name(author)} did not pass the "
                                f"evaluation gate (gate={info.tags.get('gate', 'not evaluated')}): "
                                "it cannot be approved")
        if info.approval == REJECTED:
            raise RegistryError(f"version {version} was rejected; register a new version instead")
        name = registered_model_name(author)
        champion = self.alias_version(author, CHAMPION)
        if champion == version:
            raise RegistryError(f"version {version} already is the champion")
        self.set_tags(author, version, {"approval": APPROVED, "approved_by": by or default_user(),
                                        "approved_at": now(), "approval_source": source, "reason": reason})
        if self.settings.canary_approval_share > 0:  # a canary first, then twin.canary promotes it
            from twin.canary.apply import on_approval

            on_approval(self.settings, self, author, version, by=by or default_user())
            return self._version(author, version)
        if champion is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, champion)
        self.client.set_registered_model_alias(name, CHAMPION, version)
        if self.alias_version(author, CHALLENGER) == version:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        return self._version(author, version)

    def reject(self, author: str, version: str, *, reason: str, by: str | None = None,
               source: Source = "cli") -> VersionInfo:
        if not reason.strip():
            raise RegistryError("a rejection needs a reason")
        info = self._version(author, version)
        if CHAMPION in info.aliases:
            raise RegistryError(f"version {version} is the champion: roll back instead of rejecting it")
        self.set_tags(author, version, {"approval": REJECTED, "rejected_by": by or default_user(),
                                        "rejected_at": now(), "approval_source": source, "reason": reason})
        if CHALLENGER in info.aliases:
            self.client.delete_registered_model_alias(registered_model_name(author), CHALLENGER)
        return self._version(author, version)

    def rollback(self, author: str, *, by: str | None = None, reason: str = "", source: Source = "cli") -> VersionInfo:
        """champion ← previous-champion; the demoted version is tagged, previous-champion is cleared."""
        name = registered_model_name(author)
        previous = self.alias_version(author, PREVIOUS)
        champion = self.alias_version(author, CHAMPION)
        if previous is None or champion is None:
            raise RegistryError(f"{name} has no previous champion to roll back to")
        self.client.set_registered_model_alias(name, CHAMPION, previous)
        self.client.delete_registered_model_alias(name, PREVIOUS)
        self.set_tags(author, champion, {"rolled_back_by": by or default_user(), "rolled_back_at": now(),
                                         "rollback_source": source, "rollback_reason": reason})
        return self._version(author, previous)

    def apply_ui_decision(self, author: str, version: str) -> str | None:
        """A decision a person made in the MLflow UI (tag approval=approved|rejected, no approval_source yet),
        carried out like any other; returns the decision, or None while the version still waits."""
        info = self._version(author, version)
        if info.approval not in (APPROVED, REJECTED):
            return None
        if info.tags.get("approval_source"):  # already carried out (by the CLI, Airflow or an earlier poll)
            return info.approval
        if info.approval == APPROVED:
            self.approve(author, version, by=info.tags.get("approved_by") or "mlflow-ui user", source="mlflow-ui",
                         reason=info.tags.get("reason", ""))
        else:
            self.reject(author, version, by=info.tags.get("rejected_by") or "mlflow-ui user", source="mlflow-ui",
                        reason=info.tags.get("reason") or "rejected in the MLflow UI")
        return info.approval

    # --- reading ----------------------------------------------------------------------------
    def alias_version(self, author: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(registered_model_name(author), alias).version)
        except MlflowException:
            return None

    def get(self, author: str, version: str) -> VersionInfo:
        return self._version(author, version)

    def _version(self, author: str, version: str) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            v = self.client.get_model_version(registered_model_name(author), str(version))
        except MlflowException:
            raise RegistryError(f"{registered_model_name(author)} has no version {version}") from None
        return _info(v)

    def list(self, author: str) -> list[VersionInfo]:
        from mlflow.exceptions import MlflowException

        name = registered_model_name(author)
        try:
            versions = self.client.search_model_versions(f"name='{name}'")
            aliases = dict(self.client.get_registered_model(name).aliases or {})
        except MlflowException:
            return []
        infos = sorted((_info(v) for v in versions), key=lambda i: int(i.version))
        for info in infos:  # a search leaves the aliases out: the registered model holds them
            info.aliases = sorted(a for a, v in aliases.items() if str(v) == info.version)
        return infos


def _info(v: Any) -> VersionInfo:
    tags = dict(v.tags or {})
    created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
    return VersionInfo(version=str(v.version), aliases=sorted(v.aliases or []), tags=tags, run_id=v.run_id,
                       created_at=created, source=v.source or "",
                       metrics={k[5:]: val for k, val in tags.items() if k.startswith("eval.")})
