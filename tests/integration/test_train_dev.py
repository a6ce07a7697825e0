"""train_dev on the local backend against a real Prefect server and real MLflow stores."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.schemas.objects import StateType

import backends
from data_checks.readmission_schema import FEATURES, LABEL
from flows.train_dev import train_dev
from synthetic_data.readmissions import generate_readmissions
from tasks.settings import load_training_settings

MODEL = load_training_settings().model_name
ROWS = 12_000


@pytest.fixture(scope="module")
def good_frame() -> pd.DataFrame:
    return generate_readmissions(ROWS, seed=11)


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def training_runs(environment: str) -> list:
    """Every MLflow run of the training pipeline in the environment's workspace."""
    workspace = backends.workspace(environment)
    experiment = workspace.client.get_experiment_by_name("readmission-training")
    if experiment is None:
        return []
    return MlflowClient(workspace.tracking_uri).search_runs([experiment.experiment_id])


def test_train_dev_registers_a_gated_model_with_lineage(
    mlops_root: Path, tmp_path: Path, good_frame: pd.DataFrame
) -> None:
    state = train_dev(data_path=write(good_frame, tmp_path / "good.csv"), return_state=True)

    assert state.type == StateType.COMPLETED, state.message
    model = state.result()
    workspace = backends.workspace("dev")
    versions = workspace.list_model_versions(MODEL)
    assert [v.version for v in versions] == ["1"]
    registered = workspace.get_model(MODEL, "champion")
    assert registered is not None and registered.version == model.version
    tags = registered.tags
    assert tags["data_asset"] == "readmissions" and tags["data_version"] == "1"
    assert len(tags["data_sha256"]) == 64
    assert tags["pipeline_run_id"] and tags["train_run_id"] == registered.run_id
    assert tags["git_commit"]
    assert float(tags["test_auc"]) > 0.7

    # The model takes raw rows (strings for categories) and returns probabilities.
    raw = generate_readmissions(200, seed=99)[list(FEATURES)]
    sk_model = mlflow.sklearn.load_model(str(workspace.model_path(registered)))
    probabilities = sk_model.predict_proba(raw)[:, 1]
    assert probabilities.shape == (200,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    pyfunc = mlflow.pyfunc.load_model(str(workspace.model_path(registered)))
    assert pyfunc.metadata.signature is not None
    assert np.allclose(np.asarray(pyfunc.predict(raw))[:, 1], probabilities)

    # Step runs are nested under the pipeline run in the dev store.
    runs = training_runs("dev")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == tags["pipeline_run_id"]]
    assert {r.info.run_name for r in children} == {"prep", "train", "evaluate"}

    # A second run compares with the champion on the same test rows and registers version 2.
    again = train_dev(data_path=write(good_frame, tmp_path / "again.csv"), return_state=True)
    assert again.type == StateType.COMPLETED, again.message
    assert [v.version for v in workspace.list_model_versions(MODEL)] == ["1", "2"]
    assert workspace.list_model_versions(MODEL)[1].tags["data_version"] == "1"  # same content
    gate = training_runs("dev")
    assert any("champion_test_auc" in r.data.metrics for r in gate)


def test_a_model_trained_on_shuffled_labels_fails_the_gate(
    mlops_root: Path, tmp_path: Path, good_frame: pd.DataFrame
) -> None:
    shuffled = good_frame.copy()
    shuffled[LABEL] = shuffled[LABEL].sample(frac=1.0, random_state=3).to_numpy()

    state = train_dev(data_path=write(shuffled, tmp_path / "shuffled.csv"), return_state=True)

    assert state.type == StateType.FAILED
    assert "quality gate failed" in state.message or "quality gate failed" in str(
        state.result(raise_on_failure=False)
    )
    assert backends.workspace("dev").list_model_versions(MODEL) == []
