from pathlib import Path

import pytest

from twin.settings import (
    Settings,
    SettingsError,
    documented_variables,
    load_settings,
    render_env_example,
    render_markdown_table,
)


def test_defaults_are_the_embedded_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in documented_variables():
        monkeypatch.delenv(variable, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.resolved_mongodb_uri == "mongodb://127.0.0.1:27017/"
    assert settings.resolved_mlflow_uri == "http://127.0.0.1:5000"
    assert settings.search_backend == "lancedb"
    assert settings.data_dir.is_absolute()


def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_MONGO_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="TWIN_MONGO_PORT"):
        load_settings(_env_file=None)


def test_out_of_range_and_bad_choice_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWIN_QUARANTINE_MAX_SHARE", "1.5")
    monkeypatch.setenv("TWIN_SEARCH_BACKEND", "elastic")
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=None)
    assert "TWIN_QUARANTINE_MAX_SHARE" in str(err.value)
    assert "TWIN_SEARCH_BACKEND" in str(err.value)


def test_env_overrides_and_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MONGODB_URI=mongodb://db.example:27017/\nTWIN_SERVE_PORT=9000\n")
    monkeypatch.delenv("MONGODB_URI", raising=False)
    settings = Settings(_env_file=env_file)
    assert settings.resolved_mongodb_uri == "mongodb://db.example:27017/"
    assert settings.serve_port == 9000


def test_every_variable_has_a_description() -> None:
    assert all(Settings.model_fields[field].description for field in documented_variables().values())


def test_env_example_and_readme_table_are_generated_from_the_settings() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert (repo / ".env.example").read_text() == render_env_example(), "run: twin config --format env > .env.example"
    assert render_markdown_table() in (repo / "README.md").read_text(), "paste: twin config --format markdown"
