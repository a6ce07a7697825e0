"""Kill the release mid-promotion, run it again: it converges, with no duplicate versions."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

import backends
from audit import read_audit_log
from backends.local.endpoints import stop_all
from flows.release import release
from records import aliases
from settings import load_release_settings, load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tests.integration.release_helpers import (
    Approver,
    flow_in_a_process,
    publish_working_tree_assets,
)

MODEL = load_training_settings().model_name


@pytest.fixture
def crash_backend(mlops_root: Path):
    yield mlops_root
    for workspace in (mlops_root / "workspaces").glob("*"):
        stop_all(workspace)


def test_killed_mid_promotion_rerun_converges_without_duplicates(
    crash_backend: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    generate_readmissions(8_000, seed=31).to_csv(data, index=False)
    publish_working_tree_assets()
    approver = Approver(approved=True, name_="frank", reason="first attempt")
    approver.start()
    flow_process = flow_in_a_process(
        f"from flows.release import release; release(data_path={str(data)!r})"
    )
    try:
        deadline = time.monotonic() + 300
        while not any(r.action == "promoted" for r in read_audit_log()):
            assert flow_process.poll() is None, "the release ended before promoting"
            assert time.monotonic() < deadline, "no promotion within 300 s"
            time.sleep(0.05)
        flow_process.send_signal(signal.SIGKILL)
    finally:
        flow_process.kill()
        flow_process.wait()
    approver.join(timeout=30)
    assert backends.shared_registry().get_model(MODEL, aliases.CHAMPION) is None  # not finished

    rerun = Approver(approved=True, name_="frank", reason="re-run after the crash")
    rerun.start()
    state = release(data_path=str(data), return_state=True)
    rerun.join(timeout=30)

    assert state.type == StateType.COMPLETED, state.message
    registry = backends.shared_registry()
    assert [v.version for v in registry.list_model_versions(MODEL)] == ["1"]
    assert [v.version for v in backends.workspace("test").list_model_versions(MODEL)] == ["1"]
    assert registry.get_model(MODEL, aliases.CHAMPION).version == "1"
    endpoint = backends.endpoints("prod").get_endpoint(load_release_settings().prod_endpoint)
    assert endpoint.traffic[endpoint.serving()] == 100
    assert {d.model_version for d in endpoint.deployments if d.name == endpoint.serving()} == {"1"}
    promotions = [r for r in read_audit_log() if r.action == "promoted"]
    assert len(promotions) == 2 and promotions[0].subject == promotions[1].subject
