"""An endpoint survives what production does to it: crashes, stops, and a shift under load."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest

import backends
from backends.local.endpoints import LocalEndpoints, stop_all
from tests.endpoints.conftest import (
    Caller,
    ModelDirs,
    deployment_pids,
    gone,
    model_version,
    serving_endpoint,
    split_body,
)


def _wait_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive after {timeout} s")


def test_a_killed_server_comes_back_with_the_same_deployments_and_traffic(
    workspace: Path, models: ModelDirs, rows: pd.DataFrame
) -> None:
    endpoints = LocalEndpoints(workspace)
    caller = serving_endpoint(endpoints, "crashy", models)
    endpoints.set_traffic("crashy", {"blue": 70, "green": 30}, None)
    before = endpoints.get_endpoint("crashy")
    first_pid = endpoints.status("crashy").pid
    assert first_pid is not None
    first_children = deployment_pids(endpoints, "crashy")

    os.kill(first_pid, signal.SIGKILL)
    _wait_dead(first_pid)
    assert endpoints.status("crashy").running is False
    with pytest.raises(httpx.TransportError):
        caller.score(split_body(rows.head(1)))
    orphans = [pid for pids in first_children.values() for pid in pids if not gone(pid)]
    assert orphans == []  # the inference servers died with their endpoint

    restarted = endpoints.get_endpoint("crashy")
    second_pid = endpoints.status("crashy").pid
    os.kill(second_pid, signal.SIGKILL)
    _wait_dead(second_pid)
    again = endpoints.create_or_update_endpoint("crashy")

    assert restarted == before and again == before  # same URI, deployments, traffic
    assert second_pid != first_pid and endpoints.status("crashy").pid not in (first_pid, second_pid)
    caller.http.close()
    caller = Caller.open(endpoints, "crashy")
    served = Counter(
        caller.score(split_body(rows.iloc[[i]])).headers["azureml-model-deployment"]
        for i in range(60)
    )
    assert set(served) == {"blue", "green"}
    assert set(deployment_pids(endpoints, "crashy")) == {"blue", "green"}
    caller.http.close()


class Load:
    """Client threads scoring continuously; every response that is not a 200 is kept."""

    def __init__(self, caller: Caller, rows: pd.DataFrame, clients: int = 4) -> None:
        self.caller, self.rows = caller, rows
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, number: int) -> None:
        headers = {"Authorization": f"Bearer {self.caller.key}"}
        with httpx.Client(timeout=30, headers=headers) as client:
            i = number
            while not self.stop.is_set():
                body = split_body(self.rows.iloc[[i % len(self.rows)]])
                i += len(self.threads)
                try:
                    response = client.post(self.caller.scoring_uri, json=body)
                    outcome = (
                        response.headers["azureml-model-deployment"]
                        if response.status_code == 200
                        else f"HTTP {response.status_code}: {response.text[:200]}"
                    )
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                with self.lock:
                    if outcome in ("blue", "green"):
                        self.served[outcome] += 1
                    else:
                        self.failures.append(outcome)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.served.values()) + len(self.failures)

    def during(self, action: Callable[[], object], requests: int) -> Counter[str]:
        """Run `action`, then let at least `requests` more requests through; what they hit."""
        with self.lock:
            before = Counter(self.served)
        action()
        target = self.total + requests
        deadline = time.monotonic() + 60
        while self.total < target and time.monotonic() < deadline:
            time.sleep(0.02)
        with self.lock:
            return self.served - before


def test_a_full_blue_green_shift_under_load_fails_no_request(
    workspace: Path, models: ModelDirs, rows: pd.DataFrame
) -> None:
    endpoints = LocalEndpoints(workspace)
    endpoints.create_or_update_endpoint("busy")
    endpoints.create_or_update_deployment(
        "busy", "blue", model_version("1", models.good), models.good
    )
    endpoints.set_traffic("busy", {"blue": 100}, None)
    caller = Caller.open(endpoints, "busy")
    load = Load(caller, rows)
    start = datetime.now(UTC)
    for thread in load.threads:
        thread.start()
    try:
        green = model_version("2", models.good)
        steps = {
            "deploy green": lambda: endpoints.create_or_update_deployment(
                "busy", "green", green, models.good
            ),
            "mirror 20": lambda: endpoints.set_traffic(
                "busy", {"blue": 100, "green": 0}, {"green": 20}
            ),
            "10% live": lambda: endpoints.set_traffic("busy", {"blue": 90, "green": 10}, None),
            "50% live": lambda: endpoints.set_traffic("busy", {"blue": 50, "green": 50}, None),
            "100% live": lambda: endpoints.set_traffic("busy", {"blue": 0, "green": 100}, None),
            "delete blue": lambda: endpoints.delete_deployment("busy", "blue"),
        }
        served = {name: load.during(action, requests=400) for name, action in steps.items()}
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(timeout=60)
        caller.http.close()

    assert load.failures == [], load.failures[:5]
    assert load.total >= 2_400
    assert served["mirror 20"]["green"] == 0  # mirror copies never answer a caller
    assert served["50% live"]["green"] > 0 and served["50% live"]["blue"] > 0
    assert served["delete blue"]["blue"] == 0 and served["delete blue"]["green"] >= 400
    assert endpoints.get_endpoint("busy").traffic == {"green": 100}
    figures = endpoints.serving_metrics("busy", start, datetime.now(UTC))
    green, blue = figures.of("green"), figures.of("blue")
    assert green.errors == 0 and blue.errors == 0  # mirrored copies and live requests alike
    assert blue.requests + green.requests >= load.total  # the mirrored copies come on top


def test_stop_all_stops_every_server_and_deployment_and_the_next_call_starts_them_again(
    workspace: Path, models: ModelDirs
) -> None:
    endpoints = LocalEndpoints(workspace)
    endpoints.create_or_update_endpoint("first")
    endpoints.create_or_update_endpoint("second")
    endpoints.create_or_update_deployment(
        "first", "blue", model_version("1", models.good), models.good
    )
    pids = [endpoints.status(name).pid for name in ("first", "second")]
    children = deployment_pids(endpoints, "first")["blue"]
    assert len(children) == 3  # gunicorn's master and its two workers (WORKER_COUNT)

    stopped = stop_all(workspace)

    assert stopped == ["first", "second"]
    for pid in pids:
        _wait_dead(pid)
    assert [pid for pid in children if not gone(pid)] == []
    assert not any(endpoints.status(name).running for name in ("first", "second"))
    assert endpoints.get_endpoint("first") is not None and endpoints.status("first").running
    assert {d.name: d.state for d in endpoints.get_endpoint("first").deployments} == {
        "blue": "Succeeded"
    }
    assert stop_all(workspace) == ["first"]


def test_deleting_an_endpoint_stops_its_server_and_forgets_it(workspace: Path) -> None:
    endpoints = LocalEndpoints(workspace)
    endpoints.create_or_update_endpoint("short-lived")
    pid = endpoints.status("short-lived").pid

    endpoints.delete_endpoint("short-lived")
    endpoints.delete_endpoint("short-lived")

    _wait_dead(pid)
    assert endpoints.get_endpoint("short-lived") is None
    assert not endpoints.state_dir("short-lived").exists()


def test_a_new_endpoint_is_live_but_not_ready_and_its_key_file_is_private(
    mlops_root: Path, rows: pd.DataFrame
) -> None:
    endpoints = backends.endpoints("test")
    assert isinstance(endpoints, LocalEndpoints)
    try:
        info = endpoints.create_or_update_endpoint("fresh")
        base = info.scoring_uri.removesuffix("/score")
        state = endpoints.state_dir("fresh") / "state.json"

        assert endpoints.state_dir("fresh").is_relative_to(mlops_root)
        assert httpx.get(f"{base}/health/live").status_code == 200
        assert httpx.get(f"{base}/health/ready").status_code == 503
        assert state.stat().st_mode & 0o777 == 0o600
        assert endpoints.create_or_update_endpoint("fresh") == info  # idempotent, same key
        assert len(endpoints.get_key("fresh")) >= 32
        unrouted = httpx.post(
            info.scoring_uri,
            json=split_body(rows.head(1)),
            headers={"Authorization": f"Bearer {endpoints.get_key('fresh')}"},
        )
        assert unrouted.status_code == 503 and "no deployment" in unrouted.json()["message"]
    finally:
        stop_all(endpoints.workspace_dir)


def test_an_endpoint_recorded_before_deployments_ran_the_script_comes_back_running_it(
    workspace: Path, models: ModelDirs, rows: pd.DataFrame
) -> None:
    endpoints = LocalEndpoints(workspace)
    endpoints.create_or_update_endpoint("old")
    endpoints.stop("old")
    state_file = endpoints.state_dir("old") / "state.json"
    state = json.loads(state_file.read_text())
    state["deployments"] = {  # as the in-process server wrote it: a threshold, no script
        "blue": {
            "name": "blue",
            "model_name": "readmission",
            "model_version": "1",
            "model_path": str(models.good),
            "threshold": 0.3,
        }
    }
    state["traffic"] = {"blue": 100}
    state_file.write_text(json.dumps(state))

    caller = Caller.open(endpoints, "old")
    answer = caller.score(split_body(rows.head(20)))
    caller.http.close()

    assert answer.status_code == 200, answer.text
    assert [d.state for d in endpoints.get_endpoint("old").deployments] == ["Succeeded"]
    labels = [(p["probability"] >= 0.3, p["label"]) for p in answer.json()["predictions"]]
    assert all(expected == bool(label) for expected, label in labels)
    upgraded = json.loads(state_file.read_text())["deployments"]["blue"]
    assert upgraded["variables"]["MODEL_THRESHOLD"] == "0.3" and upgraded["code"]
