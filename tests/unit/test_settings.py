"""Run settings: config/*.yaml, overridable per process with MLOPS_<FILE>__<FIELD>."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from settings import (
    SettingsError,
    TrainingRunSettings,
    config_dir,
    load_monitoring_settings,
    load_release_settings,
    load_retrain_settings,
    load_training_settings,
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of config/ that the loaders read (MLOPS_CONFIG_DIR), for the test to edit."""
    folder = tmp_path / "config"
    shutil.copytree(config_dir(), folder)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(folder))
    return folder


def edit(path: Path, section: str, key: str, value: object) -> None:
    document = yaml.safe_load(path.read_text())
    document[section][key] = value
    path.write_text(yaml.safe_dump(document))


def test_every_config_file_loads_as_written() -> None:
    raw = yaml.safe_load((config_dir() / "training.yaml").read_text())

    assert load_training_settings().gate.model_dump() == raw["gate"]
    assert load_release_settings().rollout.steps
    assert load_retrain_settings().recent_data
    assert load_monitoring_settings().thresholds.numeric > 0


def test_an_environment_variable_overrides_a_nested_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_TRAINING__GATE__MIN_AUC", "0.75")
    monkeypatch.setenv("MLOPS_RELEASE__ROLLOUT__TIMING__BAKE_SECONDS__LOCAL", "2")

    training = load_training_settings()

    assert training.gate.min_auc == 0.75
    assert (
        training.gate.min_f1
        == yaml.safe_load((config_dir() / "training.yaml").read_text())["gate"]["min_f1"]
    ), "the rest of the section still comes from the file"
    assert load_release_settings().rollout.timing.bake_seconds.local == 2


def test_a_typo_in_a_file_names_the_file_and_the_field(config: Path) -> None:
    edit(config / "training.yaml", "gate", "min_auc", "high")

    with pytest.raises(SettingsError) as raised:
        load_training_settings()

    message = str(raised.value)
    assert str(config / "training.yaml") in message
    assert "gate.min_auc" in message and "'high'" in message


def test_an_unknown_or_missing_key_is_an_error_not_a_default(config: Path) -> None:
    document = yaml.safe_load((config / "training.yaml").read_text())
    document["gate"]["min_fl"] = document["gate"].pop("min_f1")
    (config / "training.yaml").write_text(yaml.safe_dump(document))

    with pytest.raises(SettingsError, match=r"gate\.min_f1: Field required") as raised:
        load_training_settings()
    assert "gate.min_fl: Extra inputs are not permitted" in str(raised.value)


def test_a_bad_override_names_the_variable_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_RETRAIN__MIN_AUC_GAIN", "a lot")

    with pytest.raises(SettingsError, match=r"MLOPS_RETRAIN__\*.*\n  min_auc_gain:"):
        load_retrain_settings()


def test_a_missing_file_says_which(config: Path) -> None:
    (config / "retrain.yaml").unlink()

    with pytest.raises(FileNotFoundError, match="retrain.yaml"):
        load_retrain_settings()


def test_monitoring_watches_the_endpoint_release_yaml_calls_prod(config: Path) -> None:
    document = yaml.safe_load((config / "release.yaml").read_text())
    document.update(prod_environment="test", prod_endpoint="readmission-elsewhere")
    (config / "release.yaml").write_text(yaml.safe_dump(document))

    monitoring = load_monitoring_settings()

    assert (monitoring.endpoint_environment, monitoring.endpoint) == (
        "test",
        "readmission-elsewhere",
    )
    assert "endpoint_environment" not in yaml.safe_load((config / "monitoring.yaml").read_text())


def test_a_run_form_changes_only_what_it_sets_and_keeps_the_file_for_the_rest() -> None:
    file = load_training_settings()
    run = TrainingRunSettings(min_auc=0.8, max_iter=50)

    applied = run.applied_to(file)

    assert run.changed() == {"min_auc": 0.8, "max_iter": 50}
    assert applied.gate.min_auc == 0.8 and applied.pipeline.max_iter == 50
    assert applied.gate.min_f1 == file.gate.min_f1
    assert applied.pipeline.learning_rate == file.pipeline.learning_rate
    assert TrainingRunSettings().applied_to(file) == file


def test_a_run_form_refuses_values_out_of_range_or_unknown() -> None:
    with pytest.raises(ValidationError, match="min_auc"):
        TrainingRunSettings(min_auc=1.5)
    with pytest.raises(ValidationError, match="test_size"):
        TrainingRunSettings.model_validate({"test_size": 0.5})  # not a per-run setting


@pytest.mark.parametrize("flow_name", ["train_dev", "release"])
def test_the_prefect_run_form_shows_the_per_run_settings_with_their_descriptions(
    flow_name: str,
) -> None:
    """Prefect builds a deployment's run form from this schema (the UI's "Custom run")."""
    import flows.release
    import flows.train_dev

    schema = parameter_schema(getattr(getattr(flows, flow_name), flow_name).fn).model_dump()
    form = schema["definitions"]["TrainingRunSettings"]["properties"]

    assert set(form) == set(TrainingRunSettings.model_fields)
    assert all(field["description"] for field in form.values())
    assert form["min_auc"]["anyOf"][0] == {"maximum": 1, "minimum": 0.5, "type": "number"}
