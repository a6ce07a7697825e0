"""Fixtures for endpoint tests: model folders, real server processes, a scoring client.

Every fixture that starts a server stops it by pid (`stop_all`, which stops the endpoint
server and the inference servers of its deployments) in its teardown, which pytest runs
whether the test passed or failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from backends.local.endpoints import LocalEndpoints, stop_all
from data_checks.readmission_schema import LABEL
from records.serving import EndpointInfo
from records.workspace import ModelVersion
from synthetic_data.readmissions import generate_readmissions
from tests.endpoints.models import save_broken_model, save_fragile_model, save_trained_model


@dataclass(frozen=True)
class ModelDirs:
    good: Path
    broken: Path
    fragile: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    root = tmp_path_factory.mktemp("endpoint-models")
    good = save_trained_model(root / "good")
    return ModelDirs(
        good=good,
        broken=save_broken_model(good, root / "broken"),
        fragile=save_fragile_model(root / "fragile"),
    )


@pytest.fixture(scope="session")
def rows() -> pd.DataFrame:
    """Patients to score (not the training rows)."""
    return generate_readmissions(600, seed=5).drop(columns=[LABEL])


def model_status(response: httpx.Response) -> int:
    """The status the scoring script answered: Azure's endpoint (and ours) passes a non-200
    from the container on as 424 with the container's code in a header."""
    if response.status_code == 424:
        return int(response.headers["ms-azureml-model-error-statuscode"])
    return response.status_code


def model_version(
    version: str, directory: Path, tags: Mapping[str, str] | None = None
) -> ModelVersion:
    return ModelVersion("readmission", version, str(directory), None, dict(tags or {}))


def split_body(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "input_data": {
            "columns": list(rows.columns),
            "index": list(range(len(rows))),
            "data": rows.to_numpy().tolist(),
        }
    }


def records_body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"input_data": json.loads(rows.to_json(orient="records"))}


def collected(
    endpoints: LocalEndpoints,
    name: str,
    since: datetime,
    until: Callable[[pd.DataFrame], bool],
    timeout: float = 15,
) -> pd.DataFrame:
    """The endpoint's collected rows since `since`, polled until `until(rows)` holds (the
    script's collector posts after answering, and the sidecar writes every half second)."""
    deadline = time.monotonic() + timeout
    rows = pd.DataFrame()
    while time.monotonic() < deadline:
        rows = endpoints.read_capture(name, since)
        if len(rows) and until(rows):
            break
        time.sleep(0.2)
    return rows


def of_request(rows: pd.DataFrame, request_id: str) -> pd.DataFrame:
    return rows[rows["request_id"] == request_id] if len(rows) else rows


def a_second_ago() -> datetime:
    """Collected events carry whole seconds: a window must start on a whole second."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)


@dataclass
class Caller:
    """A keep-alive client for one endpoint, with its scoring URI and key."""

    endpoints: LocalEndpoints
    name: str
    http: httpx.Client
    scoring_uri: str
    key: str

    @classmethod
    def open(cls, endpoints: LocalEndpoints, name: str) -> Caller:
        info = endpoints.get_endpoint(name)
        assert info is not None, f"endpoint {name} does not exist"
        return cls(
            endpoints, name, httpx.Client(timeout=60), info.scoring_uri, endpoints.get_key(name)
        )

    @property
    def info(self) -> EndpointInfo:
        info = self.endpoints.get_endpoint(self.name)
        assert info is not None
        return info

    def score(
        self, body: dict[str, Any] | bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(
            self.scoring_uri,
            content=content,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A workspace directory for one test; its endpoint servers are stopped afterwards."""
    directory = tmp_path / "workspace"
    yield directory
    stop_all(directory)


def serving_endpoint(endpoints: LocalEndpoints, name: str, models: ModelDirs) -> Caller:
    """An endpoint with blue (v1) and green (v2), all live traffic on blue. The two start
    side by side, as two deployments of one endpoint may."""
    endpoints.create_or_update_endpoint(name)
    with ThreadPoolExecutor(2) as pool:
        started = [
            pool.submit(
                endpoints.create_or_update_deployment,
                name,
                colour,
                model_version(version, models.good),
                models.good,
            )
            for colour, version in (("blue", "1"), ("green", "2"))
        ]
        for future in started:
            future.result()
    endpoints.set_traffic(name, {"blue": 100}, None)
    return Caller.open(endpoints, name)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, models: ModelDirs) -> Iterator[Caller]:
    """One serving endpoint for a test module; tests set the traffic they need first."""
    directory = tmp_path_factory.mktemp("shared") / "workspace"
    try:
        caller = serving_endpoint(LocalEndpoints(directory), "shared", models)
        yield caller
        caller.http.close()
    finally:
        stop_all(directory)


def deployment_pids(endpoints: LocalEndpoints, name: str) -> dict[str, list[int]]:
    """Each deployment's inference server processes: the gunicorn master, then its workers."""
    import psutil

    key = endpoints.get_key(name)
    base = endpoints.status(name).base_url
    state = httpx.get(f"{base}/admin/state", headers={"Authorization": f"Bearer {key}"}).json()
    pids = {}
    for deployment, described in state["deployments"].items():
        master = described["pid"]
        workers = [child.pid for child in psutil.Process(master).children(recursive=True)]
        pids[deployment] = [master, *workers]
    return pids


def gone(pid: int, timeout: float = 15) -> bool:
    """The process exited (a zombie waiting for a parent that is itself gone counts)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
