"""The azure backend when Azure misbehaves: throttling, failed operations, conflicts, missing
rights, stuck jobs; and what never leaves the process (keys, secrets, anything but tokens
from the credential).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from azure.core import PipelineClient
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest, HttpResponse

import backends.azure
from backends.azure.clients import AzureConnection, set_connection_factory
from backends.azure.errors import (
    AzureNotSignedIn,
    AzureOperationFailed,
    AzurePermissionDenied,
    AzureResourceMissing,
    ResourceBusy,
)
from backends.azure.retries import Deadlines, OperationTimedOut
from backends.topology import EnvironmentSpec
from records import aliases, lineage_tags
from records.serving import DeploymentFailed
from records.workspace import ModelVersion, PipelineFailed
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import split_body
from tests.azure.conftest import FAST_DEADLINES, FAST_RETRIES, AzureUnderTest
from tests.azure.fake_arm import StaticTokenCredential
from tests.endpoints.models import save_trained_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "readmission"


def workspace(azure: AzureUnderTest, environment: str = "test") -> backends.azure.AzureWorkspace:
    return backends.azure.open_workspace(azure.topology.environment(environment), azure.topology)


def register(ws: backends.azure.AzureWorkspace, model_dir: Path, run: str) -> ModelVersion:
    return ws.register_model(
        MODEL, str(model_dir), f"train-{run}", {lineage_tags.PIPELINE_RUN_ID: run}, ""
    )


def answered(azure: AzureUnderTest, status: int) -> int:
    return sum(1 for r in azure.fake.requests if r.status == status)


# --- throttling ---------------------------------------------------------------------------------


def test_a_429_storm_is_retried_after_the_time_azure_asks_for_and_then_succeeds(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    fake_azure.fake.throttle(times=3, retry_after=1, path_pattern=r"/models/")

    started = time.monotonic()
    version = register(ws, model_dir, "run-a")

    assert version.version == "1"
    assert answered(fake_azure, 429) == 3
    assert time.monotonic() - started >= 3.0  # Retry-After: 1, three times
    assert [v.version for v in ws.list_model_versions(MODEL)] == ["1"]


def test_throttling_that_outlasts_the_retries_ends_in_an_error_that_says_so(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    fake_azure.fake.throttle(times=100, retry_after=0, path_pattern=r"/models/")

    with pytest.raises(AzureOperationFailed, match="429.*kept throttling") as raised:
        register(ws, model_dir, "run-a")

    assert raised.value.status == 429
    assert answered(fake_azure, 429) == FAST_RETRIES.status + 1


def test_a_transient_503_on_a_read_is_retried(fake_azure: AzureUnderTest) -> None:
    ws = workspace(fake_azure)
    fake_azure.fake.inject(
        503, "ServiceUnavailable", "try again", times=2, path_pattern="/endpoints|/onlineEndpoints"
    )

    assert backends.azure.open_endpoints(ws).get_endpoint("readm") is None
    assert answered(fake_azure, 503) == 2


# --- long-running operations -------------------------------------------------------------------


def deployed(azure: AzureUnderTest, model_dir: Path) -> backends.azure.AzureEndpoints:
    ws = workspace(azure)
    endpoints = backends.azure.open_endpoints(ws)
    one, two = register(ws, model_dir, "run-a"), register(ws, model_dir, "run-b")
    endpoints.create_or_update_endpoint("readm")
    endpoints.create_or_update_deployment("readm", "blue", one, model_dir)
    endpoints.set_traffic("readm", {"blue": 100}, None)
    endpoints.create_or_update_deployment("readm", "green", two, model_dir)
    return endpoints


def test_a_failed_traffic_update_is_a_clear_error_and_blue_keeps_the_traffic(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    fake_azure.fake.fail_next_lro(r"/onlineEndpoints/readm$", "Quota exceeded for Standard_DS3_v2")

    with pytest.raises(AzureOperationFailed, match="failed.*Quota exceeded") as raised:
        endpoints.set_traffic("readm", {"blue": 0, "green": 100}, None)

    assert "set traffic of readm" in str(raised.value)
    after = endpoints.get_endpoint("readm")
    assert after is not None and after.serving() == "blue"
    assert {k: v for k, v in after.traffic.items() if v} == {"blue": 100}


def test_a_deployment_whose_operation_fails_raises_deployment_failed_with_its_logs(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    three = register(endpoints.workspace, model_dir, "run-c")
    fake_azure.fake.fail_deployment("canary", "ModuleNotFoundError: No module named 'skops'")

    with pytest.raises(DeploymentFailed) as raised:
        endpoints.create_or_update_deployment("readm", "canary", three, model_dir)

    message = str(raised.value)
    assert "canary" in message and "No module named 'skops'" in message
    assert "fake container log for canary" in message  # the deployment's log tail
    assert endpoints.get_endpoint("readm").serving() == "blue"


def test_a_pipeline_job_that_outlives_its_deadline_says_where_it_still_runs(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    fake_azure.fake.job_polls = 10**6
    set_connection_factory(
        lambda: AzureConnection(
            fake_azure.credential,
            fake_azure.fake.transport(),
            FAST_RETRIES,
            Deadlines(lro_seconds=5, job_seconds=0.2, job_poll_seconds=0.05),
        )
    )
    data = tmp_path / "d.csv"
    data.write_text("age\n70\n")

    with pytest.raises(OperationTimedOut, match=r"still Running after 0.2 s.*ml\.azure\.com/runs/"):
        workspace(fake_azure, "dev").run_pipeline(
            snapshot(tmp_path) / "validate_data.yml", {"raw_data": str(data)}
        )


def test_a_failed_pipeline_names_the_step_and_where_its_logs_are(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    fake_azure.fake.job_failures["readmission-data-validation"] = "validate: KeyError 'age'"
    data = tmp_path / "d.csv"
    data.write_text("age\n70\n")

    with pytest.raises(PipelineFailed, match=r"ended Failed: step 'validate' Failed \(logs: https"):
        workspace(fake_azure, "dev").run_pipeline(
            snapshot(tmp_path) / "validate_data.yml", {"raw_data": str(data)}
        )


def snapshot(tmp_path: Path) -> Path:
    """The pipeline YAMLs in a folder with only what their code snapshot needs."""
    import shutil

    root = tmp_path / "repo"
    for part in ("components", "data_checks"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".amlignore", root / ".amlignore")
    return root / "components" / "pipelines"


# --- conflicts ----------------------------------------------------------------------------------


def test_a_409_on_share_is_verified_and_makes_no_duplicate(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    candidate = register(ws, model_dir, "run-a")
    fake_azure.fake.conflict_on_share()

    promoted = registry.promote(
        candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: ws.name}, "approved"
    )

    assert answered(fake_azure, 409) == 1
    assert [v.version for v in registry.list_model_versions(MODEL)] == [promoted.version]
    assert promoted.tags[lineage_tags.PROMOTED_FROM] == f"{ws.name}:{MODEL}:1"
    again = registry.promote(
        candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: ws.name}, "approved"
    )
    assert again == promoted


def test_a_409_from_a_different_model_in_the_way_is_not_taken_for_ours(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    candidate = register(ws, model_dir, "run-a")
    fake_azure.fake.inject(
        409, "Conflict", "Model readmission:1 already exists.", path_pattern="/import$"
    )

    with pytest.raises(AzureOperationFailed, match="refused to import .* re-run the promotion"):
        registry.promote(candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: ws.name}, "approved")

    assert registry.list_model_versions(MODEL) == []


# --- identity and rights ------------------------------------------------------------------------


def test_a_missing_role_says_which_role_to_grant(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    fake_azure.fake.inject(
        403, "AuthorizationFailed", "no write on models", path_pattern="/models/", method="PUT"
    )

    with pytest.raises(AzurePermissionDenied, match="AzureML Data Scientist"):
        register(workspace(fake_azure), model_dir, "run-a")


def test_a_workspace_missing_from_azure_points_at_the_topology(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    spec = EnvironmentSpec(
        "qa",
        "mlw-does-not-exist",
        "rg-x",
        "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "eastus2",
        "cpu",
    )
    ws = backends.azure.open_workspace(spec, fake_azure.topology)

    with pytest.raises(AzureResourceMissing, match="environments.yaml"):
        register(ws, model_dir, "run-a")


def test_a_token_azure_does_not_accept_says_to_sign_in(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    stranger = StaticTokenCredential()  # tokens the fake never issued
    set_connection_factory(
        lambda: AzureConnection(stranger, fake_azure.fake.transport(), FAST_RETRIES, FAST_DEADLINES)
    )

    with pytest.raises(AzureNotSignedIn, match="az login"):
        register(workspace(fake_azure), model_dir, "run-a")


def test_no_request_carries_a_key_or_secret_only_bearer_tokens_from_the_credential(
    fake_azure: AzureUnderTest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_azure.fake.serve_scoring()  # the deployment runs: invoke reaches its container
    model_dir = save_trained_model(tmp_path / "model", rows=600)
    caplog.set_level(logging.DEBUG)
    ws = workspace(fake_azure)
    data = tmp_path / "d.csv"
    data.write_text("age,readmitted_30d\n70,1\n")
    ws.register_data("readmissions", data)
    candidate = register(ws, model_dir, "run-a")
    ws.set_model_alias(MODEL, aliases.CHAMPION, candidate.version)
    ws.model_path(candidate)
    registry = backends.azure.open_shared_registry(fake_azure.topology)
    promoted = registry.promote(
        candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: ws.name}, "ok"
    )
    registry.model_path(promoted)
    endpoints = backends.azure.open_endpoints(workspace(fake_azure, "prod"))
    endpoints.create_or_update_endpoint("readm")
    endpoints.create_or_update_deployment("readm", "blue", promoted, model_dir)
    endpoints.set_traffic("readm", {"blue": 100}, None)
    rows = generate_readmissions(2, seed=3).drop(columns=["readmitted_30d"])
    assert len(endpoints.invoke("readm", split_body(rows))["predictions"]) == 2
    key = endpoints.get_key("readm")
    fake_azure.fake.job_outputs["readmission-data-validation"] = {"validate.report": model_dir}
    workspace(fake_azure, "dev").run_pipeline(
        snapshot(tmp_path) / "validate_data.yml", {"raw_data": str(data)}
    )

    tokens = set(fake_azure.credential.issued.values())
    assert key in tokens  # aad_token endpoints: the caller's own Entra token, no endpoint key
    requests = fake_azure.fake.requests
    assert len(requests) > 100 and not fake_azure.fake.unhandled
    for request in requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert not [h for h in headers if re.search("key|secret|sas|password", h)], request.url
        auth = headers.get("authorization")
        if auth is not None:
            assert auth.startswith("Bearer ") and auth[7:] in tokens, (request.url, auth[:20])
        if "x-azureml-token" in headers:  # pipeline submission carries the user's AML token
            assert headers["x-azureml-token"] in tokens
        signature = request.query.get("sig")
        if signature is not None:  # only short-lived SAS the service itself handed out
            assert signature in fake_azure.fake.issued_sas
            assert request.host.split(".")[0] != fake_azure.fake.workspace(ws.name).storage_account
        if not request.host.endswith(".blob.core.windows.net") and request.body:
            assert not re.search(
                rb"(?i)accountkey|primarykey|secretkey|password|connectionstring", request.body
            )
    workspace_storage = {w.storage_account for w in fake_azure.fake.workspaces.values()}
    datastore_blobs = [
        r for r in requests if r.host.split(".")[0] in workspace_storage and "sig" not in r.query
    ]
    assert datastore_blobs and all(
        "authorization" in {k.lower() for k in r.headers} for r in datastore_blobs
    )
    assert all(token not in caplog.text for token in tokens), "a token was logged"


def test_a_deployment_that_never_finishes_times_out_with_where_to_look(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    ws = workspace(fake_azure)
    endpoints = backends.azure.open_endpoints(ws)
    endpoints.create_or_update_endpoint("readm")
    fake_azure.fake.lro_polls = 10**6
    endpoints.deadline = 0.3

    with pytest.raises(
        DeploymentFailed, match="did not finish within 0.3 s.*endpoint readm"
    ) as raised:
        endpoints.create_or_update_deployment(
            "readm", "blue", register(ws, model_dir, "a"), model_dir
        )

    assert isinstance(raised.value.__cause__, OperationTimedOut)


# --- writes while an earlier operation still runs ------------------------------------------------


def busy_retries_fast(endpoints: backends.azure.AzureEndpoints, deadline: float = 60.0) -> None:
    """Read a held resource every 10 ms (Azure: every busy_poll_seconds) within `deadline`."""
    endpoints.busy_poll = 0.01
    endpoints.deadline = deadline


def test_a_deployment_update_during_an_operation_left_running_waits_for_it_and_lands(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    three = register(endpoints.workspace, model_dir, "run-c")
    fake_azure.fake.hold_operation(r"/onlineEndpoints/readm/deployments/green$", polls=3)
    busy_retries_fast(endpoints)

    green = endpoints.create_or_update_deployment("readm", "green", three, model_dir)

    assert answered(fake_azure, 409) >= 1
    assert (green.model_version, green.state) == (three.version, "Succeeded")
    after = endpoints.get_endpoint("readm")
    assert after is not None and after.serving() == "blue"
    assert {d.name: d.model_version for d in after.deployments} == {"blue": "1", "green": "3"}


def test_a_traffic_update_during_a_running_endpoint_operation_is_retried_after_it(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    fake_azure.fake.hold_operation(r"/onlineEndpoints/readm$", polls=4)
    busy_retries_fast(endpoints)

    after = endpoints.set_traffic("readm", {"blue": 0, "green": 100}, None)

    assert answered(fake_azure, 409) >= 1
    assert after.serving() == "green"
    assert {k: v for k, v in after.traffic.items() if v} == {"green": 100}


def test_a_write_refused_past_the_deadline_says_what_runs_and_what_to_do(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    fake_azure.fake.hold_operation(r"/onlineEndpoints/readm$")  # until released
    busy_retries_fast(endpoints, deadline=0.3)

    with pytest.raises(ResourceBusy) as raised:
        endpoints.set_traffic("readm", {"blue": 0, "green": 100}, None)

    message = str(raised.value)
    assert message.startswith("set traffic of readm")
    assert re.search(
        r"another operation on endpoint readm in workspace \S+ is still running", message
    )
    assert "it is Updating" in message and "OperationDuplicationConflict" in message
    assert "wait for it to end or cancel it there, then re-run" in message
    assert raised.value.status == 409
    assert endpoints.get_endpoint("readm").serving() == "blue"
    fake_azure.fake.release_operations()
    assert endpoints.set_traffic("readm", {"blue": 0, "green": 100}, None).serving() == "green"


def test_a_deployment_held_past_the_deadline_is_not_reported_as_failing_to_provision(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    fake_azure.fake.hold_operation(r"/deployments/green$")
    busy_retries_fast(endpoints, deadline=0.3)

    with pytest.raises(ResourceBusy, match="deployment green of endpoint readm .* is Updating"):
        endpoints.create_or_update_deployment(
            "readm", "green", register(endpoints.workspace, model_dir, "run-c"), model_dir
        )


def test_other_409s_keep_their_meaning_and_are_not_waited_on(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoints = deployed(fake_azure, model_dir)
    fake_azure.fake.inject(
        409,
        "Conflict",
        "Endpoint name readm is taken in this region.",
        path_pattern="/readm$",
        method="PUT",
    )

    with pytest.raises(AzureOperationFailed, match="409 Conflict: Endpoint name readm is taken"):
        endpoints.set_traffic("readm", {"blue": 0, "green": 100}, None)

    assert answered(fake_azure, 409) == 1


def raw(azure: AzureUnderTest, method: str, path: str, body: object = None) -> HttpResponse:
    """One ARM request as any client sends it: a bearer token, nothing else."""
    client = PipelineClient(
        "https://management.azure.com",
        policies=[
            BearerTokenCredentialPolicy(azure.credential, "https://management.azure.com/.default")
        ],
        transport=azure.fake.transport(),
    )
    url = f"https://management.azure.com{path}?api-version=2023-04-01-preview"
    return client.send_request(HttpRequest(method, url, json=body))


def deployed_readm(azure: AzureUnderTest, model_dir: Path) -> str:
    """`deployed`, and the ARM path of its endpoint readm (for `raw` requests)."""
    deployed(azure, model_dir)
    ws = azure.topology.environment("test").workspace
    return f"{azure.fake.workspace(ws).arm_id}/onlineEndpoints/readm"


def test_the_fake_answers_409_to_a_write_while_an_operation_on_the_resource_runs(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoint = deployed_readm(fake_azure, model_dir)
    ws = fake_azure.topology.environment("test").workspace
    body = raw(fake_azure, "GET", endpoint).json()
    fake_azure.fake.hold_operation(r"/onlineEndpoints/readm$")

    refused = raw(fake_azure, "PUT", endpoint, body)

    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (error["code"], error["message"]) == ("Conflict", "Conflict")
    assert error["details"][0]["code"] == "OperationDuplicationConflict"
    assert error["details"][0]["message"] == (
        "Conflict of operation, another operation on same entity is already running in "
        f"workspace {ws}."
    )
    assert raw(fake_azure, "DELETE", endpoint).status_code == 409
    read = raw(fake_azure, "GET", endpoint)
    assert (read.status_code, read.json()["properties"]["provisioningState"]) == (200, "Updating")
    # a read-only action is answered as ever (aad_token endpoints get no AML token: 400)
    assert raw(fake_azure, "POST", f"{endpoint}/token").status_code == 400
    fake_azure.fake.release_operations()
    assert raw(fake_azure, "PUT", endpoint, body).status_code == 201


def test_an_endpoint_and_its_deployments_block_each_other_only_through_a_delete(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoint = deployed_readm(fake_azure, model_dir)
    green = raw(fake_azure, "GET", f"{endpoint}/deployments/green").json()
    assert raw(fake_azure, "PUT", f"{endpoint}/deployments/green", green).status_code == 200

    # green's update runs (nobody polls it): the endpoint it belongs to cannot be deleted,
    # but the endpoint itself (its traffic) is another entity
    assert raw(fake_azure, "DELETE", endpoint).status_code == 409
    body = raw(fake_azure, "GET", endpoint).json()
    assert raw(fake_azure, "PUT", endpoint, body).status_code == 201


def test_while_an_endpoint_is_deleted_its_deployments_cannot_be_written(
    fake_azure: AzureUnderTest, model_dir: Path
) -> None:
    endpoint = deployed_readm(fake_azure, model_dir)
    green = raw(fake_azure, "GET", f"{endpoint}/deployments/green").json()

    assert raw(fake_azure, "DELETE", endpoint).status_code == 202  # its operation runs

    assert raw(fake_azure, "PUT", f"{endpoint}/deployments/green", green).status_code == 409
    assert raw(fake_azure, "DELETE", f"{endpoint}/deployments/green").status_code == 409
    assert raw(fake_azure, "GET", f"{endpoint}/deployments/green").status_code == 200
