"""Fixtures for endpoint tests: model folders, real server processes, a scoring client.

Every fixture that starts a server stops it by pid (`stop_all`) in its teardown, which pytest
runs whether the test passed or failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from backends.base import EndpointInfo, ModelVersion
from backends.local.endpoints import LocalEndpoints, stop_all
from data_checks.readmission_schema import LABEL
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


def captured_lines(
    state_dir: Path, deployment: str, until: Callable[[list[dict]], bool], timeout: float = 10
) -> list[dict]:
    """Today's capture lines of a deployment, polled until `until(lines)` holds (the server
    flushes capture about once a second)."""
    path = state_dir / "capture" / deployment / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    deadline = time.monotonic() + timeout
    lines: list[dict] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            if until(lines):
                break
        time.sleep(0.1)
    return lines


def of_request(lines: list[dict], request_id: str) -> list[dict]:
    return [line for line in lines if line["request_id"] == request_id]


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
    """An endpoint with blue (v1) and green (v2), all live traffic on blue."""
    endpoints.create_or_update_endpoint(name)
    endpoints.create_or_update_deployment(
        name, "blue", model_version("1", models.good), models.good
    )
    endpoints.create_or_update_deployment(
        name, "green", model_version("2", models.good), models.good
    )
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
