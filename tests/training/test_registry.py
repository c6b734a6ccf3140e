"""The registry and `twin model`: the gate's challenger, approval by a person, rejection, rollback."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry, RegistryError


@pytest.fixture
def registry(training_env) -> ModelRegistry:
    from twin.settings import get_settings

    return ModelRegistry(get_settings())


@pytest.fixture
def author() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def new_version(registry: ModelRegistry, author: str, gate: str) -> str:
    """A registered version over a real run with a real (tiny) artifact, gated as given."""
    import mlflow

    from twin.tracking import configure_mlflow

    configure_mlflow(registry.settings, "registry-tests")
    with mlflow.start_run() as run:
        mlflow.log_dict({"adapter": "placeholder"}, "adapter/adapter_config.json")
        source = mlflow.get_artifact_uri("adapter")
    version = registry.register(author, run_id=run.info.run_id, source=source,
                                tags={"dataset_version": "v-test", "base_model": "packaged"})
    registry.set_tags(author, version, {"gate": gate})
    if gate == "passed":
        registry.mark_challenger(author, version)
    return version


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, ["model", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_approve_makes_champion_and_keeps_previous(registry: ModelRegistry, author: str) -> None:
    v1 = new_version(registry, author, "passed")
    assert registry.get(author, v1).approval == "pending"
    assert registry.alias_version(author, CHALLENGER) == v1

    cli("approve", v1, "--author", author, "--by", "ana", "--reason", "reads like her")
    info = registry.get(author, v1)
    assert info.aliases == [CHAMPION]
    assert info.tags["approval"] == "approved" and info.tags["approved_by"] == "ana"
    assert info.tags["approval_source"] == "cli" and info.tags["reason"] == "reads like her"
    assert info.tags["approved_at"]

    v2 = new_version(registry, author, "passed")
    cli("approve", v2, "--author", author, "--by", "ana")
    assert registry.alias_version(author, CHAMPION) == v2
    assert registry.alias_version(author, PREVIOUS) == v1
    assert registry.alias_version(author, CHALLENGER) is None

    listing = cli("list", "--author", author)
    assert "champion" in listing and "previous-champion" in listing

    cli("rollback", "--author", author, "--reason", "v2 answers badly")
    assert registry.alias_version(author, CHAMPION) == v1
    assert registry.alias_version(author, PREVIOUS) is None
    assert registry.get(author, v2).tags["rollback_reason"] == "v2 answers badly"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(author)


def test_failed_gate_is_never_promoted(registry: ModelRegistry, author: str) -> None:
    good = new_version(registry, author, "passed")
    registry.approve(author, good, by="ana")
    worse = new_version(registry, author, "failed")
    assert registry.alias_version(author, CHALLENGER) is None
    result = CliRunner().invoke(app, ["model", "approve", worse, "--author", author])
    assert result.exit_code == 1 and "did not pass the evaluation gate" in result.output
    assert registry.alias_version(author, CHAMPION) == good
    assert registry.get(author, worse).approval == ""


def test_reject_needs_a_reason_and_sticks(registry: ModelRegistry, author: str) -> None:
    v1 = new_version(registry, author, "passed")
    assert CliRunner().invoke(app, ["model", "reject", v1, "--author", author]).exit_code != 0  # no --reason
    cli("reject", v1, "--author", author, "--reason", "too generic", "--by", "ana")
    info = registry.get(author, v1)
    assert info.approval == "rejected" and info.tags["rejected_by"] == "ana" and info.tags["reason"] == "too generic"
    assert info.aliases == []
    with pytest.raises(RegistryError, match="rejected"):
        registry.approve(author, v1)
    assert registry.alias_version(author, CHAMPION) is None


def test_decision_made_in_the_mlflow_ui(registry: ModelRegistry, author: str) -> None:
    v1 = new_version(registry, author, "passed")
    assert registry.apply_ui_decision(author, v1) is None  # still pending
    # What a person does in the MLflow UI: set tags on the version.
    registry.client.set_model_version_tag(f"twin-{author}", v1, "approval", "approved")
    registry.client.set_model_version_tag(f"twin-{author}", v1, "approved_by", "ana")
    assert registry.apply_ui_decision(author, v1) == "approved"
    info = registry.get(author, v1)
    assert info.aliases == [CHAMPION] and info.tags["approval_source"] == "mlflow-ui"
    assert info.tags["approved_by"] == "ana"
    assert registry.apply_ui_decision(author, v1) == "approved"  # applied once; polling again changes nothing
