"""The audit trail on Azure: append blobs in a WORM container, through the real storage SDK.

The container and its immutability policy are what Resource Manager deploys (a compiled
template through the fake's template engine); records are written by `audit.record` on
the azure backend and read back by `read_audit_log`; an attacker holding the same role uses the
storage SDK directly and is refused as Azure refuses it (409 BlobImmutableDueToPolicy).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, ContainerClient
from prefect import flow
from prefect.client.schemas.objects import StateType
from prefect.states import State
from typer.testing import CliRunner

import backends
from audit import read_audit_log, record
from backends.azure.audit import open_audit_trail
from backends.azure.clients import connection
from backends.topology import load_topology
from records import lineage_tags
from records.audit import AuditRecord, AuditWriteFailed
from records.workspace import ModelVersion
from tasks.release.approval import ask_for_approval
from tasks.release.promotion import promote_to_shared_registry
from tests.azure.conftest import FAST_RETRIES, AzureUnderTest, empty_fake
from tests.azure.fake.storage import AppendBlob
from tests.azure.fake_arm import FakeAzureML
from tests.integration.release_helpers import decide_when_paused

ORCHESTRATION = load_topology().require_orchestration()
ACCOUNT = ORCHESTRATION.storage_account
AUDIT = ORCHESTRATION.audit_container
MONTH = f"records/{datetime.now(UTC):%Y-%m}.jsonl"


def storage_template(allow_protected_append_writes: bool = True) -> dict:
    """The audit container under a time-based retention policy, as a compiled Bicep template
    declares them (the shape infra/shared.bicep compiles to)."""
    account = "[parameters('account')]"
    return {
        "$schema": "https://schema.management.azure.com/schemas/2018-05-01/"
        "subscriptionDeploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"account": {"type": "string"}, "container": {"type": "string"}},
        "resources": [
            {
                "type": "Microsoft.Resources/resourceGroups",
                "apiVersion": "2024-03-01",
                "name": ORCHESTRATION.resource_group,
                "location": ORCHESTRATION.location,
            },
            {
                "type": "Microsoft.Resources/deployments",
                "apiVersion": "2024-03-01",
                "name": "audit-storage",
                "resourceGroup": ORCHESTRATION.resource_group,
                "properties": {
                    "mode": "Incremental",
                    "expressionEvaluationOptions": {"scope": "inner"},
                    "parameters": {
                        "account": {"value": account},
                        "container": {"value": "[parameters('container')]"},
                    },
                    "template": {
                        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                        "deploymentTemplate.json#",
                        "contentVersion": "1.0.0.0",
                        "parameters": {
                            "account": {"type": "string"},
                            "container": {"type": "string"},
                        },
                        "resources": [
                            {
                                "type": "Microsoft.Storage/storageAccounts",
                                "apiVersion": "2025-01-01",
                                "name": account,
                                "location": ORCHESTRATION.location,
                                "kind": "StorageV2",
                                "sku": {"name": "Standard_GRS"},
                            },
                            {
                                "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
                                "apiVersion": "2025-01-01",
                                "name": "[format('{0}/default/{1}', parameters('account'), "
                                "parameters('container'))]",
                                "properties": {"publicAccess": "None"},
                            },
                            {
                                "type": "Microsoft.Storage/storageAccounts/blobServices/"
                                "containers/immutabilityPolicies",
                                "apiVersion": "2025-01-01",
                                "name": "[format('{0}/default/{1}/default', "
                                "parameters('account'), parameters('container'))]",
                                "properties": {
                                    "immutabilityPeriodSinceCreationInDays": 2555,
                                    "allowProtectedAppendWrites": allow_protected_append_writes,
                                },
                            },
                        ],
                    },
                },
            },
        ],
    }


def deploy_storage(fake: FakeAzureML, allow_protected_append_writes: bool = True) -> None:
    fake.deploy_template(
        storage_template(allow_protected_append_writes),
        {"account": {"value": ACCOUNT}, "container": {"value": AUDIT}},
        ORCHESTRATION.subscription_id,
        ORCHESTRATION.location,
        "audit-storage",
    )


@pytest.fixture
def storage(mlops_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzureML]:
    """A fake Azure holding only what the audit trail needs, the azure backend selected."""
    with empty_fake(monkeypatch) as (fake, _):
        yield fake


def attacker(name: str) -> BlobClient:
    """The storage SDK on the flows' own credential: the same data role the writer has."""
    conn = connection()
    return ContainerClient(
        ORCHESTRATION.account_url, AUDIT, credential=conn.credential, transport=conn.transport
    ).get_blob_client(name)


# --- records land and read back ----------------------------------------------------------------


def test_deploying_the_container_and_its_policy_puts_the_container_under_worm(
    storage: FakeAzureML,
) -> None:
    deploy_storage(storage)

    assert storage.blobs[(ACCOUNT, AUDIT)] == {}
    policy = storage.immutability_policies[(ACCOUNT, AUDIT)]
    assert (policy.days, policy.allow_protected_append_writes) == (2555, True)


def test_records_land_in_the_months_append_blob_one_block_each_and_read_back_in_order(
    storage: FakeAzureML,
) -> None:
    deploy_storage(storage)

    written = [
        record("approved", "ivan", "mlr-readmission-shared/readmission", "evidence reviewed"),
        record("promoted", "ivan", "mlr-readmission-shared/readmission/v3", "approved"),
        record("traffic", "release-flow", "prod/readm", "step 1", {"traffic": {"green": 10}}),
    ]

    blob = storage.blobs[(ACCOUNT, AUDIT)][MONTH]
    assert isinstance(blob, AppendBlob) and blob.blocks == 3
    assert len(blob.data.decode().splitlines()) == 3
    assert read_audit_log() == written
    creates = [
        r
        for r in storage.requests
        if r.method == "PUT" and r.path.endswith(MONTH) and "comp" not in r.query
    ]
    assert len(creates) == 1  # created once, on the month's first record, and only if missing
    assert creates[0].headers.get("x-ms-blob-type") == "AppendBlob"
    assert creates[0].headers.get("If-None-Match") == "*"
    assert attacker(MONTH).get_blob_properties().blob_type == "AppendBlob"


def test_months_are_separate_blobs_read_in_order(storage: FakeAzureML) -> None:
    deploy_storage(storage)
    trail = open_audit_trail(load_topology())
    october = AuditRecord("approved", "ivan", "a", "r", at="2026-10-31T23:59:59+00:00")
    november = AuditRecord("promoted", "ivan", "a", "r", at="2026-11-01T00:00:00+00:00")

    trail.append(november)
    trail.append(october)

    assert sorted(storage.blobs[(ACCOUNT, AUDIT)]) == [
        "records/2026-10.jsonl",
        "records/2026-11.jsonl",
    ]
    assert trail.read() == [october, november]


def test_a_writer_that_lost_the_race_to_create_the_month_appends_to_the_winners_blob(
    storage: FakeAzureML,
) -> None:
    deploy_storage(storage)
    first = record("approved", "ivan", "release-1", "ok")
    # the second writer looked before the first had created the blob: its append finds none
    storage.fail_blob_requests(404, "BlobNotFound", comp="appendblock")

    second = record("approved", "olga", "release-2", "ok")

    assert read_audit_log() == [first, second]  # its create was refused; nothing replaced
    refused = [r for r in storage.requests if r.status == 409]
    assert len(refused) == 1 and refused[0].headers.get("If-None-Match") == "*"


def test_mlops_audit_prints_the_azure_trail(
    storage: FakeAzureML, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_cli import main

    deploy_storage(storage)
    record("approved", "ivan", "mlr-readmission-shared/readmission", "evidence reviewed")
    # the CLI's console took its width when first imported, maybe by another test: wide here
    monkeypatch.setattr(main.console, "width", 200)

    shown = CliRunner().invoke(main.app, ["audit"])

    assert shown.exit_code == 0, shown.output
    assert "approved" in shown.output and "evidence reviewed" in shown.output


# --- nobody rewrites the trail ---------------------------------------------------------------


def test_a_record_blob_cannot_be_overwritten_reset_or_deleted_by_anyone(
    storage: FakeAzureML,
) -> None:
    deploy_storage(storage)
    kept = [record("approved", "ivan", "release-1", "evidence reviewed")]
    blob = attacker(MONTH)

    attempts = {
        "overwrite": lambda: blob.upload_blob(b'{"action": "rejected"}\n', overwrite=True),
        "reset": lambda: blob.create_append_blob(),
        "metadata": lambda: blob.set_blob_metadata({"edited": "yes"}),
        "delete": lambda: blob.delete_blob(),
    }
    refused = {}
    for what, attempt in attempts.items():
        with pytest.raises(HttpResponseError) as error:
            attempt()
        refused[what] = (error.value.status_code, error.value.error_code)

    assert set(refused.values()) == {(409, "BlobImmutableDueToPolicy")}, refused
    assert read_audit_log() == kept
    kept.append(record("promoted", "ivan", "release-1", "approved"))  # appending still works
    assert read_audit_log() == kept


def test_a_create_if_missing_never_replaces_an_existing_blob_even_without_a_policy(
    storage: FakeAzureML,
) -> None:
    storage.blobs[(ACCOUNT, AUDIT)] = {}  # a container with no immutability policy
    kept = [record("approved", "ivan", "release-1", "ok")]

    with pytest.raises(ResourceExistsError, match="BlobAlreadyExists"):
        attacker(MONTH).create_append_blob(match_condition=MatchConditions.IfMissing)
    with pytest.raises(ResourceExistsError, match="BlobAlreadyExists"):
        attacker(MONTH).upload_blob(b"forged\n")  # overwrite=False sends If-None-Match: *
    assert read_audit_log() == kept


def test_without_protected_append_writes_no_record_can_be_written_and_the_error_says_why(
    storage: FakeAzureML,
) -> None:
    """The month's blob is created empty and protected at once: only a policy that allows
    protected append writes lets records into it (infra/shared.bicep sets it)."""
    deploy_storage(storage, allow_protected_append_writes=False)

    with pytest.raises(AuditWriteFailed, match="409 BlobImmutableDueToPolicy"):
        record("approved", "ivan", "release-1", "ok")
    assert storage.blobs[(ACCOUNT, AUDIT)][MONTH].data == b""


# --- a record that cannot be written stops the step ----------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "says"),
    [
        (403, "AuthorizationPermissionMismatch", "Storage Blob Data Contributor"),
        (500, "InternalError", "after the storage SDK's retries"),
    ],
)
def test_a_record_that_cannot_be_written_raises_naming_the_store_and_the_reason(
    storage: FakeAzureML, status: int, code: str, says: str
) -> None:
    deploy_storage(storage)
    storage.fail_blob_requests(status, code, times=FAST_RETRIES.status + 1, comp="appendblock")

    with pytest.raises(AuditWriteFailed) as failed:
        record("approved", "ivan", "release-1", "ok")

    message = str(failed.value)
    assert f"{ORCHESTRATION.account_url}/{AUDIT}/{MONTH}" in message
    assert f"Azure answered {status} {code}" in message and says in message
    assert "the step was not taken" in message


def test_without_the_container_the_record_says_to_deploy_the_shared_infrastructure(
    storage: FakeAzureML,
) -> None:
    with pytest.raises(AuditWriteFailed, match="404 ContainerNotFound.*infra/shared.bicep"):
        record("approved", "ivan", "release-1", "ok")


@flow(name="audit-gate")
def approve_then_promote(model: ModelVersion) -> ModelVersion | State:
    """The release's promotion gate: the decision is recorded, then acted on."""
    decision = ask_for_approval(
        "mlr-readmission-shared/readmission", "evidence", "promotion-approval", 60, 1, "prod"
    )
    if isinstance(decision, State):
        return decision
    return promote_to_shared_registry("test", model, decision)


@pytest.mark.parametrize("writable", [True, False], ids=["recorded", "unrecordable"])
def test_an_approval_that_cannot_be_recorded_promotes_nothing(
    fake_azure: AzureUnderTest,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    writable: bool,
) -> None:
    monkeypatch.setenv("MLOPS_BACKEND", "azure")
    assert (ACCOUNT, AUDIT) in fake_azure.fake.immutability_policies  # infra/shared.bicep's
    test = backends.workspace("test")
    model = test.register_model(
        "readmission", str(model_dir), "train-run-a", {lineage_tags.PIPELINE_RUN_ID: "run-a"}, ""
    )
    if not writable:
        fake_azure.fake.fail_blob_requests(403, "AuthorizationPermissionMismatch", times=99)
    decide_when_paused("audit-gate", True, "ivan", "evidence reviewed")

    state = approve_then_promote(model, return_state=True)

    registry = backends.shared_registry()
    if writable:
        assert state.type == StateType.COMPLETED, state.message
        assert [r.action for r in read_audit_log()] == ["approved", "promoted"]
        assert [v.version for v in registry.list_model_versions("readmission")] == ["1"]
        return
    assert state.type == StateType.FAILED
    assert "could not append the 'approved' record" in str(state.message)
    with pytest.raises(AuditWriteFailed, match="403 AuthorizationPermissionMismatch"):
        state.result()
    assert registry.list_model_versions("readmission") == []  # nothing was promoted
    fake_azure.fake.blob_faults.clear()
    assert read_audit_log() == []  # and no approval stands in the trail
