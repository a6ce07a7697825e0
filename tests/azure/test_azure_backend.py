"""What only the azure backend has to get right: how a pipeline YAML becomes a job request,
where deployments take their model from, what a deployment sends (the scoring script, its
environment, the model's settings), under which identity endpoints run, aliases after a crash,
endpoint calls through Azure.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from azure.ai.ml.entities import ManagedOnlineEndpoint

import backends.azure
from backends.azure import aliases
from backends.azure.errors import AzureConflict
from backends.azure.registry import AzureSharedRegistry
from backends.pipeline_assets import working_tree_assets
from backends.serving_package import deployment_template, environment_version
from records import lineage_tags
from records.aliases import CHAMPION
from records.serving import DeploymentFailed, DeploymentHealth
from records.workspace import ModelVersion
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import split_body
from tests.azure.conftest import AzureUnderTest
from tests.azure.fake_arm import SeenRequest
from tests.endpoints.models import save_trained_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "readmission"
REGISTRY_USER = "1823dd4f-9b8c-4ab6-ab4e-7397a3684615"
_TRAINING = load_training_settings()
# train.yml's required inputs (config/training.yaml is their one place)
GATE = {
    **_TRAINING.pipeline.model_dump(),
    **_TRAINING.gate.model_dump(),
    **_TRAINING.fairness.model_dump(),
}


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for part in ("components", "data_checks"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".amlignore", root / ".amlignore")
    return root / "components" / "pipelines"


def workspace(azure: AzureUnderTest, environment: str = "test") -> backends.azure.AzureWorkspace:
    return backends.azure.open_workspace(azure.topology.environment(environment), azure.topology)


def register(ws: backends.azure.AzureWorkspace, model_dir: Path, run: str) -> ModelVersion:
    return ws.register_model(
        MODEL, str(model_dir), f"train-{run}", {lineage_tags.PIPELINE_RUN_ID: run}, ""
    )


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model folder, for deployments whose container runs (the fake's serving on)."""
    return save_trained_model(tmp_path_factory.mktemp("azure-backend") / "model", rows=600)


def folder(path: Path, name: str, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    return path


def training_outputs(azure: AzureUnderTest, out: Path) -> None:
    """What the training job's outputs hold: a placeholder file each."""
    azure.fake.job_outputs["readmission-training"] = {
        name: folder(out / name.replace(".", "-"), "f.txt", name)
        for name in ("prep.train_data", "prep.test_data", "train.model", "evaluate.evaluation")
    }


def raw_csv(tmp_path: Path) -> Path:
    """A one-row raw data file."""
    data = tmp_path / "raw.csv"
    data.write_text("age,readmitted_30d\n70,1\n")
    return data


# --- pipeline jobs ------------------------------------------------------------------------------


def test_the_training_pipeline_runs_as_one_job_and_every_output_comes_home(
    fake_azure: AzureUnderTest, pipelines: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    fake_azure.fake.job_outputs["readmission-training"] = {
        "prep.train_data": folder(out / "train", "data.parquet", "train rows"),
        "prep.test_data": folder(out / "test", "data.parquet", "test rows"),
        "train.model": folder(out / "model", "MLmodel", "flavors: {}"),
        "evaluate.evaluation": folder(out / "evaluation", "gate.json", '{"passed": true}'),
    }
    data = raw_csv(tmp_path)
    ws = workspace(fake_azure, "dev")

    run = ws.run_pipeline(
        pipelines / "train.yml",
        {
            "raw_data": str(data),
            **GATE,
            "seed": 7,
            "min_auc": 0.75,
            "champion_model": str(model_dir),
        },
        run_name="train on readmissions:1",
    )

    assert run.status == "Completed" and run.display_name == "train on readmissions:1"
    assert [s.name for s in run.steps] == ["prep", "train", "evaluate"]
    assert all(s.status == "Completed" and s.seconds > 0 for s in run.steps)
    assert (Path(run.outputs["evaluation"]) / "gate.json").read_text() == '{"passed": true}'
    assert (Path(run.test_data) / "data.parquet").read_text() == "test rows"
    assert run.outputs["train.model"] == run.outputs["model"]
    assert (Path(run.outputs["model"]) / "MLmodel").is_file()
    job = submitted_job(fake_azure)
    assert job["settings"]["default_compute"].endswith("/computes/cpu-cluster")
    assert job["inputs"]["seed"]["value"] == "7" and job["inputs"]["min_auc"]["value"] == "0.75"
    assert job["inputs"]["raw_data"]["jobInputType"] == "uri_file"
    champion = job["jobs"]["evaluate"]["inputs"]["champion_model"]
    assert champion["job_input_type"] == "mlflow_model" and champion["uri"].startswith("azureml://")


def test_without_a_champion_no_step_points_at_a_missing_input(
    fake_azure: AzureUnderTest, pipelines: Path, tmp_path: Path
) -> None:
    training_outputs(fake_azure, tmp_path / "outputs")
    data = raw_csv(tmp_path)

    workspace(fake_azure, "dev").run_pipeline(
        pipelines / "train.yml", {"raw_data": str(data), **GATE}
    )

    evaluate = submitted_job(fake_azure)["jobs"]["evaluate"]["inputs"]
    assert "champion_model" not in evaluate
    assert "${{parent.inputs.champion_model}}" not in str(submitted_job(fake_azure))


def test_an_input_the_pipeline_does_not_take_is_refused_before_anything_is_sent(
    fake_azure: AzureUnderTest, pipelines: Path
) -> None:
    from records.workspace import PipelineFailed

    with pytest.raises(PipelineFailed, match="no inputs named \\['learning_rat'\\]"):
        workspace(fake_azure, "dev").run_pipeline(pipelines / "train.yml", {"learning_rat": 0.1})
    assert not [r for r in fake_azure.fake.requests if "/jobs/" in r.path]


def test_an_ad_hoc_run_pins_the_working_trees_environment_version(
    fake_azure: AzureUnderTest, pipelines: Path, tmp_path: Path
) -> None:
    """The component YAMLs name `azureml:readmission-train@latest`; a run from the working
    tree runs them as anonymous components in the working tree's own environment version
    (registered once by content), never whatever the workspace's latest is."""
    fake_azure.fake.job_outputs["readmission-data-validation"] = {
        "validate.report": folder(tmp_path / "report", "report.json", "{}")
    }
    data = raw_csv(tmp_path)
    train = working_tree_assets().environment("readmission-train")
    ws = workspace(fake_azure, "dev")

    runs = [ws.run_pipeline(pipelines / "validate_data.yml", {"raw_data": str(data)})]
    runs.append(
        workspace(fake_azure, "dev").run_pipeline(
            pipelines / "validate_data.yml", {"raw_data": str(data)}
        )
    )

    assert all(r.status == "Completed" and dict(r.components) == {} for r in runs)
    held = fake_azure.fake.workspace(ws.name).environments
    assert list(held["readmission-train"]) == [train.version]
    anonymous = fake_azure.fake.workspace(ws.name).components["azureml_anonymous"]
    environments = {v["properties"]["componentSpec"]["environment"] for v in anonymous.values()}
    assert environments == {
        f"azureml:{ws.arm_id}/environments/readmission-train/versions/{train.version}"
    }
    env_puts = [
        r for r in fake_azure.fake.requests if r.method == "PUT" and "/environments/" in r.path
    ]
    assert len(env_puts) == 1


def test_a_run_from_registered_workspace_components_submits_their_ids(
    fake_azure: AzureUnderTest, pipelines: Path, tmp_path: Path
) -> None:
    training_outputs(fake_azure, tmp_path / "outputs")
    data = raw_csv(tmp_path)
    ws = workspace(fake_azure, "dev")
    assets = working_tree_assets()
    references = ws.register_pipeline_assets(assets)

    run = ws.run_pipeline(
        pipelines / "train.yml", {"raw_data": str(data), **GATE}, assets=references
    )

    by_name = {c.name: c for c in assets.components}
    expected = {
        "prep": "prep_readmission_data",
        "train": "train_readmission_model",
        "evaluate": "evaluate_readmission_model",
    }
    assert dict(run.components) == {s: references.components[n] for s, n in expected.items()}
    sent = {s: j["componentId"] for s, j in submitted_job(fake_azure)["jobs"].items()}
    assert sent == {  # the SDK turns azureml:<name>:<version> into the workspace's ARM id
        s: f"{ws.arm_id}/components/{n}/versions/{by_name[n].version}" for s, n in expected.items()
    }
    stored = fake_azure.fake.workspace(ws.name).components["train_readmission_model"]
    train_env = assets.environment("readmission-train")
    assert (
        stored[by_name["train_readmission_model"].version]["properties"]["componentSpec"][
            "environment"
        ]
        == f"azureml:{ws.arm_id}/environments/readmission-train/versions/{train_env.version}"
    )


def test_a_registry_create_refused_as_already_existing_is_accepted_once_it_is_found(
    fake_azure: AzureUnderTest,
) -> None:
    """A create whose reply was lost, retried and refused with 409: the version is there (the
    first attempt made it), so publication goes on; a 409 for a version that cannot be found
    is an error."""
    assets = working_tree_assets()
    backends.azure.open_shared_registry(fake_azure.topology).publish_pipeline_assets(assets)
    train = next(c for c in assets.components if c.name == "train_readmission_model")
    path = f"/components/{train.name}/versions/{train.version}$"
    fake = fake_azure.fake
    fake.inject(404, "UserError", "Could not find asset", path_pattern=path, method="GET")
    fake.inject(409, "UserError", "already exists", path_pattern=path, method="PUT")

    again = backends.azure.open_shared_registry(fake_azure.topology).publish_pipeline_assets(assets)

    assert again.components[train.name].endswith(f"/{train.name}/versions/{train.version}")
    assert list(fake.registries[again.store.lower()].components[train.name]) == [train.version]
    registry = fake.registries[again.store.lower()]
    del registry.components[train.name]  # gone after all: the 409 was for something else
    fake.inject(409, "UserError", "already exists", path_pattern=path, method="PUT")
    with pytest.raises(AzureConflict, match=train.name):
        backends.azure.open_shared_registry(fake_azure.topology).publish_pipeline_assets(assets)


def submitted_job(azure: AzureUnderTest) -> dict:
    put = [r for r in azure.fake.requests if r.method == "PUT" and "/jobs/" in r.path]
    return put[-1].json()["properties"]


def test_the_component_snapshot_leaves_local_venvs_out() -> None:
    """A component whose `code:` is the repository root would upload it minus .amlignore; a
    venv in it means hundreds of megabytes per pipeline submission (measured here: 776 MB, 35k
    files). The components snapshot ./src now, but .amlignore still guards the root."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(str(REPO))
    uploaded = [
        p.name
        for p in REPO.iterdir()
        if p.is_dir()
        and p.name.startswith(".venv")
        and not ignore.is_file_excluded(str(p / "pyvenv.cfg"))
    ]
    assert not uploaded, f".amlignore does not exclude {uploaded}: add `.venv*/` to it"


# --- deployments --------------------------------------------------------------------------------


def promoted_from_test(
    fake_azure: AzureUnderTest, model_dir: Path
) -> tuple[AzureSharedRegistry, ModelVersion]:
    """The shared registry and a model registered in test and promoted into it."""
    test_ws = workspace(fake_azure, "test")
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    promoted = registry.promote(
        register(test_ws, model_dir, "run-a"),
        model_dir,
        {lineage_tags.SOURCE_WORKSPACE: test_ws.name},
        "ok",
    )
    return registry, promoted


def test_prod_deploys_the_shared_registrys_copy(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    registry, promoted = promoted_from_test(fake_azure, model_dir)
    endpoints = backends.azure.open_endpoints(workspace(fake_azure, "prod"))
    endpoints.create_or_update_endpoint("readm")

    blue = endpoints.create_or_update_deployment("readm", "blue", promoted, model_dir)

    put = [r for r in fake_azure.fake.requests if r.method == "PUT" and "/deployments/" in r.path]
    model = put[-1].json()["properties"]["model"]
    assert model == f"azureml://registries/{registry.name}/models/{MODEL}/versions/1"
    assert (blue.model_name, blue.model_version) == (MODEL, "1")


def test_a_deployment_runs_in_the_registrys_inference_environment_when_given(
    fake_azure: AzureUnderTest, trained_model: Path
) -> None:
    fake_azure.fake.serve_scoring()
    registry, promoted = promoted_from_test(fake_azure, trained_model)
    references = registry.publish_pipeline_assets(working_tree_assets())
    prod = workspace(fake_azure, "prod")
    endpoints = backends.azure.open_endpoints(prod)
    endpoints.create_or_update_endpoint("readm")

    blue = endpoints.create_or_update_deployment(
        "readm", "blue", promoted, trained_model, environment=references.inference_environment
    )

    assert blue.state == "Succeeded"  # the container started from the registry's conda file
    puts = [r for r in fake_azure.fake.requests if r.method == "PUT" and "/deployments/" in r.path]
    assert puts[-1].json()["properties"]["environmentId"] == references.inference_environment
    assert references.inference_environment.startswith(f"azureml://registries/{registry.name}/")
    assert not fake_azure.fake.workspace(prod.name).environments  # nothing registered in prod


def test_a_model_from_another_workspace_is_sent_through_the_registry(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    dev_model = register(workspace(fake_azure, "dev"), model_dir, "run-a")
    endpoints = backends.azure.open_endpoints(workspace(fake_azure, "prod"))
    endpoints.create_or_update_endpoint("readm")

    with pytest.raises(DeploymentFailed, match="promote it to the shared registry"):
        endpoints.create_or_update_deployment("readm", "blue", dev_model, model_dir)


def test_a_deployment_sends_the_scoring_script_its_environment_and_the_models_threshold(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    model = ws.register_model(
        MODEL,
        str(model_dir),
        "train-a",
        {lineage_tags.PIPELINE_RUN_ID: "a", lineage_tags.TEST_THRESHOLD: "0.27"},
        "",
    )

    endpoints.create_or_update_deployment("readm", "blue", model, model_dir)
    endpoints.create_or_update_deployment("readm", "green", model, model_dir)

    puts = [r for r in fake_azure.fake.requests if r.method == "PUT" and "/deployments/" in r.path]
    sent = puts[-1].json()["properties"]
    template = deployment_template()
    assert sent["codeConfiguration"]["scoringScript"] == "score.py"
    assert "/codes/" in sent["codeConfiguration"]["codeId"]
    assert sent["environmentId"].endswith(
        f"/environments/readmission-inference/versions/{environment_version()}"
    )
    assert sent["model"].endswith(f"/models/{MODEL}/versions/1")
    assert sent["environmentVariables"] == {
        **template.environment_variables,
        "MODEL_NAME": MODEL,
        "MODEL_VERSION": "1",
        "MODEL_THRESHOLD": "0.27",
    }
    assert sent["livenessProbe"]["initialDelay"] == f"PT{template.liveness_probe.initial_delay}S"
    assert sent["readinessProbe"]["failureThreshold"] == template.readiness_probe.failure_threshold
    assert sent["requestSettings"]["maxConcurrentRequestsPerInstance"] == (
        template.request_settings.max_concurrent_requests_per_instance
    )
    assert set(sent["dataCollector"]["collections"]) == {"model_inputs", "model_outputs"}
    # the environment is registered once, the code snapshot uploaded once (found by hash)
    env_puts = [
        r for r in fake_azure.fake.requests if r.method == "PUT" and "/environments/" in r.path
    ]
    code_puts = [r for r in fake_azure.fake.requests if r.method == "PUT" and "/codes/" in r.path]
    assert len(env_puts) == 1 and len(code_puts) == 1
    uploaded = {
        name.split("/", 1)[1]
        for (_, container), blobs in fake_azure.fake.blobs.items()
        if re.fullmatch(r"[0-9a-f-]{36}-[0-9a-f]{24}", container)  # pending code uploads
        for name in blobs
    }
    assert {"score.py", "model_scoring.py", "data_checks/readmission_schema.py"} <= uploaded


def test_endpoints_run_under_the_identity_the_topology_names(fake_azure: AzureUnderTest) -> None:
    test, dev = workspace(fake_azure, "test"), workspace(fake_azure, "dev")

    backends.azure.open_endpoints(test).create_or_update_endpoint("readm")
    backends.azure.open_endpoints(dev).create_or_update_endpoint("readm-dev")

    wanted = fake_azure.topology.environment("test").endpoint_identity
    assert wanted is not None
    identity = fake_azure.fake.workspace(test.name).endpoints["readm"]["identity"]
    assert identity["type"] == "UserAssigned"
    assert list(identity["userAssignedIdentities"]) == [wanted]
    uai = fake_azure.fake.arm_resources[wanted.lower()]["properties"]
    assert identity["userAssignedIdentities"][wanted]["principalId"] == uai["principalId"]
    # dev names none: a system-assigned identity, enough for dev's own models only
    assert fake_azure.fake.workspace(dev.name).endpoints["readm-dev"]["identity"]["type"] == (
        "SystemAssigned"
    )


def test_an_endpoint_under_another_identity_is_refused_with_what_to_do(
    fake_azure: AzureUnderTest,
) -> None:
    test = workspace(fake_azure, "test")
    test.client.online_endpoints.begin_create_or_update(  # made before identities were set
        ManagedOnlineEndpoint(name="readm", auth_mode="aad_token")
    ).result()
    endpoints = backends.azure.open_endpoints(test)

    with pytest.raises(AzureConflict, match="does not change an endpoint's identity") as raised:
        endpoints.create_or_update_endpoint("readm")

    assert "az ml online-endpoint delete -n readm" in str(raised.value)
    assert fake_azure.topology.environment("test").endpoint_identity in str(raised.value)


def test_a_registry_model_does_not_provision_without_the_registry_role(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    registry, promoted = promoted_from_test(fake_azure, model_dir)
    prod = backends.azure.open_endpoints(workspace(fake_azure, "prod"))
    prod.create_or_update_endpoint("readm")
    identity = fake_azure.topology.environment("prod").endpoint_identity
    principal = fake_azure.fake.arm_resources[identity.lower()]["properties"]["principalId"]
    revoked = fake_azure.fake.revoke(principal, REGISTRY_USER)
    assert revoked, "main.bicep grants the prod endpoint identity AzureML Registry User"

    with pytest.raises(DeploymentFailed, match="AzureML Registry User") as raised:
        prod.create_or_update_deployment("readm", "blue", promoted, model_dir)

    assert identity in str(raised.value) and registry.name in str(raised.value)
    fake_azure.fake.restore(revoked)
    assert prod.create_or_update_deployment("readm", "blue", promoted, model_dir).state == (
        "Succeeded"
    )
    # a system-assigned identity (dev's) holds no registry role at all
    dev = backends.azure.open_endpoints(workspace(fake_azure, "dev"))
    dev.create_or_update_endpoint("readm-dev")
    with pytest.raises(DeploymentFailed, match="system-assigned identity"):
        dev.create_or_update_deployment("readm-dev", "blue", promoted, model_dir)


def test_endpoints_use_entra_tokens_and_answer_with_the_scoring_scripts_own_response(
    fake_azure: AzureUnderTest, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT1S")
    fake_azure.fake.serve_scoring()
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    endpoints.create_or_update_deployment(
        "readm", "blue", register(ws, trained_model, "a"), trained_model
    )
    info = endpoints.set_traffic("readm", {"blue": 100}, None)
    rows = generate_readmissions(3, seed=2).drop(columns=["readmitted_30d"])
    start = datetime.now(UTC)

    through_sdk = endpoints.invoke("readm", split_body(rows))
    key = endpoints.get_key("readm")
    answer = httpx.post(
        info.scoring_uri, json=split_body(rows), headers={"Authorization": f"Bearer {key}"}
    )
    refused = httpx.post(info.scoring_uri, content=b"{", headers={"Authorization": f"Bearer {key}"})
    anonymous = httpx.post(info.scoring_uri, json=split_body(rows))

    assert [p["probability"] for p in through_sdk["predictions"]] == [
        p["probability"] for p in answer.json()["predictions"]
    ]
    assert answer.json()["model"] == {"name": MODEL, "version": "1"}
    # the service's headers (as recorded) around the inference server's answer
    assert answer.headers["azureml-model-deployment"] == "blue"
    assert answer.headers["azureml-model-session"] == "blue"
    assert answer.headers["x-request-id"] and answer.headers["server"] == "azureml-frontdoor"
    assert answer.headers["x-ms-server-version"].startswith("azmlinfsrv/")
    # a refusal of the script reaches the caller as Azure's 424, its body unchanged
    assert refused.status_code == 424
    assert refused.headers["ms-azureml-model-error-statuscode"] == "400"
    assert "JSON" in refused.json()["message"]
    assert anonymous.status_code == 401
    assert "blue" in endpoints.deployment_logs("readm", "blue")  # the container's own log
    created = [
        r for r in fake_azure.fake.requests if r.method == "PUT" and r.path.endswith("/readm")
    ]
    assert created[0].json()["properties"]["authMode"] == "AADToken"
    end = grain_end(fake_azure.fake.served[-1].at)
    sleep_until(end)  # Azure Monitor publishes a grain once it has ended
    blue = endpoints.serving_metrics("readm", start, end).of("blue")  # through the fake
    assert (blue.deployment, blue.requests, blue.errors) == ("blue", 3, 0)  # 401s never arrive
    fake_azure.fake.crash_when_live("readm", "blue", share=100)
    crashed = httpx.post(
        info.scoring_uri, json=split_body(rows), headers={"Authorization": f"Bearer {key}"}
    )
    assert crashed.status_code == 424
    assert crashed.headers["ms-azureml-model-error-statuscode"] == "500"
    end = grain_end(fake_azure.fake.served[-1].at)
    sleep_until(end)
    assert endpoints.serving_metrics("readm", start, end).of("blue").errors == 1  # a model 5xx


# --- serving metrics (Azure Monitor, per time grain) --------------------------------------------


def grain_end(at: float, seconds: int = 1) -> datetime:
    """The end of the metrics grain of `seconds` that the moment `at` (epoch seconds) is in."""
    return datetime.fromtimestamp((math.floor(at / seconds) + 1) * seconds, UTC)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


def serving(
    azure: AzureUnderTest, model: Path, idle: tuple[str, ...] = ()
) -> tuple[backends.azure.AzureEndpoints, str, httpx.Client, dict]:
    """Endpoint `readm` with blue running and live, and the `idle` deployments provisioned
    before the fake's compute was on (no container: the front door answers them 503): its
    endpoints, scoring URI, a client with a token, and a request body."""
    ws = workspace(azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    for colour in idle:
        endpoints.create_or_update_deployment("readm", colour, register(ws, model, colour), model)
    azure.fake.serve_scoring()
    endpoints.create_or_update_deployment("readm", "blue", register(ws, model, "blue"), model)
    info = endpoints.set_traffic("readm", {"blue": 100}, None)
    client = httpx.Client(headers={"Authorization": f"Bearer {endpoints.get_key('readm')}"})
    body = split_body(generate_readmissions(1, seed=5).drop(columns=["readmitted_30d"]))
    return endpoints, info.scoring_uri, client, body


def test_serving_metrics_count_what_each_deployment_served_in_the_window(
    fake_azure: AzureUnderTest, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT1S")
    endpoints, uri, client, body = serving(fake_azure, trained_model, idle=("green",))
    start = datetime.now(UTC)

    with client:
        fine = [client.post(uri, json=body) for _ in range(6)]
        fake_azure.fake.crash_when_live("readm", "blue", share=100)  # 500s from now on
        crashed = [client.post(uri, json=body) for _ in range(2)]
        green = {"azureml-model-deployment": "green"}
        unready = [client.post(uri, json=body, headers=green) for _ in range(3)]
    end = grain_end(fake_azure.fake.served[-1].at)
    sleep_until(end)
    metrics = endpoints.serving_metrics("readm", start, end)

    assert [a.status_code for a in fine + crashed + unready] == [200] * 6 + [424] * 2 + [503] * 3
    assert metrics.coverage == 1.0 and metrics.covered_until == end
    assert sorted(metrics.deployments) == ["blue", "green"]
    blue = metrics.of("blue")
    assert (blue.requests, blue.errors) == (8, 2)  # the container's 5xx, answered 424
    assert (metrics.of("green").requests, metrics.of("green").errors) == (3, 3)  # the service's
    # p95 over the answers that were not errors: within what the fake measured for them
    measured = [s.latency_ms for s in fake_azure.fake.served if s.status == 200]
    assert blue.p95_ms is not None and min(measured) <= blue.p95_ms <= max(measured)
    assert metrics.of("green").p95_ms is None  # no answer that was not an error
    later = endpoints.serving_metrics("readm", end, end + timedelta(seconds=1))
    assert later.deployments == {} and later.covered_until is None and later.coverage == 0.0
    assert later.of("blue") == DeploymentHealth("blue", 0, 0, None)


def test_serving_metrics_cover_a_window_only_once_azure_monitor_has_published_it(
    fake_azure: AzureUnderTest, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT1S")
    endpoints, uri, client, body = serving(fake_azure, trained_model)
    fake_azure.fake.metrics_ingestion_delay_seconds = 1.5
    with client:
        assert client.post(uri, json=body).status_code == 200  # warm, before the window
        start = grain_end(fake_azure.fake.served[-1].at)
        sleep_until(start)
        answers = [client.post(uri, json=body) for _ in range(3)]
    end = grain_end(fake_azure.fake.served[-1].at)

    early = endpoints.serving_metrics("readm", start, end)
    sleep_until(end + timedelta(seconds=1.5))
    late = endpoints.serving_metrics("readm", start, end)

    assert [a.status_code for a in answers] == [200] * 3
    assert early.coverage < 1.0 and early.covered_until is None
    assert early.of("blue").requests == 0
    assert late.coverage == 1.0 and late.covered_until == end
    assert late.of("blue").requests == 3
    assert (early.start, early.end) == (late.start, late.end) == (start, end)


def test_serving_metrics_are_read_in_the_configured_grain_over_whole_grains(
    fake_azure: AzureUnderTest, trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT2S")
    endpoints, uri, client, body = serving(fake_azure, trained_model)
    start = datetime.now(UTC)
    with client:
        answers = [client.post(uri, json=body) for _ in range(2)]
    end = datetime.fromtimestamp(fake_azure.fake.served[-1].at, UTC) + timedelta(milliseconds=1)
    whole = (
        datetime.fromtimestamp(math.floor(start.timestamp() / 2) * 2, UTC),
        datetime.fromtimestamp(math.ceil(end.timestamp() / 2) * 2, UTC),
    )
    sleep_until(whole[1])

    metrics = endpoints.serving_metrics("readm", start, end)

    assert [a.status_code for a in answers] == [200] * 2
    assert (metrics.start, metrics.end) == whole  # widened to whole 2-second grains
    assert metrics.start < start and end < metrics.end
    assert metrics.covered_until == whole[1] and metrics.coverage == 1.0
    assert metrics.of("blue").requests == 2
    asked = [r for r in fake_azure.fake.requests if r.path.endswith("/Microsoft.Insights/metrics")]
    assert asked[-1].query["interval"] == "PT2S"
    assert asked[-1].query["timespan"] == "/".join(
        moment.strftime("%Y-%m-%dT%H:%M:%SZ") for moment in whole
    )
    # the fake refuses what Azure Monitor would: a malformed grain or timespan
    for query in ({"interval": "2 seconds"}, {"timespan": f"{whole[1]}/{whole[0]}"}):
        url = f"https://management.azure.com{asked[-1].path}?{urlencode(asked[-1].query | query)}"
        token = fake_azure.credential.get_token("https://management.azure.com/.default").token
        refused = fake_azure.fake.handle(
            SeenRequest("GET", url, {"Authorization": f"Bearer {token}"}, b"")
        )
        assert refused.status == 400, query
    monkeypatch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "2s")
    with pytest.raises(ValueError, match="PTnS, PTnM or PTnH"):
        endpoints.serving_metrics("readm", start, end)


def test_mirror_traffic_copies_weighted_requests_to_the_mirror_and_its_rows_count_as_mirrored(
    fake_azure: AzureUnderTest, trained_model: Path
) -> None:
    fake_azure.fake.serve_scoring()
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    for colour, run in (("blue", "a"), ("green", "b")):
        endpoints.create_or_update_deployment(
            "readm", colour, register(ws, trained_model, run), trained_model
        )
    info = endpoints.set_traffic("readm", {"blue": 100}, {"green": 50})
    headers = {"Authorization": f"Bearer {endpoints.get_key('readm')}"}
    rows = generate_readmissions(1, seed=4).drop(columns=["readmitted_30d"])
    since = fake_azure.fake.served[-1].at if fake_azure.fake.served else 0.0

    with httpx.Client(headers=headers) as client:
        answers = [client.post(info.scoring_uri, json=split_body(rows)) for _ in range(40)]
        pinned = client.post(
            info.scoring_uri,
            json=split_body(rows),
            headers={"azureml-model-deployment": "blue"},
        )

    assert {a.headers["azureml-model-deployment"] for a in answers} == {"blue"}
    assert pinned.status_code == 200
    fake_azure.fake.wait_for_mirror_copies()  # scored after the callers had their answers
    copies = [s for s in fake_azure.fake.served if s.mirrored and s.at > since]
    assert copies and all(c.deployment == "green" and c.status == 200 for c in copies)
    assert 5 <= len(copies) <= 35, len(copies)  # about half of the 40 weighted requests
    time.sleep(1)  # the collector posts from a worker of its own
    captured = endpoints.read_capture("readm", datetime.now(UTC) - timedelta(hours=1))
    green = captured[captured["deployment"] == "green"]
    assert len(green) and green["mirrored"].all()
    assert not captured[captured["deployment"] == "blue"]["mirrored"].any()


def test_a_script_whose_init_fails_never_provisions_and_says_why(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    fake_azure.fake.serve_scoring()
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")

    with pytest.raises(DeploymentFailed, match="User container has crashed") as raised:
        endpoints.create_or_update_deployment(
            "readm", "blue", register(ws, model_dir, "a"), model_dir
        )

    assert "Traceback" in str(raised.value) or "Error" in str(raised.value)
    assert not fake_azure.fake.containers  # nothing left running


def test_traffic_azure_would_refuse_is_refused_first_in_plain_words(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    endpoints.create_or_update_deployment("readm", "blue", register(ws, model_dir, "a"), model_dir)
    before = len(fake_azure.fake.requests)

    with pytest.raises(Exception, match="must add up to 100"):
        endpoints.set_traffic("readm", {"blue": 60}, None)
    with pytest.raises(Exception, match="no deployments \\['green'\\]"):
        endpoints.set_traffic("readm", {"blue": 100}, {"green": 10})

    assert not [r for r in fake_azure.fake.requests[before:] if r.method == "PUT"]


# --- aliases and promotion after a crash -------------------------------------------------------


def test_an_alias_claimed_twice_by_a_crash_resolves_to_the_newest_claim(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    one, two = register(ws, model_dir, "a"), register(ws, model_dir, "b")
    ws.set_model_alias(MODEL, CHAMPION, one.version)
    # a crash after tagging the new holder and before untagging the old one:
    ws.models.set_tags(MODEL, two.version, {aliases.tag_for(CHAMPION): aliases.claim()})

    assert ws.get_model(MODEL, CHAMPION).version == "2"
    ws.set_model_alias(MODEL, CHAMPION, two.version)  # the next set cleans up
    tagged = [
        m.version for m in ws.models.versions(MODEL) if aliases.tag_for(CHAMPION) in (m.tags or {})
    ]
    assert tagged == ["2"]


def test_a_promotion_interrupted_after_the_copy_adopts_it_instead_of_copying_again(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference

    ws = workspace(fake_azure)
    candidate = register(ws, model_dir, "run-a")
    ws.set_model_alias(MODEL, CHAMPION, candidate.version)
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    registry.client.models.create_or_update(  # the import went through, then the flow died
        WorkspaceAssetReference(name=MODEL, version="1", asset_id=candidate.source)
    )

    promoted = registry.promote(
        candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: ws.name}, "ok"
    )

    assert [v.version for v in registry.list_model_versions(MODEL)] == ["1"]
    assert promoted.tags[lineage_tags.PROMOTED_FROM] == f"{ws.name}:{MODEL}:1"
    assert promoted.aliases == ()  # the workspace's champion claim was not carried over


def test_a_model_from_outside_any_workspace_is_uploaded_to_the_registry(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    outside = ModelVersion(
        MODEL, "7", str(model_dir), None, {lineage_tags.PIPELINE_RUN_ID: "elsewhere"}
    )

    promoted = registry.promote(outside, model_dir, {lineage_tags.SOURCE_WORKSPACE: "laptop"}, "ok")

    assert (
        promoted.version == "1" and promoted.tags[lineage_tags.PROMOTED_FROM] == f"laptop:{MODEL}:7"
    )
    assert (registry.model_path(promoted) / "model.skops").read_bytes() == b"\x00fitted pipeline"
    uploads = [r for r in fake_azure.fake.requests if r.method == "PUT" and "sig=" in r.url]
    assert uploads and all(r.query["sig"] in fake_azure.fake.issued_sas for r in uploads)


# --- wiring -------------------------------------------------------------------------------------


def test_the_topology_selects_the_azure_backend_by_name(
    fake_azure: AzureUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What backends/__init__.py does once `"azure": "backends.azure"` is in BACKENDS."""
    import backends as registry_of_backends

    monkeypatch.setitem(registry_of_backends.BACKENDS, "azure", "backends.azure")
    monkeypatch.setenv("MLOPS_BACKEND", "azure")

    assert registry_of_backends.workspace("dev").name == "mlw-readmission-dev"
    assert registry_of_backends.shared_registry().name == "mlr-readmission-shared"
    assert registry_of_backends.endpoints("prod").get_endpoint("readm") is None
