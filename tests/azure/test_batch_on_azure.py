"""Batch scoring on the azure backend: an inbox folder on the prod workspace's datastore, scored by
the champion on an Azure ML batch endpoint.

Every call goes through the real azure-ai-ml and storage SDKs to the fake REST API
(tests/azure/conftest.py); the fake's batch jobs run the real batch scoring script
(components/serving/src/batch_score.py, uploaded as the deployment's code asset) on the
registered model's files (tests/azure/fake/batch_runs.py). The champion is set up through the
backend API (registered in test, promoted to the shared registry), not the training flows.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import backends
from backends.azure.batch import AzureBatchScoring, deployment_name
from data_checks.readmission_schema import FEATURES, LABEL
from records import aliases, lineage_tags
from records.batch import SUMMARY_FILE, BatchScoringFailed, results_prefix
from records.workspace import ModelVersion
from settings import BatchSettings, load_batch_settings, load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tests.azure.conftest import AzureUnderTest
from tests.endpoints.models import save_trained_model

MODEL = load_training_settings().model_name
SETTINGS = load_batch_settings().model_copy(
    update={"azure": load_batch_settings().azure.model_copy(update={"job_timeout_seconds": 60})}
)
ROWS = 400
BAD_AGES = (2, 50, 333)
"""Rows of the dropped file whose age (400) the data contract refuses."""


@dataclass
class BatchWorld:
    azure: AzureUnderTest
    scoring: AzureBatchScoring
    champion: ModelVersion
    model_dir: Path
    deployment: str


@pytest.fixture(scope="module")
def world(
    fake_azure_for_module: AzureUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BatchWorld]:
    """A champion in the shared registry deployed to prod's batch endpoint, once per module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_BACKEND", "azure")
        model_dir = save_trained_model(tmp_path_factory.mktemp("batch") / "model", rows=1_500)
        test = backends.workspace("test")
        lineage = {lineage_tags.PIPELINE_RUN_ID: "batch-test-run"}
        candidate = test.register_model(MODEL, str(model_dir), "train-run", lineage, "batch")
        registry = backends.shared_registry()
        champion = registry.promote(
            candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: test.name}, "approved"
        )
        registry.set_model_alias(MODEL, aliases.CHAMPION, champion.version)
        scoring = backends.batch_scoring(SETTINGS.environment)
        assert isinstance(scoring, AzureBatchScoring)
        deployment = scoring.deploy_model(SETTINGS.endpoint, champion, model_dir, None, SETTINGS)
        yield BatchWorld(fake_azure_for_module, scoring, champion, model_dir, deployment)


def drop_in_inbox(world: BatchWorld, name: str, frame: pd.DataFrame, tmp_path: Path) -> bytes:
    """Put a CSV in prod's inbox as someone with blob access would (fake storage directly)."""
    folder = tmp_path / "drop"
    folder.mkdir(exist_ok=True)
    frame.to_csv(folder / name, index=False)
    ws = world.azure.fake.workspaces[world.azure.topology.environments["prod"].workspace.lower()]
    world.azure.fake.put_files(ws.storage_account, ws.container, SETTINGS.inbox, folder)
    return (folder / name).read_bytes()


def discharges(seed: int, bad_rows: tuple[int, ...] = BAD_AGES) -> pd.DataFrame:
    frame = generate_readmissions(ROWS, seed=seed).drop(columns=[LABEL])
    frame.loc[list(bad_rows), "age"] = 400
    return frame


def results(world: BatchWorld, prefix: str) -> dict[str, bytes]:
    ws = world.azure.fake.workspaces[world.azure.topology.environments["prod"].workspace.lower()]
    folder = f"{SETTINGS.results}/{prefix}/"
    return world.azure.fake.files_under(ws.storage_account, ws.container, folder)


def deployment_puts(world: BatchWorld) -> list[str]:
    return [
        r.path
        for r in world.azure.fake.requests
        if r.method == "PUT" and "/batchEndpoints/" in r.path and "/deployments/" in r.path
    ]


def test_deploying_the_same_champion_again_leaves_the_batch_deployment_as_it_is(
    world: BatchWorld,
) -> None:
    puts = deployment_puts(world)
    again = world.scoring.deploy_model(
        SETTINGS.endpoint, world.champion, world.model_dir, None, SETTINGS
    )
    assert again == world.deployment == deployment_name(world.champion)
    assert deployment_puts(world) == puts and len(puts) == 1
    ml = world.scoring.client
    assert ml.batch_endpoints.get(SETTINGS.endpoint).defaults.deployment_name == again
    sent = ml.batch_deployments.get(again, endpoint_name=SETTINGS.endpoint)
    assert sent.code_configuration.scoring_script == "batch_score.py"
    assert sent.model.startswith("azureml://registries/")
    # read back as the SDK reads every batch deployment: settings at the root
    assert sent.environment_variables["MODEL_VERSION"] == world.champion.version
    assert sent.max_concurrency_per_instance == SETTINGS.azure.max_concurrency_per_instance
    assert sent.output_action == "summary_only"


def test_a_file_dropped_in_the_inbox_is_scored_by_the_champion_and_written_back(
    world: BatchWorld, tmp_path: Path
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    content = drop_in_inbox(world, "discharges-day1.csv", discharges(seed=1), tmp_path)

    (listed,) = [f for f in world.scoring.inbox_files() if f.name == "discharges-day1.csv"]
    assert listed.sha256 == hashlib.sha256(content).hexdigest() and listed.size == len(content)
    assert world.scoring.inbox_file(listed.uri) == listed
    assert world.scoring.local_copy(listed).read_bytes() == content
    assert world.scoring.finished(listed, world.champion) is None

    summary = world.scoring.score(SETTINGS.endpoint, listed, world.champion, "run-1", SETTINGS)

    assert (summary.rows, summary.rows_scored, summary.rows_refused) == (ROWS, ROWS - 3, 3)
    assert summary.job.startswith("batchjob-") and summary.sha256 == listed.sha256
    written = results(world, results_prefix(listed, world.champion))
    assert sorted(written) == [
        "rejects/discharges-day1.parquet",
        "scored/discharges-day1.parquet",
        SUMMARY_FILE,
    ]
    scored = pq.read_table(io.BytesIO(written["scored/discharges-day1.parquet"])).to_pandas()
    assert len(scored) == ROWS - 3 and scored["probability"].between(0, 1).all()
    assert set(scored["model_version"]) == {world.champion.version}
    assert set(scored["run_id"]) == {summary.job}  # the script's AZUREML_RUN_ID
    rejects = pq.read_table(io.BytesIO(written["rejects/discharges-day1.parquet"])).to_pandas()
    assert list(rejects["row"]) == list(BAD_AGES)
    assert rejects["reasons"].str.contains("'age'").all()
    assert world.scoring.finished(listed, world.champion) == summary

    frame = world.scoring.read_scored(since)
    assert len(frame) == ROWS - 3
    assert {*FEATURES, "probability", "label", "model_version", "timestamp"} <= set(frame.columns)
    assert world.scoring.read_scored(datetime.now(UTC) + timedelta(minutes=1)).empty


def test_a_job_past_the_error_threshold_fails_with_the_counts_and_keeps_only_the_rejects(
    world: BatchWorld, tmp_path: Path
) -> None:
    drop_in_inbox(world, "discharges-day2.csv", discharges(seed=2), tmp_path)
    file = world.scoring.inbox_file("discharges-day2.csv")
    strict: BatchSettings = SETTINGS.model_copy(update={"error_threshold": 1})

    with pytest.raises(BatchScoringFailed, match="3 of 400 rows were refused") as failed:
        world.scoring.score(SETTINGS.endpoint, file, world.champion, "run-2", strict)

    assert (failed.value.rows_read, failed.value.rows_refused) == (ROWS, 3)
    assert sum(failed.value.refused_by_rule.values()) >= 3
    written = results(world, results_prefix(file, world.champion))
    assert "rejects/discharges-day2.parquet" in written
    assert "scored/discharges-day2.parquet" not in written and SUMMARY_FILE not in written
    assert world.scoring.finished(file, world.champion) is None


def test_a_missing_inbox_file_is_named(world: BatchWorld) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-day.csv"):
        world.scoring.inbox_file("no-such-day.csv")
