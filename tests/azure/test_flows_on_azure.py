"""The same flows (train-dev, release with approval, rollback) end to end on the azure backend.

The backend is selected by name (MLOPS_BACKEND=azure) and every Azure call goes through the
real azure-ai-ml SDK to the fake REST API (tests/azure/conftest.py). Two things the fake's
service does for real here:

- compute: a submitted training pipeline job runs its components (the same YAML and scripts)
  with the local component runner, and what they write becomes the job's outputs in the
  fake's storage, which the backend downloads through the SDK as from Azure;
- serving: endpoints answer on a loopback HTTP server with an Entra token, score with the model
  files the deployed version holds in the fake's storage, refuse bad requests with 4xx, and
  count every request for the Azure Monitor metrics the rollout's health checks read.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.schemas.objects import StateType

import backends
from backends.azure.pipelines import PipelineRunner
from backends.local.workspace import LocalWorkspace
from flows.release import release
from flows.rollback import rollback
from flows.train_dev import train_dev
from synthetic_data.readmissions import generate_readmissions
from tasks.audit import read_audit_log
from tasks.integration_tests import split_body
from tasks.settings import config_dir, load_release_settings, load_training_settings
from tests.azure.conftest import AzureUnderTest
from tests.integration.release_helpers import Approver

MODEL = load_training_settings().model_name
SETTINGS = load_release_settings()


@pytest.fixture
def azure_flows(
    fake_azure: AzureUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureUnderTest]:
    """The azure backend selected by name, the fake's compute and serving switched on."""
    monkeypatch.setenv("MLOPS_BACKEND", "azure")
    # 8k-row samples: the champion comparison's noise is bigger than the default margin
    config = tmp_path / "config"
    shutil.copytree(config_dir(), config)
    training = yaml.safe_load((config / "training.yaml").read_text())
    training["gate"]["champion_min_delta"] = -0.05
    (config / "training.yaml").write_text(yaml.safe_dump(training))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(config))
    fake = fake_azure.fake
    fake.serve_scoring()
    compute = tmp_path / "compute"
    submit = PipelineRunner.run

    def run_on_fake_compute(
        runner: PipelineRunner, pipeline: Path, inputs: dict[str, Any], run_name: str | None = None
    ) -> Any:
        """Run the components as the job will, then let the SDK submit, poll and download:
        the fake's job "writes" what they produced."""
        local_inputs = dict(inputs)
        local_inputs["raw_data"] = _download_data(fake_azure, runner, inputs["raw_data"], compute)
        ran = LocalWorkspace(runner.spec, compute).run_pipeline(pipeline, local_inputs, run_name)
        experiment = yaml.safe_load(Path(pipeline).read_text())["experiment_name"]
        fake.job_outputs[experiment] = {k: Path(v) for k, v in ran.outputs.items() if "." in k}
        return submit(runner, pipeline, inputs, run_name)

    monkeypatch.setattr(PipelineRunner, "run", run_on_fake_compute)
    try:
        yield fake_azure
    finally:
        fake.stop_scoring()


def _download_data(azure: AzureUnderTest, runner: PipelineRunner, uri: str, into: Path) -> str:
    """The registered data asset's file, from the workspace's storage in the fake."""
    if Path(uri).is_file():
        return uri
    ws = azure.fake.workspace(runner.spec.workspace)
    path = re.search(r"/paths/(?P<path>.+)$", uri)
    assert path, f"data asset path {uri} is not a datastore path"
    files = azure.fake.files_under(ws.storage_account, ws.container, path["path"])
    assert len(files) == 1, files.keys()
    target = into / "data" / Path(path["path"]).name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(next(iter(files.values())))
    return str(target)


def run_release(data_path: str, approver: Approver) -> Any:
    approver.start()
    state = release(data_path=data_path, return_state=True)
    approver.join(timeout=60)
    assert approver.error is None, approver.error
    return state


def prod_endpoint(azure: AzureUnderTest) -> dict:
    ws = azure.fake.workspace(azure.topology.environment("prod").workspace)
    return ws.endpoints[SETTINGS.prod_endpoint]["properties"]


def score_prod() -> httpx.Response:
    endpoint = backends.endpoints("prod").get_endpoint(SETTINGS.prod_endpoint)
    assert endpoint is not None
    key = backends.endpoints("prod").get_key(SETTINGS.prod_endpoint)
    features = generate_readmissions(20, seed=5).drop(columns=["readmitted_30d"])
    return httpx.post(
        endpoint.scoring_uri,
        json=split_body(features),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


@pytest.mark.skipif(
    os.environ.get("MLOPS_SLOW_TESTS") != "1",
    reason="12 minutes on 2 cores (three trainings, two rollouts through the fake): "
    "run with MLOPS_SLOW_TESTS=1; not in the default CI run yet",
)
@pytest.mark.timeout(1800)  # three trainings, two rollouts: minutes on a busy machine
def test_train_dev_release_and_rollback_run_end_to_end_on_azure(
    azure_flows: AzureUnderTest, tmp_path: Path
) -> None:
    data = {}
    for name, seed in (("dev", 20), ("first", 21), ("second", 23)):
        data[name] = str(tmp_path / f"{name}.csv")
        generate_readmissions(8_000, seed=seed).to_csv(data[name], index=False)
    fake = azure_flows.fake

    # train-dev: registered in the dev workspace with the champion alias (a tag on Azure)
    trained = train_dev(data_path=data["dev"], return_state=True)
    assert trained.type == StateType.COMPLETED, trained.message
    dev_model = trained.result()
    dev = backends.workspace("dev")
    assert [v.version for v in dev.list_model_versions(MODEL)] == [dev_model.version]
    assert dev.get_model(MODEL, "champion").version == dev_model.version

    # first release, approved through the Prefect API: shared registry v1, prod blue 100%
    state = run_release(data["first"], Approver(approved=True, name_="alice"))
    assert state.type == StateType.COMPLETED, state.message
    promoted = state.result()
    registry = backends.shared_registry()
    assert [v.version for v in registry.list_model_versions(MODEL)] == ["1"]
    champion = registry.get_model(MODEL, "champion")
    assert champion is not None and champion.version == promoted.version == "1"
    assert champion.tags["approved_by"] == "alice"
    assert prod_endpoint(azure_flows)["traffic"] == {"blue": 100}
    assert backends.endpoints("test").get_endpoint(SETTINGS.test_endpoint) is None
    response = score_prod()
    assert response.status_code == 200 and response.json()["model"]["version"] == "1"
    # the rollout's health checks read Azure Monitor metrics of what the fake served
    metrics = [r for r in fake.requests if r.path.endswith("/Microsoft.Insights/metrics")]
    assert metrics and all(r.status == 200 for r in metrics)

    # second release goes green through mirror -> 10 -> 50 -> 100, every step health-checked
    state = run_release(data["second"], Approver(approved=True, name_="carol"))
    assert state.type == StateType.COMPLETED, state.message
    assert [v.version for v in registry.list_model_versions(MODEL)] == ["1", "2"]
    endpoint = backends.endpoints("prod").get_endpoint(SETTINGS.prod_endpoint)
    assert endpoint is not None
    assert dict(endpoint.traffic) == {"blue": 0, "green": 100}
    assert {d.name: d.model_version for d in endpoint.deployments} == {"blue": "1", "green": "2"}
    assert registry.get_model(MODEL, "champion").version == "2"
    assert score_prod().json()["model"]["version"] == "2"
    mirrored = [
        r.json()["properties"]["mirrorTraffic"]
        for r in fake.requests
        if r.method == "PUT" and r.path.endswith(f"/onlineEndpoints/{SETTINGS.prod_endpoint}")
    ]
    assert any(m.get("green") for m in mirrored)  # the shift started with a mirror step

    # rollback: traffic and the champion alias back on v1
    back = rollback(reason="complaints from the ward", actor="dave", return_state=True)
    assert back.type == StateType.COMPLETED, back.message
    assert prod_endpoint(azure_flows)["traffic"]["blue"] == 100
    assert registry.get_model(MODEL, "champion").version == "1"
    assert score_prod().json()["model"]["version"] == "1"

    actions = [(r.action, r.actor) for r in read_audit_log()]
    for expected in (("approved", "alice"), ("promoted", "alice"), ("approved", "carol")):
        assert expected in actions
    assert ("rollback", "dave") in actions
    assert {"deployed", "traffic", "champion"} <= {a for a, _ in actions}
    assert not fake.unhandled
