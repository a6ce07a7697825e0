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
from audit import read_audit_log
from backends.pipeline_assets import AssetsNotPromoted, working_tree_assets
from data_checks.readmission_schema import FEATURES, LABEL
from flows.release import release
from flows.train_dev import train_dev
from flows.training import train_in_environment
from records import aliases, lineage_tags
from reports.model_card import NOT_DECIDED
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.training.model_card import find_model_card
from tests.integration.release_helpers import decide_when_paused

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
    approver = decide_when_paused("train-dev", True, "ivan", "components reviewed")
    state = train_dev(data_path=write(good_frame, tmp_path / "good.csv"), return_state=True)
    approver.join(timeout=30)

    assert state.type == StateType.COMPLETED, state.message
    model = state.result()
    workspace = backends.workspace("dev")
    versions = workspace.list_model_versions(MODEL)
    assert [v.version for v in versions] == ["1"]
    registered = workspace.get_model(MODEL, aliases.CHAMPION)
    assert registered is not None and registered.version == model.version
    tags = registered.tags
    assert (
        tags[lineage_tags.DATA_ASSET] == "readmissions" and tags[lineage_tags.DATA_VERSION] == "1"
    )
    assert len(tags[lineage_tags.DATA_SHA256]) == 64
    assert (
        tags[lineage_tags.PIPELINE_RUN_ID] and tags[lineage_tags.TRAIN_RUN_ID] == registered.run_id
    )
    assert tags[lineage_tags.GIT_COMMIT]
    assert float(tags[lineage_tags.metric_tag("auc")]) > 0.7
    assets = working_tree_assets()
    assert tags[lineage_tags.PIPELINE_ASSETS] == assets.digest
    assert tags[lineage_tags.PIPELINE_ASSETS_FROM] == workspace.name

    # The approved assets are in the shared registry, once, with the approver on record.
    registry = backends.shared_registry()
    held = registry.pipeline_asset_references(assets)
    assert all(
        r.startswith(f"azureml://registries/{registry.name}/") for r in held.components.values()
    )
    promoted = [r for r in read_audit_log() if r.action == "assets-promoted"]
    assert [(r.actor, r.subject) for r in promoted] == [
        ("ivan", f"{registry.name}/pipeline-assets/{assets.digest}")
    ]

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
    children = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == tags[lineage_tags.PIPELINE_RUN_ID]
    ]
    assert {r.info.run_name for r in children} == {"prep", "train", "evaluate"}
    versions_run = {r.data.tags["component"] for r in children}
    assert versions_run == {
        f"{c.name}:{c.version}"
        for c in assets.components
        if c.name
        in {"prep_readmission_data", "train_readmission_model", "evaluate_readmission_model"}
    }

    # Test trains with the registry's versions of the same components: nothing to ask again.
    in_test = train_in_environment(
        "test", write(good_frame, tmp_path / "test.csv"), aliases.CANDIDATE
    )
    assert set(in_test.pipeline_run.components.values()) == {
        held.components[name]
        for name in (
            "prep_readmission_data",
            "train_readmission_model",
            "evaluate_readmission_model",
        )
    }
    assert in_test.model.tags[lineage_tags.PIPELINE_ASSETS] == assets.digest
    assert in_test.model.tags[lineage_tags.PIPELINE_ASSETS_FROM] == registry.name

    # A second run compares with the champion on the same test rows and registers version 2.
    again = train_dev(data_path=write(good_frame, tmp_path / "again.csv"), return_state=True)
    assert again.type == StateType.COMPLETED, again.message  # no second approval asked
    assert len([r for r in read_audit_log() if r.action == "assets-promoted"]) == 1
    assert [v.version for v in workspace.list_model_versions(MODEL)] == ["1", "2"]
    assert (
        workspace.list_model_versions(MODEL)[1].tags[lineage_tags.DATA_VERSION] == "1"
    )  # same content
    gate = training_runs("dev")
    assert any("champion_test_auc" in r.data.metrics for r in gate)

    # Every registered version carries its model card in its files, naming its data; none is
    # approved yet (approval happens on the shared registry's copy, at promotion).
    for environment, version in [("dev", v) for v in workspace.list_model_versions(MODEL)] + [
        ("test", in_test.model)
    ]:
        card = find_model_card(MODEL, version.version, environment).markdown
        assert f"`{version.tags[lineage_tags.DATA_SHA256]}`" in card
        assert version.tags[lineage_tags.PIPELINE_RUN_ID] in card
        assert "### Per patient group" in card and "#### payer_code" in card
        assert NOT_DECIDED in card


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


def test_rejected_asset_promotion_promotes_nothing_and_test_refuses_the_unpromoted_code(
    mlops_root: Path, tmp_path: Path, good_frame: pd.DataFrame
) -> None:
    approver = decide_when_paused("train-dev", False, "judy", "needs a second look")
    state = train_dev(data_path=write(good_frame, tmp_path / "good.csv"), return_state=True)
    approver.join(timeout=30)

    assert state.type == StateType.CANCELLED
    assert "Rejected by judy" in state.message and "Nothing was promoted" in state.message
    assert backends.workspace("dev").get_model(MODEL, aliases.CHAMPION) is not None  # stays in dev
    with pytest.raises(AssetsNotPromoted):
        backends.shared_registry().pipeline_asset_references(working_tree_assets())
    assert [r.action for r in read_audit_log()] == ["rejected"]

    refused = release(data_path=write(good_frame, tmp_path / "release.csv"), return_state=True)
    assert refused.type == StateType.FAILED
    message = str(refused.result(raise_on_failure=False))
    assert "does not hold" in message and "component train_readmission_model" in message
    assert "Run train-dev" in message
    assert backends.workspace("test").list_model_versions(MODEL) == []  # nothing trained
