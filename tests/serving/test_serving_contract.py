"""One serving contract for both backends: the local endpoint and the fake Azure endpoint run
the same scoring script (components/serving/src/score.py) in the same inference server
(`azmlinfsrv`), so every answer below must be the same on both.

Local: the endpoint process in front of one `azmlinfsrv` per deployment. Azure: the real
azure-ai-ml deployment request against the fake REST API, whose scoring route forwards to the
script it was sent, in the environment it was sent.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest

import backends.azure
import backends.local
from backends.topology import load_topology
from data_checks.readmission_schema import FEATURES, LABEL
from records import lineage_tags
from records.serving import CAPTURE_COLUMNS, DeploymentFailed
from records.workspace import ModelVersion
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import bad_requests, split_body
from tests.azure.conftest import azure_under_test
from tests.endpoints.conftest import model_status
from tests.endpoints.models import save_broken_model, save_trained_model

MODEL = "readmission"
ENDPOINT = "serving"
THRESHOLD = 0.3
"""The model's own threshold (its `test_threshold` tag): labels must follow it, not 0.5."""


@dataclass
class Served:
    """An endpoint with `blue` serving the good model, on one backend."""

    backend: str
    endpoints: Any
    workspace: Any
    model: ModelVersion
    scoring_uri: str
    key: str
    http: httpx.Client

    def score(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
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


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serving-models")
    good = save_trained_model(root / "good", rows=1_500)
    return good, save_broken_model(good, root / "broken")


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return generate_readmissions(300, seed=11).drop(columns=[LABEL])


@pytest.fixture(scope="module", params=["local", "azure"])
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dirs: tuple[Path, Path],
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp(f"serving-{request.param}") / "mlops"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_ROOT", str(root))
        azure = azure_under_test(patch) if request.param == "azure" else contextlib.nullcontext()
        with azure as under_test:
            module = backends.azure if under_test is not None else backends.local
            topology = under_test.topology if under_test is not None else load_topology()
            if under_test is not None:
                under_test.fake.serve_scoring()
            workspace = module.open_workspace(topology.environment("test"), topology)
            model = workspace.register_model(
                MODEL,
                str(model_dirs[0]),
                "train-serving",
                {
                    lineage_tags.PIPELINE_RUN_ID: "serving",
                    lineage_tags.TEST_THRESHOLD: str(THRESHOLD),
                },
                "serving contract",
            )
            endpoints = module.open_endpoints(workspace)
            endpoints.create_or_update_endpoint(ENDPOINT)
            endpoints.create_or_update_deployment(
                ENDPOINT, "blue", model, workspace.model_path(model)
            )
            info = endpoints.set_traffic(ENDPOINT, {"blue": 100}, None)
            with httpx.Client(timeout=60) as http:
                try:
                    yield Served(
                        request.param,
                        endpoints,
                        workspace,
                        model,
                        info.scoring_uri,
                        endpoints.get_key(ENDPOINT),
                        http,
                    )
                finally:
                    if under_test is None:
                        from backends.local.endpoints import stop_all

                        for directory in (root / "workspaces").glob("*"):
                            stop_all(directory)


def expected_probabilities(model_dir: Path, rows: pd.DataFrame) -> np.ndarray:
    return mlflow.sklearn.load_model(str(model_dir)).predict_proba(rows)[:, 1]


def records_body(rows: pd.DataFrame) -> dict[str, Any]:
    return {"input_data": json.loads(rows.to_json(orient="records"))}


def test_both_layouts_answer_the_models_probabilities_and_its_own_threshold(
    served: Served, rows: pd.DataFrame, model_dirs: tuple[Path, Path]
) -> None:
    batch = rows.head(40)
    expected = expected_probabilities(model_dirs[0], batch)

    for body in (split_body(batch), records_body(batch)):
        response = served.score(body)

        assert response.status_code == 200, response.text
        answer = response.json()
        probabilities = [p["probability"] for p in answer["predictions"]]
        np.testing.assert_allclose(probabilities, expected, atol=1e-9)
        assert [p["label"] for p in answer["predictions"]] == [
            int(p >= THRESHOLD) for p in probabilities
        ]
        assert any(THRESHOLD <= p < 0.5 for p in probabilities)  # 0.5 would label these 0
        assert answer["model"] == {"name": MODEL, "version": served.model.version}
        assert response.headers["azureml-model-deployment"] == "blue"


@pytest.mark.parametrize("kind", list(bad_requests({f: 0 for f in FEATURES})))
def test_every_bad_request_gets_a_4xx_with_its_reason_and_the_server_keeps_serving(
    served: Served, rows: pd.DataFrame, kind: str
) -> None:
    good_row = json.loads(rows.head(1).to_json(orient="records"))[0]
    body = bad_requests(good_row)[kind]

    refused = served.score(body)
    after = served.score(split_body(rows.head(1)))

    assert 400 <= refused.status_code < 500, (refused.status_code, refused.text[:300])
    assert 400 <= model_status(refused) < 500  # the script's own 4xx (sent on as 424)
    reason = refused.json()["message"]
    assert isinstance(reason, str) and len(reason) > 10
    assert after.status_code == 200, after.text


def test_collected_rows_have_one_schema_and_join_each_output_to_its_input(
    served: Served, rows: pd.DataFrame
) -> None:
    since = pd.Timestamp.now(tz="UTC").to_pydatetime().replace(microsecond=0)
    batch = rows.sample(5, random_state=3)
    request_id = str(uuid.uuid4())

    response = served.score(split_body(batch), {"x-request-id": request_id})

    assert response.status_code == 200
    answered = response.json()["predictions"]
    mine = pd.DataFrame()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        captured = served.endpoints.read_capture(ENDPOINT, since)
        mine = captured[captured["request_id"] == request_id] if len(captured) else captured
        if len(mine) == len(batch) and mine["probability"].notna().all():
            break
        time.sleep(0.5)
    assert set(captured.columns) == set(FEATURES) | set(CAPTURE_COLUMNS)
    assert len(mine) == len(batch), f"{len(mine)} collected rows for request {request_id}"
    assert mine["age"].tolist() == batch["age"].tolist()
    # the collector writes rows with pandas' to_json: 10 significant digits
    np.testing.assert_allclose(mine["probability"], [p["probability"] for p in answered], atol=1e-9)
    assert mine["label"].tolist() == [p["label"] for p in answered]
    assert set(mine["deployment"]) == {"blue"} and not mine["mirrored"].any()
    assert set(mine["model_version"]) == {served.model.version}


def test_a_model_that_fails_init_never_gets_traffic(
    served: Served, rows: pd.DataFrame, model_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = served.workspace.register_model(
        MODEL,
        str(model_dirs[1]),
        "train-broken",
        {lineage_tags.PIPELINE_RUN_ID: "broken", lineage_tags.TEST_THRESHOLD: "0.5"},
        "a model file that does not load",
    )

    with pytest.raises(DeploymentFailed):
        served.endpoints.create_or_update_deployment(
            ENDPOINT, "green", broken, served.workspace.model_path(broken)
        )

    info = served.endpoints.get_endpoint(ENDPOINT)
    assert info is not None and info.serving() == "blue" and info.traffic.get("green", 0) == 0
    assert served.score(split_body(rows.head(3))).status_code == 200
