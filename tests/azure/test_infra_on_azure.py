"""The Bicep on the azure backend: compile, what-if and deploy through
azure-mgmt-resource-deployments against the fake Resource Manager, and the infra flow with its
prod approval.

The Bicep CLI cannot be installed here (FACTS.md), so `MLOPS_BICEP` points at a stand-in
(tests/azure/fixtures/bicep/bicep) that returns compiled-template fixtures in the shape
`bicep build` emits for infra/main.bicep and infra/shared.bicep; the parameter values come from
the real infra/parameters/*.bicepparam. Everything after compiling is the real SDK, its LRO
pollers and retry policy, and the fake's template engine (tests/azure/fake/arm_templates.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

from audit import read_audit_log
from backends.azure.errors import AzureOperationFailed
from backends.azure.infrastructure import (
    AzureInfrastructure,
    BicepCliMissing,
    InfraDeploymentFailed,
)
from backends.topology import load_topology
from flows.infra import deploy_infra
from tests.azure.conftest import empty_fake
from tests.azure.fake_arm import FakeAzureML, StaticTokenCredential
from tests.integration.release_helpers import decide_when_paused

STAND_IN_BICEP = Path(__file__).resolve().parent / "fixtures" / "bicep" / "bicep"
CHECKOV = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture
def empty_subscription(
    mlops_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeAzureML, StaticTokenCredential]]:
    """A fake Azure with nothing deployed yet, the azure backend selected by name."""
    monkeypatch.setenv("MLOPS_BICEP", str(STAND_IN_BICEP))
    with empty_fake(monkeypatch) as subscription:
        yield subscription


def infrastructure() -> AzureInfrastructure:
    import backends

    infra = backends.infrastructure()
    assert isinstance(infra, AzureInfrastructure)
    return infra


FLOWS_IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-readmission-shared"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-readmission-flows"
)


def flow_run_launcher_role() -> str:
    """The custom role's name: guid(subscription().id, resource group, 'flow-run-launcher')."""
    from tests.azure.fake.arm_templates import _guid

    return _guid(
        "/subscriptions/00000000-0000-0000-0000-000000000000",
        "rg-readmission-shared",
        "flow-run-launcher",
    )


def actions(plan) -> dict[str, str]:  # noqa: ANN001
    return {f"{c.kind} {c.resource}": c.action for c in plan.changes}


def test_a_missing_bicep_cli_names_the_install_step(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("MLOPS_BICEP")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))

    with pytest.raises(BicepCliMissing, match="az bicep install"):
        infrastructure().what_if("dev")
    assert empty_subscription[0].requests == []  # nothing was sent


def test_shared_then_dev_deploys_and_a_second_plan_changes_nothing(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, credential = empty_subscription
    infra = infrastructure()

    shared = infra.what_if("shared")
    planned_shared = actions(shared)
    assert {k: v for k, v in planned_shared.items() if v != "unknown"} == {
        "Microsoft.Resources/resourceGroups rg-readmission-shared": "create",
        f"Microsoft.Authorization/roleDefinitions {flow_run_launcher_role()}": "create",
        "Microsoft.MachineLearningServices/registries mlr-readmission-shared": "create",
        "Microsoft.Storage/storageAccounts streadmissionflows": "create",
        "Microsoft.Storage/storageAccounts/blobServices default": "create",
        "Microsoft.Storage/storageAccounts/blobServices/containers prefect-results": "create",
        "Microsoft.Storage/storageAccounts/blobServices/containers audit-trail": "create",
        "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies default": (
            "create"
        ),
        "Microsoft.ContainerRegistry/registries crreadmissionflows": "create",
        "Microsoft.ManagedIdentity/userAssignedIdentities id-readmission-flows": "create",
        "Microsoft.ManagedIdentity/userAssignedIdentities id-readmission-worker": "create",
    }
    # the flows' and the worker's grants need principal IDs that exist only once they do
    assert list(planned_shared.values()).count("unknown") == 6
    infra.deploy("shared")
    shared_roles = {
        r["id"]: r["properties"]["principalId"]
        for r in fake.arm_resources.values()
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    }
    flows = fake.arm_resources[FLOWS_IDENTITY.lower()]["properties"]["principalId"]
    assert list(shared_roles.values()).count(flows) == 4  # acr, two containers, registry

    plan = infra.what_if("dev")
    planned = actions(plan)
    assert planned["Microsoft.MachineLearningServices/workspaces mlw-readmission-dev"] == "create"
    assert planned["Microsoft.MachineLearningServices/workspaces/computes cpu-cluster"] == "create"
    # role assignment names need principal IDs that exist only once the workspace does
    assert "unknown" in planned.values()
    infra.deploy("dev")

    storage = next(
        r
        for r in fake.arm_resources.values()
        if r["type"] == "Microsoft.Storage/storageAccounts" and "rg-readmission-dev" in r["id"]
    )
    assert storage["properties"]["allowSharedKeyAccess"] is False
    assert storage["properties"]["minimumTlsVersion"] == "TLS1_2"
    assert storage["name"].startswith("streadmissiondev") and len(storage["name"]) <= 24
    roles = [
        r
        for r in fake.arm_resources.values()
        if r["type"] == "Microsoft.Authorization/roleAssignments" and r["id"] not in shared_roles
    ]
    # compute: blob, acr, key vault; workspace: the shared registry; flows identity: AzureML
    # Data Scientist and Monitoring Reader on the workspace, blob data on its storage
    assert len(roles) == 7
    registry_role = next(r for r in roles if "MachineLearningServices/registries/" in r["id"])
    assert "rg-readmission-shared" in registry_role["id"]  # the cross-resource-group grant
    assert "mlw-readmission-dev" in fake.workspaces  # usable by the AML routes now
    assert "cpu-cluster" in fake.workspace("mlw-readmission-dev").computes

    count = len(fake.arm_resources)
    again = infra.what_if("dev")
    assert not again.has_changes(), [c for c in again.changes if c.action != "no change"]
    infra.deploy("dev")
    assert len(fake.arm_resources) == count  # re-deploying converges: same names, no duplicates
    assert sorted(fake.arm_deployments) == ["mlops-dev", "mlops-shared"]

    tokens = set(credential.issued.values())
    for request in fake.requests:
        auth = {k.lower(): v for k, v in request.headers.items()}["authorization"]
        assert auth.startswith("Bearer ") and auth[7:] in tokens
        assert b"AccountKey" not in request.body and "sig=" not in request.url


def test_drift_made_outside_the_bicep_shows_as_a_modification(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, _ = empty_subscription
    infra = infrastructure()
    infra.deploy("shared")
    infra.deploy("dev")
    compute = next(
        r for r in fake.arm_resources.values() if r["id"].endswith("/computes/cpu-cluster")
    )
    compute["properties"]["properties"]["scaleSettings"]["maxNodeCount"] = 8  # changed by hand

    plan = infra.what_if("dev")

    changed = [c for c in plan.changes if c.action != "no change"]
    assert [(c.resource, c.action) for c in changed] == [("cpu-cluster", "modify")]
    assert "scaleSettings.maxNodeCount: 8 -> 2" in changed[0].detail


def test_an_environment_before_the_shared_registry_fails_clearly_then_converges(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, _ = empty_subscription
    infra = infrastructure()

    with pytest.raises(AzureOperationFailed, match="ResourceGroupNotFound.*rg-readmission-shared"):
        infra.deploy("dev")
    assert fake.arm_resources == {}  # refused by the what-if before anything was deployed

    infra.deploy("shared")
    infra.deploy("dev")
    assert fake.arm_deployments["mlops-dev"]["properties"]["provisioningState"] == "Succeeded"


def test_a_resource_that_fails_to_provision_is_named_and_a_rerun_converges(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, _ = empty_subscription
    infra = infrastructure()
    infra.deploy("shared")
    fake.fail_resource(
        "cpu-cluster",
        "QuotaExceeded",
        "Operation could not be completed as it results in "
        "exceeding approved standardDSv2Family Cores quota.",
    )

    with pytest.raises(InfraDeploymentFailed) as failed:
        infra.deploy("dev")
    assert "QuotaExceeded" in str(failed.value) and "cpu-cluster" in str(failed.value)
    assert fake.arm_deployments["mlops-dev"]["properties"]["provisioningState"] == "Failed"

    infra.deploy("dev")
    assert fake.arm_deployments["mlops-dev"]["properties"]["provisioningState"] == "Succeeded"
    assert not infra.what_if("dev").has_changes()


def test_throttled_deployments_are_retried_with_retry_after(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, _ = empty_subscription
    fake.throttle(4, retry_after=0, path_pattern=r"Microsoft\.Resources/deployments")

    infrastructure().deploy("shared")

    statuses = [r.status for r in fake.requests if "Microsoft.Resources/deployments" in r.path]
    assert statuses.count(429) == 4
    assert fake.arm_deployments["mlops-shared"]["properties"]["provisioningState"] == "Succeeded"


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov venv missing: make checkov-venv")
def test_the_infra_flow_on_azure_waits_for_approval_before_prod(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
) -> None:
    fake, _ = empty_subscription
    decisions: list[str] = []
    thread = decide_when_paused(
        "infra",
        True,
        "ivan",
        "plan reviewed in change window",
        seen=decisions,
        look=lambda: str(fake.arm_deployments.get("mlops-prod")),
    )
    state = deploy_infra(environment="all", return_state=True)
    thread.join(timeout=10)

    assert state.type == StateType.COMPLETED, state.message
    assert decisions == ["None"]  # nothing was deployed to prod before the approval
    assert [p.environment for p in state.result()] == ["shared", "dev", "test", "prod"]
    assert sorted(fake.arm_deployments) == ["mlops-dev", "mlops-prod", "mlops-shared", "mlops-test"]
    assert any(
        r["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
        for r in fake.arm_resources.values()
    )  # prod's endpoint identity, and its grant on the shared registry
    prod_audit = [
        r for r in read_audit_log() if r.action == "infra-deployed" and r.subject == "prod"
    ]
    assert prod_audit and prod_audit[-1].actor == "ivan"
    assert load_topology().backend == "azure"


@pytest.mark.parametrize(
    ("environment", "section", "key", "renamed", "refusal"),
    [
        (
            "test",
            ("environments", "test"),
            "workspace",
            "mlw-renamed-test",
            "workspaceName = 'mlw-readmission-test'.*mlw-renamed-test",
        ),
        (  # shared.bicep makes the flows' storage too: the audit trail would go nowhere
            "shared",
            ("orchestration",),
            "audit_container",
            "audit-renamed",
            "auditContainerName = 'audit-trail'.*audit-renamed",
        ),
    ],
)
def test_a_parameter_file_that_disagrees_with_the_topology_is_refused_before_azure(
    empty_subscription: tuple[FakeAzureML, StaticTokenCredential],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    environment: str,
    section: tuple[str, ...],
    key: str,
    renamed: str,
    refusal: str,
) -> None:
    import yaml

    from backends.topology import DEFAULT_TOPOLOGY

    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    target = raw
    for part in section:
        target = target[part]
    target[key] = renamed
    topology = tmp_path / "environments.yaml"
    topology.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_TOPOLOGY", str(topology))

    with pytest.raises(ValueError, match=refusal):
        infrastructure().what_if(environment)
    assert empty_subscription[0].requests == []
