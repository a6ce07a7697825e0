"""The same flows (train-dev, release with approval, rollback) end to end on the azure backend.

The backend is selected by name (MLOPS_BACKEND=azure) and every Azure call goes through the
real azure-ai-ml SDK to the fake REST API (tests/azure/conftest.py). Two things the fake's
service does for real here:

- compute: before a training pipeline job is submitted, its components (the same YAML and
  scripts) run with the local component runner, and what they write becomes the job's outputs
  in the fake's storage, which the backend downloads through the SDK as from Azure;
- serving: a deployment provisions by running what it was sent (the code snapshot, the
  registered inference environment, the model files) in Azure ML's inference server; endpoints
  answer on a loopback front door with an Entra token, route by traffic and header, and count
  every answer for the Azure Monitor metrics the rollout's health checks read. The endpoint
  identity must hold the registry role to pull a promoted model, as infra/ grants it.

The scenarios share one fake and build on each other like a team's week (each release trains,
so ~30 s a scenario on 2 cores): train-dev (whose components and environments a person approves
for the shared registry, which the releases' test retraining and deployments then run), an
approved first release, a rejected one, one whose
new deployment falls over at 50% of the traffic, a release that goes green then a rollback, and
a release whose prod endpoint identity has lost its registry role.
"""

from __future__ import annotations

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
from audit import read_audit_log
from backends.azure.pipelines import PipelineRunner
from backends.local.workspace import LocalWorkspace
from backends.pipeline_assets import working_tree_assets
from backends.serving_package import deployment_template, environment_version
from flows.release import release
from flows.rollback import rollback
from flows.train_dev import train_dev
from records import aliases, lineage_tags
from records.serving import EndpointInfo
from settings import config_dir, load_release_settings, load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import split_body
from tests.azure.conftest import AzureUnderTest
from tests.integration.release_helpers import (
    Approver,
    assert_refused_then_rejected,
    assert_test_endpoint_deleted,
    decide_when_paused,
    release_test_endpoint,
)

MODEL = load_training_settings().model_name
SETTINGS = load_release_settings()
REGISTRY_USER = "1823dd4f-9b8c-4ab6-ab4e-7397a3684615"


@pytest.fixture(scope="module")
def azure_flows(
    fake_azure_for_module: AzureUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AzureUnderTest]:
    """The azure backend selected by name, the fake's compute and serving switched on; one
    fake for the module, whose tests build on each other as a team's releases do."""
    fake_azure = fake_azure_for_module
    tmp_path = tmp_path_factory.mktemp("azure-flows")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLOPS_BACKEND", "azure")
        # 8k-row samples: the champion comparison's noise is bigger than the default margin
        config = tmp_path / "config"
        shutil.copytree(config_dir(), config)
        training = yaml.safe_load((config / "training.yaml").read_text())
        training["gate"]["champion_min_delta"] = -0.05
        (config / "training.yaml").write_text(yaml.safe_dump(training))
        release_settings = yaml.safe_load((config / "release.yaml").read_text())
        release_settings["approval"]["poll_interval_seconds"] = 1  # a decision seen in ~1 s
        # bakes of seconds: Azure Monitor's grain is a second here (the fake honours the
        # interval asked for; Azure's smallest is PT1M) and the fake publishes it 1 s late
        release_settings["rollout"]["timing"] = {
            name: {"local": value, "azure": value}
            for name, value in {
                "bake_seconds": 3,
                "max_bake_seconds": 12,
                "metrics_deadline_seconds": 30,
                "poll_seconds": 0.3,
                "canaries_per_second": 60,  # ~6/s reach green at 10%: 20 in ~4 s
                "endpoint_wait_seconds": 300,
            }.items()
        }
        monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT1S")
        (config / "release.yaml").write_text(yaml.safe_dump(release_settings))
        monkeypatch.setenv("MLOPS_CONFIG_DIR", str(config))
        fake = fake_azure.fake
        fake.metrics_ingestion_delay_seconds = 1.0
        fake.serve_scoring()
        compute = tmp_path / "compute"
        submit = PipelineRunner.run

        def run_on_fake_compute(
            runner: PipelineRunner,
            pipeline: Path,
            inputs: dict[str, Any],
            run_name: str | None = None,
            **references: Any,
        ) -> Any:
            """Run the components as the job will, then let the SDK submit, poll and
            download: the fake's job "writes" what they produced. The working tree's scripts
            stand in for the registered versions a job names (`references`): the same bytes
            while the working tree is unchanged."""
            local_inputs = dict(inputs)
            local_inputs["raw_data"] = _download_data(
                fake_azure, runner, inputs["raw_data"], compute
            )
            ran = LocalWorkspace(runner.spec, compute).run_pipeline(
                pipeline, local_inputs, run_name
            )
            experiment = yaml.safe_load(Path(pipeline).read_text())["experiment_name"]
            fake.job_outputs[experiment] = {k: Path(v) for k, v in ran.outputs.items() if "." in k}
            return submit(runner, pipeline, inputs, run_name, **references)

        monkeypatch.setattr(PipelineRunner, "run", run_on_fake_compute)
        try:
            yield fake_azure
        finally:
            fake.stop_scoring()


@pytest.fixture(scope="module")
def data(azure_flows: AzureUnderTest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("azure-flows-data")
    paths = {}
    for name, seed in (
        ("dev", 20),
        ("first", 21),
        ("second", 22),
        ("third", 23),
        ("fourth", 24),
        ("fifth", 25),
    ):
        paths[name] = str(folder / f"{name}.csv")
        generate_readmissions(8_000, seed=seed).to_csv(paths[name], index=False)
    return paths


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


def prod() -> EndpointInfo:
    endpoint = backends.endpoints("prod").get_endpoint(SETTINGS.prod_endpoint)
    assert endpoint is not None
    return endpoint


def shared_versions() -> list[str]:
    return [v.version for v in backends.shared_registry().list_model_versions(MODEL)]


def champion() -> str:
    found = backends.shared_registry().get_model(MODEL, aliases.CHAMPION)
    assert found is not None
    return found.version


# --- the scenarios, in order: each starts from where the one before left prod -------------------


def test_train_dev_registers_the_dev_champion_through_a_small_code_snapshot(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    approver = decide_when_paused("train-dev", True, "ivan", "components reviewed")
    trained = train_dev(data_path=data["dev"], return_state=True)
    approver.join(timeout=60)

    assert trained.type == StateType.COMPLETED, trained.message
    dev_model = trained.result()
    dev = backends.workspace("dev")
    assert [v.version for v in dev.list_model_versions(MODEL)] == [dev_model.version]
    assert dev.get_model(MODEL, aliases.CHAMPION).version == dev_model.version
    # the components' code snapshot is their scripts plus data_checks (additional_includes),
    # not the repository with its venvs: what every submission hashes and uploads
    snapshots = [
        blobs
        for (_, container), blobs in azure_flows.fake.blobs.items()
        if re.fullmatch(r"[0-9a-f-]{36}-[0-9a-f]{24}", container)
    ]
    uploaded = {name.split("/", 1)[1] for blobs in snapshots for name in blobs}
    assert uploaded and all(
        re.fullmatch(r"\w+\.py|data_checks/\w+\.py", name) for name in uploaded
    ), sorted(uploaded)
    assert {"train_model.py", "data_checks/readmission_schema.py"} <= uploaded
    # dev ran the components it registered, and the approval promoted them to the registry
    assets = working_tree_assets()
    dev_jobs = submitted_component_ids(azure_flows, "dev")
    assert dev_jobs and all(
        re.search(r"/workspaces/[^/]+/components/\w+/versions/[0-9a-f]{16}$", c) for c in dev_jobs
    ), dev_jobs
    held = backends.shared_registry().pipeline_asset_references(assets)
    assert held.store == azure_flows.topology.shared_registry.name
    promoted = [r for r in read_audit_log() if r.action == "assets-promoted"]
    assert [r.actor for r in promoted] == ["ivan"]


def test_approved_release_is_promoted_and_serves_in_prod(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    fake = azure_flows.fake

    state = run_release(data["first"], Approver(approved=True, name_="alice"))

    assert state.type == StateType.COMPLETED, state.message
    promoted = state.result()
    registry = backends.shared_registry()
    assert shared_versions() == ["1"]
    assert champion() == promoted.version == "1"
    assert registry.get_model(MODEL, aliases.CHAMPION).tags[lineage_tags.APPROVED_BY] == "alice"
    assert prod_endpoint(azure_flows)["traffic"] == {"blue": 100}
    assert_test_endpoint_deleted(state)
    response = score_prod()
    assert response.status_code == 200 and response.json()["model"]["version"] == "1"
    actions = [(r.action, r.actor) for r in read_audit_log()]
    assert ("approved", "alice") in actions and ("promoted", "alice") in actions
    assert not fake.unhandled
    # what was deployed, in test and in prod, is the scoring script in its environment
    blue = prod_deployment(azure_flows, "blue")
    assert_runs_the_scoring_script(blue, promoted.tags[lineage_tags.TEST_THRESHOLD])
    assert blue["model"] == (
        f"azureml://registries/{azure_flows.topology.shared_registry.name}/models/{MODEL}"
        "/versions/1"
    )
    test_puts = deployment_puts(fake, release_test_endpoint(state))
    assert test_puts, "the release deployed to the test endpoint"
    for sent in [*test_puts, *deployment_puts(fake, SETTINGS.prod_endpoint)]:
        assert_runs_the_scoring_script(sent, promoted.tags[lineage_tags.TEST_THRESHOLD])
    # both endpoints run under the user-assigned identity the topology names
    assert endpoint_identities(fake, release_test_endpoint(state)) == [
        azure_flows.topology.environment("test").endpoint_identity
    ]
    assert endpoint_identities(fake, SETTINGS.prod_endpoint) == [
        azure_flows.topology.environment("prod").endpoint_identity
    ]
    # the test retraining ran the shared registry's component versions, as they are, and
    # both endpoints run in the registry's inference environment
    registry = azure_flows.topology.shared_registry.name
    test_jobs = submitted_component_ids(azure_flows, "test")
    assert test_jobs and all(
        c.startswith(f"azureml://registries/{registry}/components/") for c in test_jobs
    ), test_jobs
    for sent in [*test_puts, *deployment_puts(fake, SETTINGS.prod_endpoint)]:
        assert sent["environmentId"].startswith(f"azureml://registries/{registry}/environments/")
    identity = prod_endpoint_resource(azure_flows)["identity"]
    assert identity["type"] == "UserAssigned"
    assert list(identity["userAssignedIdentities"]) == [
        azure_flows.topology.environment("prod").endpoint_identity
    ]


def test_rejected_approval_promotes_nothing_and_leaves_prod_unchanged(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    before = prod()
    approver = Approver(
        approved=False, name_="bob", reason="AUC gain too small", try_invalid_first=True
    )

    state = run_release(data["second"], approver)

    assert_refused_then_rejected(approver, state, rejected_by="bob")
    assert shared_versions() == ["1"] and champion() == "1"
    after = prod()
    assert dict(after.traffic) == dict(before.traffic) == {"blue": 100}
    assert after.deployments == before.deployments  # nothing deployed to prod
    assert_test_endpoint_deleted(state)
    assert score_prod().json()["model"]["version"] == "1"
    assert ("rejected", "bob") in [(r.action, r.actor) for r in read_audit_log()]


def test_failing_health_check_mid_shift_returns_traffic_to_the_old_deployment(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    fake = azure_flows.fake
    fake.crash_when_live(SETTINGS.prod_endpoint, "green", share=50)
    shifts_before = len(_traffic_puts(fake))

    try:
        state = run_release(data["third"], Approver(approved=True, name_="erin"))
    finally:
        fake.crashes.clear()  # the next release's green is healthy

    assert state.type == StateType.FAILED
    message = str(state.result(raise_on_failure=False))
    assert "green failed step 3 (50% live): error rate" in message, message
    # each step was judged on Azure Monitor metrics of what the fake served
    metrics = [r for r in fake.requests if r.path.endswith("/Microsoft.Insights/metrics")]
    assert metrics and all(r.status == 200 for r in metrics)
    assert "traffic is back on blue" in message
    # mirror -> 10% -> 50% (failed) -> back to blue; the candidate was promoted (approved)
    # but never crowned: prod keeps serving the old model
    shifts = _traffic_puts(fake)[shifts_before:]
    assert [t.get("green", 0) for t, _ in shifts] == [0, 10, 50, 0]
    assert shifts[0][1].get("green") and shifts[-1] == ({"blue": 100}, {})
    assert shared_versions() == ["1", "2"] and champion() == "1"
    endpoint = prod()
    assert endpoint.traffic["blue"] == 100 and not endpoint.traffic.get("green")
    assert endpoint.serving() == "blue" and not endpoint.mirror_traffic.get("green")
    assert {d.name: d.model_version for d in endpoint.deployments} == {"blue": "1", "green": "2"}
    assert score_prod().json()["model"]["version"] == "1"
    rollbacks = [r for r in read_audit_log() if r.action == "rollback"]
    assert rollbacks and rollbacks[-1].reason.startswith("step 3 (50% live) failed")


def test_next_release_goes_green_and_rollback_returns_blue(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    fake = azure_flows.fake

    state = run_release(data["fourth"], Approver(approved=True, name_="carol"))

    assert state.type == StateType.COMPLETED, state.message
    assert shared_versions() == ["1", "2", "3"] and champion() == "3"
    endpoint = prod()
    assert dict(endpoint.traffic) == {"blue": 0, "green": 100}
    assert {d.name: d.model_version for d in endpoint.deployments} == {"blue": "1", "green": "3"}
    assert score_prod().json()["model"]["version"] == "3"

    back = rollback(reason="complaints from the ward", actor="dave", return_state=True)

    assert back.type == StateType.COMPLETED, back.message
    assert prod_endpoint(azure_flows)["traffic"]["blue"] == 100
    assert champion() == "1"
    assert score_prod().json()["model"]["version"] == "1"
    actions = [(r.action, r.actor) for r in read_audit_log()]
    assert ("approved", "carol") in actions and ("rollback", "dave") in actions
    assert {"deployed", "traffic", "champion"} <= {a for a, _ in actions}
    assert not fake.unhandled


def test_a_release_whose_endpoint_identity_lost_its_registry_role_fails_at_deploy(
    azure_flows: AzureUnderTest, data: dict[str, str]
) -> None:
    fake = azure_flows.fake
    before = prod()
    identity = azure_flows.topology.environment("prod").endpoint_identity
    assert identity is not None
    principal = fake.arm_resources[identity.lower()]["properties"]["principalId"]
    revoked = fake.revoke(principal, REGISTRY_USER)
    assert revoked, "infra grants the prod endpoint identity AzureML Registry User"

    try:
        state = run_release(data["fifth"], Approver(approved=True, name_="frank"))
    finally:
        fake.restore(revoked)

    assert state.type == StateType.FAILED
    message = str(state.result(raise_on_failure=False))
    assert "AzureML Registry User" in message and identity in message, message
    after = prod()
    assert dict(after.traffic) == dict(before.traffic) and after.serving() == before.serving()
    assert not after.mirror_traffic.get("green")
    assert score_prod().json()["model"]["version"] == "1"  # rollback's blue still serves
    assert champion() == "1"


def submitted_component_ids(azure: AzureUnderTest, environment: str) -> list[str]:
    """The componentId of every step of every pipeline job submitted to `environment`."""
    workspace = azure.topology.environment(environment).workspace
    return [
        step["componentId"]
        for r in azure.fake.requests
        if r.method == "PUT" and f"/workspaces/{workspace}/jobs/" in r.path
        for step in r.json()["properties"]["jobs"].values()
    ]


def prod_endpoint_resource(azure: AzureUnderTest) -> dict:
    ws = azure.fake.workspace(azure.topology.environment("prod").workspace)
    return ws.endpoints[SETTINGS.prod_endpoint]


def prod_deployment(azure: AzureUnderTest, colour: str) -> dict:
    ws = azure.fake.workspace(azure.topology.environment("prod").workspace)
    return ws.deployments[SETTINGS.prod_endpoint][colour]["properties"]


def deployment_puts(fake: Any, endpoint: str) -> list[dict]:
    """The properties of every deployment request sent to `endpoint`."""
    return [
        r.json()["properties"]
        for r in fake.requests
        if r.method == "PUT" and f"/onlineEndpoints/{endpoint}/deployments/" in r.path
    ]


def endpoint_identities(fake: Any, endpoint: str) -> list[str]:
    """The user-assigned identities `endpoint` was created with (first PUT)."""
    created = next(
        r.json()
        for r in fake.requests
        if r.method == "PUT" and r.path.endswith(f"/onlineEndpoints/{endpoint}")
    )
    assert created["identity"]["type"] == "UserAssigned", created["identity"]
    return list(created["identity"]["userAssignedIdentities"])


def assert_runs_the_scoring_script(properties: dict, threshold_tag: str) -> None:
    """A code deployment of the serving package, never a no-code (model-only) one."""
    template = deployment_template()
    assert properties["codeConfiguration"]["scoringScript"] == "score.py"
    assert re.search(r"/codes/[^/]+/versions/[^/]+$", properties["codeConfiguration"]["codeId"])
    assert properties["environmentId"].endswith(
        f"/environments/readmission-inference/versions/{environment_version()}"
    )
    variables = properties["environmentVariables"]
    assert variables["MODEL_THRESHOLD"] == repr(float(threshold_tag))
    assert variables["WORKER_COUNT"] == template.environment_variables["WORKER_COUNT"]
    assert properties["livenessProbe"]["initialDelay"] == (
        f"PT{template.liveness_probe.initial_delay}S"
    )
    assert properties["readinessProbe"]["period"] == f"PT{template.readiness_probe.period}S"


def _traffic_puts(fake: Any) -> list[tuple[dict, dict]]:
    """(traffic, mirror traffic) of every update of the prod endpoint, in order."""
    return [
        (r.json()["properties"]["traffic"], r.json()["properties"].get("mirrorTraffic") or {})
        for r in fake.requests
        if r.method == "PUT" and r.path.endswith(f"/onlineEndpoints/{SETTINGS.prod_endpoint}")
    ]
