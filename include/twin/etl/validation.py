"""Great Expectations gates, reusable by every pipeline: suites and checkpoints are data in
`expectations/`, records are validated as a pandas DataFrame, failures come back per row.

`expectations/<suite>.json` holds a GX expectation suite (GX's own JSON form);
`expectations/checkpoints/<name>.json` (optional) says which suite a checkpoint runs, the id column
and the result format. The GX project (stores and the Data Docs site) lives under the data folder,
not in the repository.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.data_context import AbstractDataContext

# GX logs about 200 info lines when Airflow configured logging first; keep only what matters.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

DATASOURCE = "twin"
BATCH_DEFINITION = "whole_frame"
DATA_DOCS_SITE = "local_site"


class ValidationSetupError(RuntimeError):
    """A suite or checkpoint definition is missing or broken, or an expectation could not run."""


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    suite: str
    id_column: str = "id"
    result_format: str = "COMPLETE"
    update_data_docs: bool = True


@dataclass
class ValidationOutcome:
    checkpoint: str
    suite: str
    success: bool
    evaluated_rows: int
    # row id -> labels of the expectations that row failed, e.g. "expect_column_values_to_not_be_null(url)"
    row_failures: dict[str, list[str]] = field(default_factory=dict)
    # expectation label -> number of rows that failed it
    expectation_failures: dict[str, int] = field(default_factory=dict)
    # table-level expectations that failed (no row to blame): the whole batch is suspect
    batch_failures: list[str] = field(default_factory=list)

    @property
    def failed_ids(self) -> set[str]:
        return set(self.row_failures)


def expectations_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.resolved_expectations_dir


def load_checkpoint_spec(name: str, directory: Path) -> CheckpointSpec:
    path = directory / "checkpoints" / f"{name}.json"
    if not path.is_file():
        return CheckpointSpec(name=name, suite=name)
    data = _read_json(path)
    return CheckpointSpec(name=name, suite=data.get("suite", name), id_column=data.get("id_column", "id"),
                          result_format=data.get("result_format", "COMPLETE"),
                          update_data_docs="update_data_docs" in data.get("actions", ["update_data_docs"]))


def load_suite_definition(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.json"
    if not path.is_file():
        raise ValidationSetupError(f"no expectation suite {name!r}: {path} does not exist")
    data = _read_json(path)
    if data.get("name") != name or not isinstance(data.get("expectations"), list):
        raise ValidationSetupError(f"{path}: a suite needs \"name\": {name!r} and a list of \"expectations\"")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidationSetupError(f"{path} is not valid JSON: {exc}") from None


@lru_cache(maxsize=4)
def gx_context(project_root: Path) -> AbstractDataContext:
    """A file context under the data folder (cached: creating one costs a few file reads)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.save()
    return context


def data_docs_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.data_dir / "gx" / "uncommitted" / "data_docs" / DATA_DOCS_SITE


def validate_records(name: str, frame: pd.DataFrame, *, parameters: Mapping[str, Any] | None = None,
                     settings: Settings | None = None, run_name: str | None = None) -> ValidationOutcome:
    """Run checkpoint `name` over the records in `frame` and return which rows failed what.

    `parameters` fills the suite's `{"$PARAMETER": name}` placeholders (bounds that come from settings).
    `run_name` names the validation run in the report (the ETL run id); GX's default is "__none__".
    An empty frame is not validated (nothing to judge, and it would only add noise to the report).
    """
    settings = settings or get_settings()
    directory = expectations_dir(settings)
    spec = load_checkpoint_spec(name, directory)
    if spec.id_column not in frame.columns:
        raise ValidationSetupError(f"checkpoint {name!r}: the frame has no id column {spec.id_column!r}")
    if frame.empty:
        return ValidationOutcome(checkpoint=name, suite=spec.suite, success=True, evaluated_rows=0)
    checkpoint = _checkpoint(gx_context(settings.data_dir), spec, load_suite_definition(spec.suite, directory))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=dict(parameters or {}),
                            run_id=_run_identifier(run_name))
    return _outcome(spec, result, len(frame))


def _run_identifier(run_name: str | None) -> Any:
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=run_name) if run_name else None


def _checkpoint(context: AbstractDataContext, spec: CheckpointSpec, suite_data: dict[str, Any]) -> Any:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    suite = context.suites.add_or_update(
        gx.ExpectationSuite(name=spec.suite, expectations=suite_data["expectations"], meta=suite_data.get("meta"))
    )
    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    try:
        asset = source.get_asset(spec.name)
    except LookupError:
        asset = source.add_dataframe_asset(spec.name)
    try:
        batch = asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=spec.name, data=batch, suite=suite)
    )
    actions = [UpdateDataDocsAction(name="update_data_docs")] if spec.update_data_docs else []
    return context.checkpoints.add_or_update(gx.Checkpoint(
        name=spec.name, validation_definitions=[definition], actions=actions,
        result_format={"result_format": spec.result_format, "unexpected_index_column_names": [spec.id_column]},
    ))


def expectation_label(config: Any) -> str:
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else str(config.type)


def _outcome(spec: CheckpointSpec, result: Any, rows: int) -> ValidationOutcome:
    outcome = ValidationOutcome(checkpoint=spec.name, suite=spec.suite, success=bool(result.success),
                                evaluated_rows=rows)
    for run in result.run_results.values():
        for item in run.results:
            label = expectation_label(item.expectation_config)
            if item.exception_info and item.exception_info.get("raised_exception"):
                raise ValidationSetupError(f"{label} could not run: {item.exception_info.get('exception_message')}")
            if item.success:
                continue
            ids = sorted({str(entry[spec.id_column]) for entry in item.result.get("unexpected_index_list") or []})
            if not ids:
                outcome.batch_failures.append(f"{label}: observed {item.result.get('observed_value')!r}")
                continue
            outcome.expectation_failures[label] = len(ids)
            for row_id in ids:
                outcome.row_failures.setdefault(row_id, []).append(label)
    return outcome


def build_data_docs(settings: Settings | None = None) -> Path:
    """Rebuild the Data Docs site from the stored validation results; returns its folder."""
    settings = settings or get_settings()
    gx_context(settings.data_dir).build_data_docs()
    return data_docs_dir(settings)


def prune_validation_runs(keep: int, settings: Settings | None = None) -> list[str]:
    """Keep the validation results (and their Data Docs pages) of the `keep` latest runs, by run name;
    delete the older ones and rebuild the site's index. Returns the run names removed, oldest first."""
    settings = settings or get_settings()
    context = gx_context(settings.data_dir)
    store = context.validation_results_store
    keys = store.list_keys()
    latest: dict[str, Any] = {}  # run name -> its latest run time
    for key in keys:
        name, when = key.run_id.run_name or "__none__", key.run_id.run_time
        latest[name] = max(latest.get(name, when), when)
    by_age = sorted(latest, key=lambda name: latest[name])
    removed = by_age[: max(0, len(by_age) - keep)]
    if not removed:
        return []
    site = data_docs_dir(settings)
    for key in keys:
        if (key.run_id.run_name or "__none__") in removed:
            store.remove_key(key)
            page = site / "validations" / Path(*key.to_tuple()[:-1]) / f"{key.to_tuple()[-1]}.html"
            page.unlink(missing_ok=True)
    for root in (site / "validations", settings.data_dir / "gx" / "uncommitted" / "validations"):
        _remove_empty_folders(root)  # GX's file store leaves the removed results' folders behind
    kept = [key for key in keys if (key.run_id.run_name or "__none__") not in removed]
    # Renders one page (GX renders every page when given none) and, above all, the index.
    context.build_data_docs(resource_identifiers=kept[:1] or None)
    return removed


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
