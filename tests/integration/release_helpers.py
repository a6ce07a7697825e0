"""Helpers for release tests: a person (or the CLI) deciding on a paused release."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect.client.schemas.objects import StateType
from prefect.states import State

import backends
from audit import read_audit_log
from backends.pipeline_assets import working_tree_assets
from mlops_cli.approvals import decide, list_paused_runs
from settings import load_release_settings
from tasks.release.serving import test_endpoint_name

REPO = Path(__file__).resolve().parents[2]


def flow_in_a_process(code: str) -> subprocess.Popen[bytes]:
    """`code` (which runs a flow) in a Python process of its own, on this test's settings and
    Prefect server, so a test can SIGKILL it mid-way as a crash would."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def publish_working_tree_assets() -> None:
    """Arrange what an approved train-dev leaves behind: the working tree's components and
    environments in the shared registry, so a release's test retraining can run them
    (tests/integration/test_train_dev.py proves the approval path that puts them there)."""
    backends.shared_registry().publish_pipeline_assets(working_tree_assets())


def release_test_endpoint(state: State) -> str:
    """The test endpoint the release run behind `state` used (each run has its own)."""
    return test_endpoint_name(
        load_release_settings().test_endpoint, state.state_details.flow_run_id
    )


def assert_test_endpoint_deleted(state: State) -> None:
    """The release deployed to its own test endpoint, and the endpoint is gone."""
    name = release_test_endpoint(state)
    deployed = [r.subject for r in read_audit_log() if r.action == "deployed"]
    assert f"test/{name}/blue" in deployed, (name, deployed)
    assert backends.endpoints("test").get_endpoint(name) is None


def wait_for_paused_release(timeout: float = 300, started_after: str = "") -> str:
    """The newest release paused in-process (suspended deployment runs of other tests and
    runs paused before `started_after` are not ours)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [
            r
            for r in list_paused_runs()
            if r.flow_name == "release" and r.state == "Paused" and r.paused_since > started_after
        ]
        if runs:
            return max(runs, key=lambda r: r.paused_since).id
        time.sleep(0.5)
    raise TimeoutError("no release paused for approval")


def decide_when_paused(
    flow_name: str,
    approved: bool,
    approver: str,
    reason: str,
    seen: list[str] | None = None,
    look: Callable[[], str] | None = None,
    timeout: float = 600,
) -> threading.Thread:
    """A thread that decides on the first paused run of `flow_name`; `look` records what the
    world looked like while the run waited (in `seen`)."""

    def decide_it() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [
                r for r in list_paused_runs() if r.flow_name == flow_name and r.state == "Paused"
            ]
            if runs:
                if look is not None and seen is not None:
                    seen.append(look())
                decide(runs[0].id, approved, approver, reason)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=decide_it, daemon=True)
    thread.start()
    return thread


def assert_refused_then_rejected(approver: Approver, state: State, rejected_by: str) -> None:
    """Both invalid inputs were refused while the run stayed paused, and the rejection that
    followed cancelled the release with nothing promoted."""
    assert len(approver.refused) == 2 and all("Validation failed" in r for r in approver.refused)
    assert approver.still_paused_after_refusal is True
    assert state.type == StateType.CANCELLED
    assert f"Rejected by {rejected_by}" in state.message
    assert "Nothing was promoted" in state.message


@dataclass(eq=False)  # threads must stay hashable
class Approver(threading.Thread):
    """Waits for the paused release and decides, as a person would through the API."""

    approved: bool
    name_: str = "alice"
    reason: str = "evidence pack reviewed"
    try_invalid_first: bool = False
    refused: list[str] = field(default_factory=list)
    still_paused_after_refusal: bool | None = None
    error: BaseException | None = None
    started_at: str = ""

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.started_at = datetime.now(UTC).isoformat()

    def run(self) -> None:
        try:
            run_id = wait_for_paused_release(started_after=self.started_at)
            if self.try_invalid_first:
                for approver, reason in (("   ", "ok"), ("bob", "")):
                    try:
                        decide(run_id, True, approver, reason)
                    except RuntimeError as refused:
                        self.refused.append(str(refused))
                time.sleep(1)
                self.still_paused_after_refusal = any(
                    r.id == run_id and r.state == "Paused" for r in list_paused_runs()
                )
            decide(run_id, self.approved, self.name_, self.reason)
        except BaseException as error:  # surfaced by the test
            self.error = error
