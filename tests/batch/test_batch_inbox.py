"""Batch scoring from the inbox, on both backends: the watcher announces each new file once,
batch-score scores it once with the champion (results, rejects and the summary written back
beside the inbox), a file breaking the contract is reported and never scored, a job past the
error threshold fails with its counts, and a watcher killed after announcing scores nothing
twice when run again. Prefect's trigger from the event to a batch-score run on a worker is in
tests/integration/test_operations.py."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.variables import Variable

import backends
from data_checks.readmission_schema import LABEL
from flows.batch import batch_score, watch_inbox
from records import aliases, lineage_tags
from records.batch import BatchScoringFailed, BatchSummary
from records.workspace import ModelVersion
from settings import load_batch_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.monitoring import load_production_window
from tests.drift_events import prefect_events, wait_for_prefect_events
from tests.endpoints.models import save_trained_model
from tests.integration.release_helpers import publish_working_tree_assets

MODEL = "readmission-classifier"
SETTINGS = load_batch_settings()
ENVIRONMENT = SETTINGS.environment


@dataclass
class Stage:
    backend: str
    champion: ModelVersion
    files: Path

    def drop(self, name: str, rows: pd.DataFrame) -> None:
        """Put a file in the environment's inbox as a person would."""
        source = self.files / name
        rows.to_csv(source, index=False)
        backends.batch_scoring(ENVIRONMENT).put_inbox_file(source, name)

    def results(self, summary: BatchSummary) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(scored, rejects) of a finished job, wherever the backend wrote them."""
        into = self.files / f"results-{summary.run_id}"
        into.mkdir(exist_ok=True)
        scored, rejects = backends.batch_scoring(ENVIRONMENT).results_copy(summary, into)
        return pd.read_parquet(scored), pd.read_parquet(rejects)


@contextlib.contextmanager
def on_backend(backend: str, root: Path, patch: pytest.MonkeyPatch) -> Iterator[None]:
    """The flows on `backend`: locally under `root`; on azure against the fake."""
    patch.setenv("MLOPS_ROOT", str(root))
    if backend == "local":
        yield
        return
    from tests.azure.conftest import azure_under_test  # the fake, only where it is used

    with azure_under_test(patch):
        patch.setenv("MLOPS_BACKEND", "azure")
        yield


@pytest.fixture(scope="module", params=["local", "azure"])
def stage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp(f"batch-{request.param}") / "mlops"
    files = tmp_path_factory.mktemp(f"batch-files-{request.param}")
    with (
        pytest.MonkeyPatch.context() as patch,
        on_backend(request.param, root, patch),
    ):
        publish_working_tree_assets()
        workspace = backends.workspace("test")
        model = workspace.register_model(
            MODEL,
            str(save_trained_model(files / "model", rows=1_500, seed=3)),
            "run-batch",
            {lineage_tags.PIPELINE_RUN_ID: "run-batch", lineage_tags.TEST_THRESHOLD: "0.3"},
            "a model for batch scoring tests",
        )
        registry = backends.shared_registry()
        champion = registry.promote(
            model,
            workspace.model_path(model),
            {lineage_tags.SOURCE_WORKSPACE: workspace.name, lineage_tags.APPROVED_BY: "test"},
            "test",
        )
        registry.set_model_alias(MODEL, aliases.CHAMPION, champion.version)
        Variable.unset(_watermark_variable())  # the other backend's run of this module
        yield Stage(request.param, registry.get_model(MODEL, aliases.CHAMPION) or champion, files)
        Variable.unset(_watermark_variable())


def _watermark_variable() -> str:
    return f"mlops_batch_inbox_{ENVIRONMENT}"


def discharges(rows: int, seed: int, bad: int = 0) -> pd.DataFrame:
    """A day's discharges: no label; the first `bad` rows break the contract one way each."""
    frame = generate_readmissions(rows, seed=seed).drop(columns=[LABEL])
    frame["encounter_id"] = [f"e-{seed}-{i}" for i in range(rows)]
    breakers = [("age", 400), ("payer_code", "XX"), ("num_medications", None)]
    frame = frame.astype({"age": object, "num_medications": object})
    for row in range(bad):
        column, value = breakers[row % len(breakers)]
        frame.loc[row, column] = value
    return frame


def artifacts_of(state) -> dict[str, str]:  # noqa: ANN001 - a Prefect State
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return {a.key: str(a.data) for a in found if a.key}


def test_a_dropped_file_is_scored_once_with_its_rejects_and_a_summary(stage: Stage) -> None:
    started = datetime.now(UTC)
    stage.drop("discharges-day1.csv", discharges(300, seed=11, bad=3))

    assert watch_inbox() == ["discharges-day1.csv"]
    events = wait_for_prefect_events(SETTINGS.event, started, 1)
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["name"] == "discharges-day1.csv" and payload["environment"] == ENVIRONMENT

    state = batch_score(payload["uri"], ENVIRONMENT, payload["sha256"], return_state=True)
    summary: BatchSummary = state.result()
    assert (summary.rows, summary.rows_scored, summary.rows_refused) == (300, 297, 3)
    assert summary.model_version == stage.champion.version and summary.sha256 == payload["sha256"]
    assert set(summary.refused_by_rule) and sum(summary.refused_by_rule.values()) == 3
    scored, rejects = stage.results(summary)
    assert len(scored) == 297 and scored["probability"].between(0, 1).all()
    assert set(scored["label"]) <= {0, 1}
    assert (scored["model_version"] == stage.champion.version).all()
    assert "e-11-0" not in set(scored["encounter_id"])  # the refused rows are not in it
    assert list(rejects["row"]) == [0, 1, 2]
    assert "age" in rejects["reasons"][0] and "payer_code" in rejects["reasons"][1]
    report = artifacts_of(state)["batch-summary"]
    assert "| 300 | 297 | 3 |" in report and "Refused rows by rule" in report

    # run again, or the same content dropped under another name: nothing is scored twice
    assert watch_inbox() == []
    stage.drop("discharges-day1-again.csv", discharges(300, seed=11, bad=3))
    assert watch_inbox() == []
    again = batch_score("discharges-day1-again.csv", ENVIRONMENT)
    assert again.run_id == summary.run_id and again.finished_at == summary.finished_at

    # the scored inputs feed the drift monitor like online traffic
    window = load_production_window(ENVIRONMENT, "readmission-prod", 1)
    assert len(window[window["request_id"] == f"batch-{summary.run_id}"]) == 297


def test_a_file_failing_the_contract_is_reported_and_not_scored(stage: Stage) -> None:
    started = datetime.now(UTC)
    stage.drop("discharges-bad.csv", discharges(100, seed=12, bad=30))  # 30%: refused whole

    state = watch_inbox(return_state=True)
    assert state.result() == []
    time.sleep(2)  # events arrive asynchronously: give one the time to show
    assert prefect_events(SETTINGS.event, started) == []
    refused = artifacts_of(state)["batch-file-refused"]
    assert "discharges-bad.csv was not scored" in refused and "age between" in refused
    batch = backends.batch_scoring(ENVIRONMENT)
    assert batch.finished(batch.inbox_file("discharges-bad.csv"), stage.champion) is None


def test_a_job_past_the_error_threshold_fails_with_the_counts(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_BATCH__ERROR_THRESHOLD", "2")
    stage.drop("discharges-sloppy.csv", discharges(200, seed=13, bad=6))

    with pytest.raises(BatchScoringFailed, match=r"6 of .*200 rows"):
        batch_score("discharges-sloppy.csv", ENVIRONMENT)
    batch = backends.batch_scoring(ENVIRONMENT)
    assert batch.finished(batch.inbox_file("discharges-sloppy.csv"), stage.champion) is None


def test_a_killed_watcher_run_again_scores_nothing_twice(stage: Stage) -> None:
    watch_inbox()  # what earlier tests left in the inbox is announced: not this test's
    before = Variable.get(_watermark_variable())
    started = datetime.now(UTC)
    stage.drop("discharges-day2.csv", discharges(150, seed=14))
    assert watch_inbox() == ["discharges-day2.csv"]
    # killed after announcing, before its watermark moved: the next run announces it again
    Variable.set(_watermark_variable(), before, overwrite=True)
    assert watch_inbox() == ["discharges-day2.csv"]
    events = [
        e
        for e in wait_for_prefect_events(SETTINGS.event, started, 2)
        if e["payload"]["name"] == "discharges-day2.csv"
    ]
    assert len(events) == 2 and len({e["payload"]["sha256"] for e in events}) == 1

    # both announcements start a run, at the same time: one scores, the other finds it
    results: list[BatchSummary | BaseException] = []

    def run_for(event: dict) -> None:
        try:
            payload = event["payload"]
            results.append(batch_score(payload["uri"], ENVIRONMENT, payload["sha256"]))
        except BaseException as error:  # the assertion below shows it
            results.append(error)

    runs = [threading.Thread(target=run_for, args=(event,)) for event in events]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=300)
    assert len(results) == 2 and all(isinstance(r, BatchSummary) for r in results), results
    first, second = results
    assert isinstance(first, BatchSummary) and isinstance(second, BatchSummary)
    assert first.run_id == second.run_id and first.rows_scored == 150
    batch = backends.batch_scoring(ENVIRONMENT)
    file = batch.inbox_file("discharges-day2.csv")
    assert batch.finished(file, stage.champion) == first
