"""The fake answers like Azure: every recorded request, replayed through it, gets the recorded
status code and a reply with the recorded fields (same JSON structure; same values for the
fields that carry state: status, provisioningState, traffic, types, names, blob bytes), and no
field or header that no recorded answer of the same route or resource shows
(tests/azure/replay.py; the differences allowed below say why).

The recordings (/work/shared/azure-recordings) are azure-ai-ml's own tests against live Azure.
The replay drives the fake's clock: a long-running operation or job finishes exactly when the
recording shows it finished. Each recording gets the resources it assumed to exist (its
workspace, storage account, pre-uploaded blobs, the code asset it found by hash).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.azure.fake_arm import (
    Blob,
    FakeAzureML,
    Reply,
    SeenRequest,
    StaticTokenCredential,
    Workspace,
    system_data,
)
from tests.azure.replay import compare, known_fields

RECORDINGS = Path("/work/shared/azure-recordings")
SANITIZED_SIG = "000000000000000000000000000000000000"
TERMINAL = {"Succeeded", "Failed", "Canceled", "Completed"}
# where operations are polled: ARM, the registry asset store, the environment image service
LRO_PATHS = ("mfeOperation", "/assetstore/", "/environment/v1.0/operations/")
# documented differences between the fake and every recording
ALLOWED_EVERYWHERE = {
    # the fake's clock: azure-core waits this long between polls instead of the recorded
    # operations' seconds (tests/azure/fake/registries.py POLL_SOON; no recording shows it)
    "*: header x-ms-retry-after-ms",
}
# documented differences between the fake and the recorded service, per recording
ALLOWED: dict[str, set[str]] = {
    # the fake never hands out account keys: an AccountKey datastore answers with a SAS
    "test_model.pyTestModeltest_promote_model.json": {"3: $.secretsType", "3: $.key"},
    "test_model.pyTestModeltest_promote_model[import].json": {"2: $.key"},
    # #2, #8 as above; #6, #12: the 2022 service added a componentsdk.azureedge.net `$schema`
    # that azure-ai-ml 1.35.2 takes for an internal component and refuses to read (the fake
    # adds none: tests/azure/fake/state.py stored_component_spec); #13: a new pipeline job
    # answers `Preparing` here and `NotStarted` in the 2024 recording (child_run_download #6),
    # the status the fake follows; the SDK branches on neither
    "test_pipeline_job.pyTestPipelineJobtest_pipeline_job_create_with_registries.json": {
        "2: $.key",
        "8: $.key",
        "6: $.properties.componentSpec.$schema",
        "12: $.properties.componentSpec.$schema",
        "13: $.properties.status",
    },
    # the 2022 service sent a null `wasbsUri` in the upload credential; the 2023 and 2024
    # recordings (environment, model registry) have none, and the SDK does not read it
    "test_component.pyTestComponenttest_component_create_get_list_from_registry.json": {
        "1: $.blobReferenceForConsumption.credential.wasbsUri"
    },
    "test_batch_endpoint.pyTestBatchEndpointtest_batch_invoke.json": {"10: $.key"},
}


@dataclass
class Replay:
    fake: FakeAzureML
    credential: StaticTokenCredential
    lro_urls: dict[str, str] = field(default_factory=dict)  # recorded path -> fake URL
    mismatches: list[str] = field(default_factory=list)


def _load(name: str) -> list[dict[str, Any]]:
    path = RECORDINGS / name
    if not path.exists():
        pytest.skip(f"recordings not available at {RECORDINGS}")
    return json.loads(path.read_text(encoding="utf-8"))["Entries"]


def _body_bytes(entry: dict[str, Any], key: str) -> bytes:
    body = entry[key]
    if body is None:
        return b""
    if isinstance(body, dict | list):
        return json.dumps(body).encode()
    text = str(body)
    host = urlsplit(entry["RequestUri"]).hostname or ""
    if host.endswith(".blob.core.windows.net") and not text.lstrip("\ufeff").startswith("<"):
        try:  # the recorder stores blob contents base64-encoded
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text.encode()
    return text.encode()


def _blob_names(xml: str) -> list[str]:
    return re.findall(r"<Name>([^<]+)</Name>", xml)


def replay(name: str, seed: Callable[[Replay], None]) -> Replay:
    credential = StaticTokenCredential()
    fake = FakeAzureML(credential)
    fake.lro_polls = 10**6  # the recording decides when operations finish
    fake.job_polls = 10**6
    fake.issued_sas.add(SANITIZED_SIG)  # stands for the SAS the service issued then
    token = credential.get_token("https://management.azure.com/.default").token
    run = Replay(fake, credential)
    seed(run)
    for index, entry in enumerate(_load(name)):
        url = entry["RequestUri"]
        if ".inference.ml.azure.com" in url and urlsplit(url).path != "/jobs":
            # a scoring request's answer is the deployed script's: the recording's script and
            # model files were not recorded, and the fake runs deployments only with its
            # serving on (tests/serving runs our script through the fake's front door)
            continue
        url = _unsanitized(url, entry)
        path = urlsplit(url).path
        if path in run.lro_urls:
            url = run.lro_urls[path]
        _drive_clock(run, entry, path)
        headers = {k: v for k, v in entry["RequestHeaders"].items() if isinstance(v, str)}
        host = urlsplit(url).hostname or ""
        if not host.endswith(".blob.core.windows.net") or "sig=" not in url:
            headers["Authorization"] = f"Bearer {token}"
        request = SeenRequest(
            entry["RequestMethod"], url, headers, _body_bytes(entry, "RequestBody")
        )
        reply = fake.handle(request)
        _compare(run, index, entry, reply, ALLOWED.get(name, set()))
        _remember_lro(run, entry, reply)
    return run


def _unsanitized(url: str, entry: dict[str, Any]) -> str:
    """The recorder replaced anonymous component versions in request URLs with zeros, not in
    the answers (test_pipeline_job...create_with_registries #6, #12): put the answered version
    back, so two different components do not replay as one version PUT twice."""
    body = entry["ResponseBody"]
    zeros = re.search(r"/versions/(0+)(?=$|\?)", url)
    if zeros and isinstance(body, dict) and isinstance(body.get("name"), str):
        return url[: zeros.start(1)] + body["name"] + url[zeros.end(1) :]
    return url


def _drive_clock(run: Replay, entry: dict[str, Any], path: str) -> None:
    """Finish the operation or job now if the recording shows it finished at this read."""
    body = entry["ResponseBody"]
    status = body.get("status") if isinstance(body, dict) else None
    if "properties" in (body or {}) and isinstance(body, dict):
        status = body["properties"].get("status", status)
    finished = (
        status in TERMINAL
        or ("/assetstore/" in path and entry["StatusCode"] in (200, 204))
        or ("/environment/v1.0/operations/" in path and entry["StatusCode"] == 200)
        or ("mfeOperationResults" in path and entry["StatusCode"] in (200, 204))
    )
    fake = run.fake
    if any(op in path for op in LRO_PATHS):
        lro = fake.lros.get(urlsplit(run.lro_urls.get(path, "")).path.rsplit("/", 1)[-1])
        if lro is not None and finished:
            lro.polls = 0
    job = re.search(r"/jobs/([^/]+)$", path)
    if job and entry["RequestMethod"] == "GET" and job[1] in fake._job_progress:
        fake._job_progress[job[1]] = 0 if finished else 10**6


def _remember_lro(run: Replay, entry: dict[str, Any], reply: Reply) -> None:
    recorded = {k.lower(): v for k, v in entry["ResponseHeaders"].items()}
    for header in ("Azure-AsyncOperation", "Location"):
        if header.lower() in recorded and header in reply.headers:
            source = urlsplit(recorded[header.lower()]).path
            if any(op in source for op in LRO_PATHS):
                run.lro_urls[source] = reply.headers[header]


def route_key(fake: FakeAzureML, method: str, url: str) -> str:
    """The route a request takes (its pattern), or the host kind outside the route table."""
    parts = urlsplit(url)
    for kind in ("blob.core.windows.net", "inference.ml.azure.com"):
        if (parts.hostname or "").endswith(kind):
            return f"{method} {kind}"
    for route_method, pattern, _ in fake.routes:
        if route_method == method and pattern.fullmatch(parts.path):
            return f"{method} {pattern.pattern}"
    return f"{method} {parts.path}"


@functools.cache
def recorded_fields() -> dict[str, set[str]]:
    """The fields and headers each route's and each resource type's recorded answers show,
    over all the recordings replayed here (see replay.known_fields)."""
    fake = FakeAzureML(StaticTokenCredential())
    answers: list[tuple[str, Any]] = []
    headers: dict[str, set[str]] = {}
    for name in CASES:
        for entry in _load(name):
            route = route_key(fake, entry["RequestMethod"], entry["RequestUri"])
            if isinstance(entry["ResponseBody"], dict | list):
                answers.append((route, entry["ResponseBody"]))
            names = {k.lower() for k in entry["ResponseHeaders"]}
            headers.setdefault(f"{route} headers", set()).update(names)
    return known_fields(answers) | headers


def _compare(
    run: Replay, index: int, entry: dict[str, Any], reply: Reply, allowed: set[str]
) -> None:
    where = f"{index} {entry['RequestMethod']} {urlsplit(entry['RequestUri']).path[-80:]}"
    recorded = entry["ResponseBody"]
    host = urlsplit(entry["RequestUri"]).hostname or ""
    blob = host.endswith(".blob.core.windows.net")
    problems = compare(
        index,
        entry["RequestMethod"],
        entry["StatusCode"],
        entry["ResponseHeaders"],
        None if blob else recorded,
        reply,
        allowed | ALLOWED_EVERYWHERE,
        route=route_key(run.fake, entry["RequestMethod"], entry["RequestUri"]),
        known=recorded_fields(),
    )
    run.mismatches += [f"{where}: {problem}" for problem in problems]
    if blob and reply.status == entry["StatusCode"]:
        data, _ = reply.encoded()
        if isinstance(recorded, str) and recorded.lstrip("\ufeff").startswith("<"):
            if _blob_names(recorded) != _blob_names(data.decode("utf-8-sig")):
                run.mismatches.append(f"{where}: listed blobs differ")
        elif recorded is not None and _body_bytes(entry, "ResponseBody") != data:
            run.mismatches.append(f"{where}: blob bytes differ")


# --- the recordings, each with what it assumed to exist ---------------------------------------

SUB = "00000000-0000-0000-0000-000000000"  # as sanitized (one digit short)


def _local_upload(run: Replay, account: str, container: str, path: str, size: int) -> None:
    run.fake.blobs.setdefault((account.lower(), container), {})[path] = Blob(
        b"x" * size, {"name": "earlier", "upload_status": "completed", "version": "1"}
    )


def _recorded_workspace(
    run: Replay,
    account: str,
    container: str,
    computes: tuple[str, ...] = (),
    location: str | None = None,
) -> Workspace:
    """The recordings' workspace (sanitized: 00000 in group 00000), its datastores on the
    storage the recording uploaded to, read with the account key."""
    return run.fake.add_workspace(
        SUB,
        "00000",
        "00000",
        computes,
        location=location,
        storage_account=account,
        container=container,
        datastore_credentials="AccountKey",
    )


def seed_data(run: Replay) -> None:
    container = "azureml-blobstore-8e7dad76-df37-472b-b882-0c1c58adfcf9"
    _recorded_workspace(run, "Sanitized", container)
    path = "LocalUpload/00000000000000000000000000000000/tmp_file.csv"
    _local_upload(run, "Sanitized", container, path, 11)


def seed_model_crud(run: Replay) -> None:
    container = "azureml-blobstore-8e7dad76-df37-472b-b882-0c1c58adfcf9"
    _recorded_workspace(run, "Sanitized", container)
    path = "LocalUpload/00000000000000000000000000000000/lightgbm_mlflow_model/MLmodel"
    _local_upload(run, "Sanitized", container, path, 1544)


def seed_promote(run: Replay) -> None:
    container = "azureml-blobstore-a1391af3-9f38-48e8-862f-db3846e81dd4"
    account = "nirovinswseast5028951403"
    _recorded_workspace(run, account, container)
    run.fake.add_registry("4f26493f-21d2-4726-92ea-1ddd550b1d27", "test-registries", "testFeed")
    path = "LocalUpload/00000000000000000000000000000000/lightgbm_mlflow_model/MLmodel"
    _local_upload(run, account, container, path, 1575)


def seed_registry(run: Replay) -> None:
    container = "testfeed-5297245f-679a-5834-abb0-97334f5230c8"
    reg = run.fake.add_registry(
        "4f26493f-21d2-4726-92ea-1ddd550b1d27",
        "test-registries",
        "testFeed",
        storage_account="feedmaster2",
        container=container,
    )
    # geo-replicas of the registry storage hold the same blobs
    blobs = run.fake.blobs[(reg.storage_account, container)]
    for replica in ("feedmaster", "feedmaster1"):
        run.fake.blobs[(replica, container)] = blobs


def seed_endpoint(run: Replay) -> None:
    run.fake.add_workspace(SUB, "00000", "00000", location="eastus")


def seed_deployment(run: Replay) -> None:
    fake = run.fake
    ws = fake.add_workspace(
        SUB,
        "00000",
        "00000",
        location="eastus",
        storage_account="Sanitized",
        container="azureml-blobstore-5881e5dc-6e3e-408e-b99e-754026b4a07b",
    )
    entries = _load(
        "test_online_deployment.pyTestOnlineDeploymenttest_online_deployment_create.json"
    )
    code_hash = next(
        re.search(r"[?&]hash=([0-9a-f]+)", e["RequestUri"])[1]
        for e in entries
        if "/codes/" in e["RequestUri"] and "hash=" in e["RequestUri"]
    )
    code_id = f"{ws.arm_id}/codes/1451f8f8-6790-4c6e-af11-94f58e744f69/versions/1"
    ws.codes["1451f8f8-6790-4c6e-af11-94f58e744f69"] = {
        "1": {
            "id": code_id,
            "name": "1",
            "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
            "properties": {
                "description": None,
                "tags": {},
                "properties": {"hash_sha256": code_hash, "hash_version": "202208"},
                "isArchived": False,
                "isAnonymous": False,
                "codeUri": "https://Sanitized.blob.core.windows.net:443/code/onlinescoring",
                "provisioningState": "Succeeded",
            },
            "systemData": system_data(),
        }
    }
    model_path = "LocalUpload/00000000000000000000000000000000/model"
    model = "1498425f064ef007b4f000a85a5f4645"
    model_props = {
        "isAnonymous": True,
        "modelType": "custom_model",
        "stage": "Logged",
        "modelUri": f"azureml://subscriptions/{SUB}/resourcegroups/00000/workspaces/00000"
        f"/datastores/workspaceblobstore/paths/{model_path}",
    }
    ws.models[model] = {"1": fake._workspace_asset_body(ws, "model", model, "1", model_props)}
    _local_upload(run, "Sanitized", ws.container, f"{model_path}/sklearn_regression_model.pkl", 10)


def seed_pipeline(run: Replay) -> None:
    fake = run.fake
    sub = "00000000-0000-0000-0000-000000000000"
    ws = fake.add_workspace(sub, "00000", "00000", ("cpu-cluster",), location="westus")
    for version in ("3c50b616-4123-4df9-b4b0-86b56bc64321", "dabe3060-3253-43ce-83f9-f2ed0ee635b3"):
        fake.workspace("00000").components.setdefault("azureml_anonymous", {})[version] = {
            "id": f"{ws.arm_id}/components/azureml_anonymous/versions/{version}",
            "name": version,
            "properties": {"componentSpec": {"command": "echo hello", "outputs": {}}},
            "systemData": system_data(),
        }
    fake.job_failures["azure-ai-ml"] = (
        "hello_world_inline_commandjob_1: ScriptExecution.StreamAccess.Authentication"
    )


COMPONENT_REGISTRY = (
    "test_component.pyTestComponenttest_component_create_get_list_from_registry.json"
)
ENVIRONMENT_REGISTRY = (
    "test_environment.pyTestEnvironmenttest_registry_environment_create_conda_and_get.json"
)
PROMOTE_IMPORT = "test_model.pyTestModeltest_promote_model[import].json"
PIPELINE_REGISTRY = (
    "test_pipeline_job.pyTestPipelineJobtest_pipeline_job_create_with_registries.json"
)


def seed_component_registry(run: Replay) -> None:
    run.fake.add_registry(
        "d128f140-94e6-4175-87a7-954b9d27db16",
        "registry-00000-canary",
        "00000-canary",
        storage_account="mlreg00000canaryeus2e1",
        container="00000-canary-39eb39a5-03bf-52d3-a2a8-3786a05c5137",
    )
    run.fake.issued_sas.add("Sanitized")  # this recording's SAS signature


def seed_environment_registry(run: Replay) -> None:
    run.fake.add_registry(
        "4f26493f-21d2-4726-92ea-1ddd550b1d27",
        "test-registries",
        "testFeed",
        storage_account="feedmaster1",
        container="testfeed-ad1252af-d3e6-5993-8485-0f97b3c8ef0d",
    )


def seed_promote_import(run: Replay) -> None:
    account, container = (
        "dsvmmaster6912808807",
        "azureml-blobstore-3a59e976-9196-4817-92c5-da1e6dfae03c",
    )
    ws = _recorded_workspace(run, account, container, location="centraluseuap")
    ws.guid = "3a59e976-9196-4817-92c5-da1e6dfae03c"  # the import names the workspace by it
    # the import request went to the registry under the workspace's (sanitized) scope
    run.fake.add_registry(
        SUB,
        "00000",
        "testFeed",
        storage_account="feedmaster2",
        container="testfeed-20415210-a515-5d85-9487-b128cb3ed992",
    )
    path = "LocalUpload/00000000000000000000000000000000/lightgbm_mlflow_model/MLmodel"
    _local_upload(run, account, container, path, 1575)


def seed_pipeline_registry(run: Replay) -> None:
    fake = run.fake
    account, container = "sagvgsoim6nmhbq", "azureml-blobstore-e61cd5e2-512f-475e-9842-5e2a973993b8"
    ws = _recorded_workspace(run, account, container, ("cpu-cluster",), location="centraluseuap")
    upload = "LocalUpload/00000000000000000000000000000000"
    _local_upload(run, account, container, f"{upload}/COMPONENT_PLACEHOLDER", 20)
    code = "9c9cfba9-82bd-45db-ad06-07009d1d9672"
    code_props = {
        "properties": {"hash_sha256": "0000000000000", "hash_version": "0000000000000"},
        "codeUri": f"https://{account}.blob.core.windows.net/{container}/{upload}",
    }
    ws.codes[code] = {"1": fake._workspace_asset_body(ws, "code", code, "1", code_props)}
    # the registry component step `a` uses (the recorded test had registered it before)
    reg = fake.add_registry("4f26493f-21d2-4726-92ea-1ddd550b1d27", "test-registries", "testFeed")
    reg.components["my_hello_world_asset_2"] = {
        "1": fake._registry_asset_body(
            reg,
            "component",
            "my_hello_world_asset_2",
            "1",
            {"componentSpec": {"name": "my_hello_world_asset_2", "version": "1", "outputs": {}}},
        )
    }


BATCH = "test_batch_endpoint.pyTestBatchEndpointtest_batch_invoke.json"
MONITOR = "test_monitor_schedule.pyTestMonitorScheduletest_data_drift_schedule_create.json"


def seed_batch(run: Replay) -> None:
    fake = run.fake
    ws = _recorded_workspace(
        run,
        "sab6b272nokaeak",
        "azureml-blobstore-061273aa-2956-4aff-8628-0fad8c820f9e",
        ("cpu-cluster",),
        location="centraluseuap",
    )
    # the identity the service gave the endpoint (the request named none)
    identity = (
        "/subscriptions/ad203158-bc5d-4e72-b764-2607833a71dc/resourceGroups/vienna-test-westus2"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/vienna-test-westus2-msi"
    )
    fake.arm_resources[identity.lower()] = {
        "id": identity,
        "name": "vienna-test-westus2-msi",
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "properties": {
            "principalId": "88477434-0c49-4e52-8ad1-e1b85a3e46a3",
            "clientId": "1b7dab80-3afc-41de-8073-ead68fb41ac9",
        },
    }
    ws.batch_identity = identity
    code = "2d48ca0c-1196-4169-94c6-1bd7584fbf6c"
    code_props = {
        "properties": {
            "hash_sha256": "bbd95444830b4329e59b580de67a78c69943875e8251311b700f04f0ea89e1ee",
            "hash_version": "202208",
        },
        "codeUri": "https://sab6b272nokaeak.blob.core.windows.net:443/"
        "061273aa-2-fb997464-44fd-5d51-b53a-ee3a936d815d/code",
    }
    ws.codes[code] = {"1": fake._workspace_asset_body(ws, "code", code, "1", code_props)}
    model = "88cf3abcb419bc852f17398005a22790"
    model_path = "LocalUpload/00000000000000000000000000000000/model"
    model_props = {
        "isAnonymous": True,
        "modelType": "custom_model",
        "modelUri": f"azureml://subscriptions/{SUB}/resourcegroups/00000/workspaces/00000"
        f"/datastores/workspaceblobstore/paths/{model_path}",
    }
    ws.models[model] = {"1": fake._workspace_asset_body(ws, "model", model, "1", model_props)}
    blob = f"{model_path}/mnist-tf.model.data-00000-of-00001"
    _local_upload(run, ws.storage_account, ws.container, blob, 1066440)


def seed_monitor(run: Replay) -> None:
    fake = run.fake
    ws = fake.add_workspace(SUB, "00000", "00000", location="centraluseuap")
    for version, uri in (("1", "https://bla"), ("2", "http://bla")):
        props = {"isArchived": True, "dataUri": uri, "dataType": "uri_folder"}
        ws.data.setdefault("list_data_v2_test", {})[version] = fake._workspace_asset_body(
            ws, "data", "list_data_v2_test", version, props
        )


CASES = {
    "test_data.pyTestDatatest_create_uri_file.json": seed_data,
    "test_model.pyTestModeltest_crud_file.json": seed_model_crud,
    "test_model.pyTestModeltest_promote_model.json": seed_promote,
    "test_model.pyTestModeltest_create_get_download_model_registry.json": seed_registry,
    "test_online_endpoint.pyTestOnlineEndpointtest_online_endpoint_e2e.json": seed_endpoint,
    "test_online_deployment.pyTestOnlineDeploymenttest_online_deployment_create.json": (
        seed_deployment
    ),
    "test_pipeline_job.pyTestPipelineJobLongRunningtest_pipeline_job_child_run_download.json": (
        seed_pipeline
    ),
    COMPONENT_REGISTRY: seed_component_registry,
    ENVIRONMENT_REGISTRY: seed_environment_registry,
    PROMOTE_IMPORT: seed_promote_import,
    PIPELINE_REGISTRY: seed_pipeline_registry,
    BATCH: seed_batch,
    MONITOR: seed_monitor,
}


@pytest.mark.parametrize("recording", sorted(CASES), ids=lambda n: n.split(".py")[1][:-5])
def test_fake_answers_recorded_requests_like_azure(recording: str) -> None:
    run = replay(recording, CASES[recording])
    assert not run.fake.unhandled, [f"{r.method} {r.path}" for r in run.fake.unhandled]
    assert not run.mismatches, "\n".join(run.mismatches)
