"""Operating from Prefect: deploy from prefect.yaml, a worker, schedules and the drift trigger."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import IntervalSchedule

import backends
from backends.local.endpoints import stop_all
from data_checks.readmission_schema import LABEL
from flows.batch import watch_inbox
from flows.monitor_drift import monitor_drift
from flows.release import release
from mlops_cli.traffic import send_traffic
from records.batch import SUMMARY_FILE
from settings import config_dir, load_batch_settings
from synthetic_data.readmissions import generate_readmissions
from tests.integration.release_helpers import Approver, publish_working_tree_assets

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
DEPLOYMENTS = {
    "infra",
    "train-dev",
    "release",
    "retrain-scheduled",
    "drift-monitor",
    "retrain-on-drift",
    "rollback",
    "batch-inbox",
    "batch-score",
}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """prefect.yaml deployed to the session's server and a process worker serving the pool."""
    root = tmp_path_factory.mktemp("operations") / "mlops"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLOPS_ROOT", str(root))
    # Small samples: the champion comparison's noise is bigger than the production margins,
    # and this test is about the loop (event -> automation -> retrain -> approval), not AUC.
    config = root.parent / "config"
    shutil.copytree(config_dir(), config)
    for name, section, key in (
        ("training.yaml", "gate", "champion_min_delta"),
        ("retrain.yaml", None, "min_auc_gain"),
    ):
        settings = yaml.safe_load((config / name).read_text())
        (settings[section] if section else settings)[key] = -0.05
        (config / name).write_text(yaml.safe_dump(settings))
    patch.setenv("MLOPS_CONFIG_DIR", str(config))
    publish_working_tree_assets()
    env = {**os.environ, "PWD": str(REPO), "PYTHONPATH": str(REPO)}
    subprocess.run(
        [PREFECT, "work-pool", "create", "mlops-local", "--type", "process", "--overwrite"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    deploy = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    log = (root.parent / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "mlops-local"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield root
    os.killpg(worker.pid, signal.SIGINT)  # a worker ignores SIGTERM for a while
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    for workspace in (root / "workspaces").glob("*"):
        stop_all(workspace)
    patch.undo()


def deployment(name: str):
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    assert found, f"deployment {name} not found"
    return found[0]


def runs_of(deployment_name: str) -> list:
    dep = deployment(deployment_name)
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id={"any_": [dep.id]})
        )


def wait_for(predicate, timeout: float, interval: float = 2.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def test_deploy_all_lists_every_deployment_with_its_schedule(deployed: Path) -> None:
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
    assert names >= DEPLOYMENTS
    assert [s.schedule.cron for s in deployment("retrain-scheduled").schedules] == ["0 3 * * 1"]
    assert [s.schedule.cron for s in deployment("drift-monitor").schedules] == ["0 * * * *"]
    assert deployment("release").parameter_openapi_schema["properties"]["data_path"]


def test_a_scheduled_run_fires_on_the_worker(deployed: Path) -> None:
    dep = deployment("drift-monitor")
    with get_client(sync_client=True) as client:
        client.create_deployment_schedules(
            dep.id, [(IntervalSchedule(interval=timedelta(seconds=10)), True)]
        )

    def finished():
        return [r for r in runs_of("drift-monitor") if r.state and r.state.is_final()]

    runs = wait_for(finished, timeout=180)
    assert runs, "no scheduled drift-monitor run reached a final state"
    # Nothing is in prod in this backend yet: the run ran our code and says so.
    assert runs[0].state.type in (StateType.FAILED, StateType.COMPLETED)
    with get_client(sync_client=True) as client:
        for schedule in deployment("drift-monitor").schedules:
            client.delete_deployment_schedule(dep.id, schedule.id)


def test_drift_starts_one_retrain_which_reaches_approval(deployed: Path) -> None:
    data = deployed.parent / "first.csv"
    generate_readmissions(8_000, seed=51).to_csv(data, index=False)
    approver = Approver(approved=True, name_="heidi")
    approver.start()
    assert release(data_path=str(data), return_state=True).type == StateType.COMPLETED
    approver.join(timeout=60)

    send_traffic(2_500, batch=50, age_offset=15, seed=7, write_recent_data=True)
    time.sleep(1.5)
    assert monitor_drift().status == "drift"

    retrains = wait_for(lambda: runs_of("retrain-on-drift"), timeout=60)
    assert len(retrains) == 1
    assert retrains[0].parameters.get("trigger") == "drift"

    # A second alarm inside the cooldown starts nothing.
    assert monitor_drift().status == "drift"
    time.sleep(15)
    assert len(runs_of("retrain-on-drift")) == 1

    def suspended_release_or_failure():
        retrain = runs_of("retrain-on-drift")[0]
        if retrain.state and retrain.state.is_final() and not retrain.state.is_completed():
            return f"retrain-on-drift ended {retrain.state.name}: {retrain.state.message}"
        releases = [r for r in runs_of("release") if r.state]
        failed = [r for r in releases if r.state.is_final() and not r.state.is_completed()]
        if failed:
            return f"release ended {failed[0].state.name}: {failed[0].state.message}"
        return [r for r in releases if r.state.name == "Suspended"]

    outcome = wait_for(suspended_release_or_failure, timeout=480, interval=5)
    assert isinstance(outcome, list) and outcome, outcome or "no release reached approval"


def test_a_file_dropped_in_the_inbox_is_scored_by_the_run_its_event_starts(deployed: Path) -> None:
    """The trigger of prefect.yaml's batch-score on the watcher's event, on the worker. The
    champion is the one the drift test above released."""
    settings = load_batch_settings()
    inbox = Path(backends.batch_scoring(settings.environment).inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    rows = generate_readmissions(400, seed=61).drop(columns=[LABEL])
    rows.to_csv(inbox / ".discharges.partial", index=False)
    (inbox / ".discharges.partial").replace(inbox / "discharges.csv")

    assert watch_inbox() == ["discharges.csv"]

    def finished_runs():
        return [r for r in runs_of("batch-score") if r.state and r.state.is_final()]

    runs = wait_for(finished_runs, timeout=180)
    assert len(runs) == 1, runs
    run = runs[0]
    assert run.state.is_completed(), run.state.message
    assert run.parameters["input"] == str((inbox / "discharges.csv").resolve())
    summaries = list(inbox.parent.glob(f"{settings.results}/*/*/{SUMMARY_FILE}"))
    assert len(summaries) == 1 and '"rows_scored": 400' in summaries[0].read_text()

    assert watch_inbox() == []  # handled: a second look starts nothing
    time.sleep(10)
    assert len(runs_of("batch-score")) == 1
