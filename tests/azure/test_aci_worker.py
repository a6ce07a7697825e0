"""train-dev run by prefect-azure's own Azure Container Instances worker, end to end.

The world is what infra/ deploys (tests/azure/conftest.py's deploy_infra): the flows and
worker identities, the flows' registry with the flows identity's AcrPull, the results and audit
containers. The pool and blocks are `setup_azure_orchestration`'s. The worker (prefect-azure
0.4.13's `AzureContainerWorker`, unchanged) runs in the test process under the worker identity
and sends its Resource Manager and ACI calls through the real SDKs to the fake. The fake
deploys the worker's ARM template, checks the image pull (the flows identity, assigned to the
group, holding AcrPull) and runs the container's command as a local process with the
environment the worker set (tests/azure/fake/container_instances.py). In that process
train-dev runs on the azure backend with `DefaultAzureCredential`, which gets the flows
identity's tokens from the container's identity endpoint; its results go to the `mlops-results`
blob container through prefect-azure's async blob client.

The run reaches the pipeline-assets approval and suspends (the container exits 0, the worker
deletes the group); a person resumes it through the Prefect API; the worker submits it again;
a new container reloads the training from the persisted results instead of training again,
promotes the approved assets and completes. The stand-in for Azure ML's compute (what
tests/azure/test_flows_on_azure.py does in-process) runs a submitted pipeline's components in
the test process, where the fake lives, when the pipeline job's PUT reaches the fake.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_runs import resume_flow_run
from prefect.variables import Variable
from prefect_azure.workers.container_instance import AzureContainerWorker

from audit import read_audit_log
from backends.local.workspace import LocalWorkspace
from backends.topology import TOPOLOGY_VARIABLE, OrchestrationSpec
from mlops_cli.azure_orchestration import (
    RESULTS_BLOCK,
    WORK_POOL,
    azure_deployments,
    setup_azure_orchestration,
)
from settings import PIPELINES_DIR
from tests.azure.conftest import REPO, AzureUnderTest
from tests.azure.fake.container_instances import Image
from tests.azure.fake.http import SeenRequest
from tests.azure.fake.state import WS
from tests.azure.fake_arm import FakeAzureML

WORKER_IDENTITY = "id-readmission-worker"  # infra/shared.bicep's worker identity
VENV_BIN = Path(sys.executable).parent
TRAINING = yaml.safe_load((PIPELINES_DIR / "train.yml").read_text())["experiment_name"]
VALIDATION = yaml.safe_load((PIPELINES_DIR / "validate_data.yml").read_text())["experiment_name"]


def _identity(subscription: str, group: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


def _pipeline_for(experiment: str) -> Path:
    for path in sorted(PIPELINES_DIR.glob("*.yml")):
        if yaml.safe_load(path.read_text()).get("experiment_name") == experiment:
            return path
    raise AssertionError(f"no pipeline YAML has experiment_name {experiment}")


def azure_ml_compute(azure: AzureUnderTest, scratch: Path) -> Any:
    """Before a pipeline job's PUT reaches the fake: run its components (the working tree's
    YAML and scripts, as tests/azure/test_flows_on_azure.py's compute does) on the data the job
    names, and hand their outputs to the fake's job, which "writes" them to storage."""
    job_put = re.compile(WS + r"/jobs/(?P<name>[^/]+)")

    def compute(request: SeenRequest) -> None:
        match = job_put.fullmatch(request.path)
        if request.method != "PUT" or not match:
            return
        props = (request.json() or {}).get("properties") or {}
        if props.get("jobType") != "Pipeline":
            return
        spec = next(
            s
            for s in azure.topology.environments.values()
            if s.workspace.lower() == match["ws"].lower()
        )
        inputs: dict[str, Any] = {}
        for name, given in (props.get("inputs") or {}).items():
            inputs[name] = given.get("value", given.get("uri"))
        ws = azure.fake.workspace(spec.workspace)
        path = re.search(r"/paths/(?P<path>.+)$", str(inputs["raw_data"]))
        assert path, inputs["raw_data"]
        files = azure.fake.files_under(ws.storage_account, ws.container, path["path"])
        data = scratch / "data" / Path(path["path"]).name
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(next(iter(files.values())))
        inputs["raw_data"] = str(data)
        experiment = props["experimentName"]
        ran = LocalWorkspace(spec, scratch).run_pipeline(
            _pipeline_for(experiment), inputs, props.get("displayName")
        )
        azure.fake.job_outputs[experiment] = {
            k: Path(v) for k, v in ran.outputs.items() if "." in k
        }

    return compute


@pytest.fixture
def flows_on_aci(
    fake_azure: AzureUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureUnderTest]:
    fake = fake_azure.fake
    topology = fake_azure.topology
    orchestration = topology.require_orchestration()
    # the image the Dockerfile builds, "built" from this checkout: its WORKDIR is the repo, its
    # ENV lines as the Dockerfile sets them (MLOPS_ROOT: the image's own state directory), the
    # venv's bin first on PATH and the repo on PYTHONPATH (the image's pip install -e)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    fake.images[orchestration.image_uri] = Image(
        REPO,
        {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "MLOPS_GIT_COMMIT": commit,
            "MLOPS_ROOT": str(tmp_path / "image-var-lib-mlops"),
        },
    )
    fake.container_network().before.append(azure_ml_compute(fake_azure, tmp_path / "compute"))
    # the worker's own identity: DefaultAzureCredential finds it at its host's identity endpoint
    worker = _identity(orchestration.subscription_id, orchestration.resource_group, WORKER_IDENTITY)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.identity_endpoint([worker]))
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield fake_azure
    finally:
        fake.stop_container_groups()


def _push_topology() -> None:
    """What `mlops config push` stores: environments.yaml as it is."""
    raw = yaml.safe_load((REPO / "environments.yaml").read_text())
    Variable.set(TOPOLOGY_VARIABLE, raw, tags=["mlops"], overwrite=True)


async def _deploy_train_dev() -> Any:
    """prefect.yaml's train-dev as `mlops azure deploy` moves it onto the pool, its pull step
    changing into the image's WORKDIR (here the checkout); the worker watches the container
    every 0.3 s instead of 5 s (a job variable of the pool's template)."""
    moved = azure_deployments()
    spec = next(d for d in moved["deployments"] if d["name"] == "train-dev")
    pull = [
        {step: {**args, "directory": str(REPO)}}
        for entry in moved["pull"]
        for step, args in entry.items()
    ]
    job_variables = {**spec["work_pool"].get("job_variables", {}), "task_watch_poll_interval": 0.3}
    async with get_client() as client:
        from flows.train_dev import train_dev

        flow_id = await client.create_flow(train_dev)
        return await client.create_deployment(
            flow_id=flow_id,
            name=spec["name"],
            work_pool_name=spec["work_pool"]["name"],
            work_queue_name=spec["work_pool"].get("work_queue_name"),
            entrypoint=spec["entrypoint"],
            pull_steps=pull,
            job_variables=job_variables,
        )


async def _run_once(flow_run_id: Any) -> None:
    """The worker picks the scheduled run up; leaving the worker waits for what it submitted:
    the container's run, then the group's deletion."""
    async with AzureContainerWorker(
        work_pool_name=WORK_POOL, prefetch_seconds=1, create_pool_if_not_found=False
    ) as worker:
        for _ in range(60):
            submitted = await worker.get_and_submit_flow_runs()
            if any(r.id == flow_run_id for r in submitted):
                return
            await anyio.sleep(0.5)
        raise AssertionError("the worker never picked the run up")


async def _state(flow_run_id: Any) -> FlowRun:
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


@pytest.mark.slow  # two containers, train-dev's two pipelines: 55-105 s here
def test_suspended_train_dev_resumes_in_a_new_container_from_blob_results(
    flows_on_aci: AzureUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = flows_on_aci.fake
    topology = flows_on_aci.topology
    orchestration = topology.require_orchestration()
    _push_topology()
    setup = setup_azure_orchestration(topology)
    assert setup.results_block == f"azure-blob-storage-container/{RESULTS_BLOCK}"
    deployment_id = anyio.run(_deploy_train_dev)

    async def create_run() -> Any:
        async with get_client() as client:
            return (await client.create_flow_run_from_deployment(deployment_id)).id

    run_id = anyio.run(create_run)

    # 1. the worker submits it; the container runs train-dev up to the approval and suspends
    anyio.run(_run_once, run_id)
    suspended = anyio.run(_state, run_id)
    assert suspended.state is not None
    assert suspended.state.name == "Suspended", (suspended.state, _logs(fake))
    first = fake.container_runs[0]
    assert len(fake.container_runs) == 1 and not fake.running  # exited, group deleted
    assert first.process.returncode == 0
    results = fake.blobs[(orchestration.storage_account, orchestration.results_container)]
    assert results, "nothing persisted in the results container"
    jobs = _pipeline_jobs(fake)  # the data gate's pipeline, then the training pipeline
    assert [experiment for experiment, _ in jobs] == [VALIDATION, TRAINING], jobs

    # 2. a person approves through the Prefect API; the worker submits the run again
    async def resume() -> None:
        await resume_flow_run(
            run_id,
            run_input={"approved": True, "approver": "ivan", "reason": "components reviewed"},
        )

    anyio.run(resume)
    before_resume = len(fake.requests)
    anyio.run(_run_once, run_id)
    final = anyio.run(_state, run_id)
    assert final.state is not None and final.state.type == StateType.COMPLETED, (
        final.state,
        _logs(fake),
    )
    second = fake.container_runs[-1]
    assert len(fake.container_runs) == 2 and second.process.pid != first.process.pid
    assert second.process.returncode == 0 and not fake.running
    assert _pipeline_jobs(fake) == jobs  # the training was reloaded from blob, not rerun
    results_url = f"https://{orchestration.account_url.split('//')[-1].rstrip('/')}/"
    reads = [
        r
        for r in fake.requests[before_resume:]
        if r.method == "GET" and r.url.startswith(results_url + orchestration.results_container)
    ]
    assert reads, "the new container read no persisted result from the results container"

    # the audit trail the containers wrote, read back on the azure backend (the append blob)
    sent_by_worker_and_containers = list(fake.requests)
    monkeypatch.setenv("MLOPS_BACKEND", "azure")
    records = [(r.action, r.actor) for r in read_audit_log()]
    assert ("approved", "ivan") in records and ("assets-promoted", "ivan") in records, records
    audit = fake.blobs[(orchestration.storage_account, orchestration.audit_container)]
    assert audit, "no audit blob in the audit container"

    # identities only: bearer tokens on every request, the flows identity's from the containers
    _assert_tokens_only(fake, sent_by_worker_and_containers, orchestration)


def _pipeline_jobs(fake: FakeAzureML) -> list[tuple[str, str]]:
    """(experiment, job name) of every pipeline job submitted to the fake."""
    jobs = []
    for r in fake.requests:
        if r.method == "PUT" and re.search(r"/jobs/[^/]+$", r.path):
            props = (r.json() or {}).get("properties") or {}
            if props.get("jobType") == "Pipeline":
                jobs.append((props["experimentName"], r.path.rsplit("/", 1)[-1]))
    return jobs


def _assert_tokens_only(
    fake: FakeAzureML, requests: list[SeenRequest], orchestration: OrchestrationSpec
) -> None:
    """Bearer tokens only: no shared key, no connection string, no SAS but the ones Azure ML
    itself hands out for a code upload (startPendingUpload, asked for with a token); the
    results and the audit trail are reached with the flows identity's tokens, the container
    groups are made with the worker identity's."""
    flows_account = f"{orchestration.storage_account}.blob.core.windows.net"
    worker = _identity(orchestration.subscription_id, orchestration.resource_group, WORKER_IDENTITY)
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = headers.get("authorization", "")
        assert not auth.startswith("SharedKey"), request.url
        assert "accountkey=" not in (request.url + request.body.decode(errors="ignore")).lower()
        if "sig" in request.query:
            assert request.query["sig"] in fake.issued_sas, request.url
            assert request.host != flows_account, request.url
        if request.host == flows_account:
            assert fake.identity_tokens.get(auth.removeprefix("Bearer ")) == (
                orchestration.flows_identity
            ), request.url
        if "Microsoft.ContainerInstance" in request.path or "/deployments/prefect-" in request.path:
            assert fake.identity_tokens.get(auth.removeprefix("Bearer ")) == worker, request.url


def _logs(fake: FakeAzureML) -> str:
    return "\n".join(f"--- {run.group_id}\n{run.output[-6000:]}" for run in fake.container_runs)


# --- the fake's ACI rules, without running a flow ------------------------------------------------


def _group_template(image: str, identity: str | None, registry_identity: str | None) -> dict:
    group: dict[str, Any] = {
        "type": "Microsoft.ContainerInstance/containerGroups",
        "apiVersion": "2022-09-01",
        "name": "probe",
        "location": "[resourceGroup().location]",
        "properties": {
            "containers": [
                {
                    "name": "probe",
                    "properties": {
                        "image": image,
                        "command": [sys.executable, "-c", "print('pulled')"],
                        "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
                        "environmentVariables": [],
                    },
                }
            ],
            "osType": "Linux",
            "restartPolicy": "Never",
            "imageRegistryCredentials": [
                {"server": image.split("/")[0], "identity": registry_identity}
            ],
        },
    }
    if identity:
        group["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "resources": [group],
    }


@pytest.mark.parametrize(
    ("assigned", "pulls_with", "refusal"),
    [
        ("flows", "flows", None),
        (None, "flows", "is not assigned to the group"),
        ("worker", "worker", "holds no AcrPull"),
    ],
)
def test_an_image_is_pulled_only_by_an_assigned_identity_holding_acr_pull(
    fake_azure: AzureUnderTest, assigned: str | None, pulls_with: str, refusal: str | None
) -> None:
    from tests.azure.fake.arm_templates import Scope, TemplateEngine, TemplateError

    fake = fake_azure.fake
    o = fake_azure.topology.require_orchestration()
    fake.images[o.image_uri] = Image(REPO, {"PATH": str(VENV_BIN)})
    identities = {
        "flows": o.flows_identity,
        "worker": _identity(o.subscription_id, o.resource_group, WORKER_IDENTITY),
    }
    template = _group_template(o.image_uri, identities.get(assigned or ""), identities[pulls_with])
    engine = TemplateEngine(fake.arm_resources, on_resource=fake._provisioned)
    scope = Scope(o.subscription_id, o.resource_group, o.location)
    try:
        if refusal is None:
            engine.deploy(template, {}, scope)
            assert fake.container_runs[-1].wait(30) == 0
            assert fake.container_runs[-1].output == "pulled"
        else:
            with pytest.raises(TemplateError) as refused:
                engine.deploy(template, {}, scope)
            assert refused.value.code == "InaccessibleImage" and refusal in refused.value.message
            assert not fake.container_runs
    finally:
        fake.stop_container_groups()


def test_the_identity_endpoint_issues_tokens_of_the_group_identity_only(
    fake_azure: AzureUnderTest,
) -> None:
    """What DefaultAzureCredential in a container gets: a token of the group's one identity,
    which the fake then accepts; a request without `Metadata: true` is refused as IMDS does."""
    from azure.identity import ManagedIdentityCredential

    fake = fake_azure.fake
    o = fake_azure.topology.require_orchestration()
    endpoint = fake.identity_endpoint([o.flows_identity])
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", endpoint)
            token = ManagedIdentityCredential().get_token("https://storage.azure.com/.default")
        assert fake.identity_tokens[token.token] == o.flows_identity
        assert fake.accepts_token(f"Bearer {token.token}")
        bare = fake.handle(
            SeenRequest(
                "GET",
                f"{endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01"
                "&resource=https://storage.azure.com",
                {},
                b"",
            )
        )
        assert bare.status == 400
    finally:
        fake.stop_container_groups()


def test_only_the_flows_identity_may_write_results_and_audit_records(
    fake_azure: AzureUnderTest,
) -> None:
    """The fake's blob storage checks a managed identity's Storage Blob Data roles, as infra/
    grants them: the flows identity writes the results and the audit trail (Contributor on each
    container); the worker identity, which only starts container groups, is refused 403."""
    from azure.core.exceptions import HttpResponseError
    from azure.identity import ManagedIdentityCredential
    from azure.storage.blob import BlobServiceClient

    fake = fake_azure.fake
    o = fake_azure.topology.require_orchestration()
    worker = _identity(o.subscription_id, o.resource_group, WORKER_IDENTITY)
    try:
        for identity, allowed in ((o.flows_identity, True), (worker, False)):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv(
                    "AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.identity_endpoint([identity])
                )
                service = BlobServiceClient(o.account_url, credential=ManagedIdentityCredential())
                for container in (o.results_container, o.audit_container):
                    blob = service.get_blob_client(container, f"probe-{identity[-6:]}")
                    if allowed:
                        blob.upload_blob(b"{}")
                        assert blob.download_blob().readall() == b"{}"
                    else:
                        with pytest.raises(HttpResponseError) as refused:
                            blob.upload_blob(b"{}")
                        assert refused.value.error_code == "AuthorizationPermissionMismatch"
    finally:
        fake.stop_container_groups()
