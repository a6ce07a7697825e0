"""The drift monitor on real captured prod traffic: no alarm without drift or without data."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

from backends.local.endpoints import stop_all
from flows.monitor_drift import monitor_drift
from flows.release import release
from mlops_cli.traffic import send_traffic
from synthetic_data.readmissions import generate_readmissions
from tests.drift_events import drift_events, wait_for_events
from tests.integration.release_helpers import Approver, publish_working_tree_assets


@pytest.fixture(scope="module")
def prod_serving(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("drift") / "mlops"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLOPS_ROOT", str(root))
    data = root.parent / "data.csv"
    generate_readmissions(8_000, seed=41).to_csv(data, index=False)
    publish_working_tree_assets()
    approver = Approver(approved=True, name_="grace")
    approver.start()
    state = release(data_path=str(data), return_state=True)
    approver.join(timeout=60)
    assert state.type == StateType.COMPLETED, state.message
    yield root
    for workspace in (root / "workspaces").glob("*"):
        stop_all(workspace)
    patch.undo()


def test_too_little_traffic_is_not_enough_data(prod_serving: Path) -> None:
    send_traffic(100, batch=20, seed=1)
    report = monitor_drift()
    assert report.status == "not_enough_data"
    assert "not enough" in report.message.lower()


def test_unshifted_traffic_raises_no_alarm(prod_serving: Path) -> None:
    started = datetime.now(UTC)
    send_traffic(1_500, batch=50, seed=2)
    time.sleep(1.5)  # the endpoint flushes captured rows every second
    report = monitor_drift()
    assert report.status == "no_drift", report.to_markdown()
    time.sleep(3)
    assert drift_events(started) == []


def test_shifted_traffic_emits_a_drift_event(prod_serving: Path) -> None:
    started = datetime.now(UTC)
    send_traffic(2_500, batch=50, age_offset=15, seed=3)
    time.sleep(1.5)
    report = monitor_drift()
    assert report.status == "drift"
    assert "age" in report.drifted_features
    events = wait_for_events(started, 1)
    assert len(events) == 1
    event = events[0]
    assert event["resource"]["prefect.resource.id"] == "mlops.model.readmission-classifier"
    assert "age" in event["payload"]["drifted_features"]
    assert event["payload"]["scores"]["age"] > 0.1
    assert (prod_serving / "monitoring").exists() and list(
        prod_serving.glob("monitoring/*/*/drift.png")
    )
