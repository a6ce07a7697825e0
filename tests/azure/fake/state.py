"""What the fake Azure holds: blobs, long-running operations, workspaces and registries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from tests.azure.fake.http import (
    PROVIDER,
    Reply,
)

# --- what the fake follows ------------------------------------------------------------------

# the recordings (/work/shared/azure-recordings) routes cite as "recording:<file>#<entries>"
DATA_RECORDING = "recording:test_data.pyTestDatatest_create_uri_file.json"
MODEL_CRUD_RECORDING = "recording:test_model.pyTestModeltest_crud_file.json"
MODEL_REGISTRY_RECORDING = (
    "recording:test_model.pyTestModeltest_create_get_download_model_registry.json"
)
PROMOTE_IMPORT_RECORDING = "recording:test_model.pyTestModeltest_promote_model[import].json"
ENDPOINT_RECORDING = (
    "recording:test_online_endpoint.pyTestOnlineEndpointtest_online_endpoint_e2e.json"
)
DEPLOYMENT_RECORDING = (
    "recording:test_online_deployment.pyTestOnlineDeploymenttest_online_deployment_create.json"
)
PIPELINE_RECORDING = (
    "recording:test_pipeline_job.pyTestPipelineJobLongRunning"
    "test_pipeline_job_child_run_download.json"
)
PIPELINE_REGISTRY_RECORDING = (
    "recording:test_pipeline_job.pyTestPipelineJobtest_pipeline_job_create_with_registries.json"
)
COMPONENT_REGISTRY_RECORDING = (
    "recording:test_component.pyTestComponenttest_component_create_get_list_from_registry.json"
)
ENVIRONMENT_REGISTRY_RECORDING = (
    "recording:test_environment.pyTestEnvironment"
    "test_registry_environment_create_conda_and_get.json"
)
BATCH_RECORDING = "recording:test_batch_endpoint.pyTestBatchEndpointtest_batch_invoke.json"


@dataclass(frozen=True)
class RouteSource:
    """What a route follows: a recording (`"recording:<file>#<entries>"`, entries as `1,4-6`)
    or a vendored REST API spec example (`"example:<file under fixtures/rest-api-examples>"`),
    or `None` and `why` (what the fake does, and that no recording or example shows it).
    `routed=False`: a handler dispatched outside the route table (blob storage, the endpoints'
    front door), whose `pattern` is a host and path template rather than a regex."""

    method: str
    pattern: str
    handler: str
    source: str | None
    why: str = ""
    routed: bool = True


# --- state ----------------------------------------------------------------------------------


@dataclass
class Blob:
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: '"0x' + uuid.uuid4().hex[:15].upper() + '"')
    created: str = field(default_factory=lambda: formatdate(usegmt=True))


class ProvisioningFailed(Exception):
    """Raised by an LRO's outcome: the operation ends Failed with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Lro:
    """A long-running operation: InProgress for `polls` status reads and while `pending()` says
    the work behind it (a container starting) goes on, then its outcome, which may raise
    ProvisioningFailed."""

    id: str
    kind: str  # "arm" (Azure-AsyncOperation status documents) or "assetstore" (registry)
    polls: int
    outcome: Callable[[], None] | None = None
    error: dict[str, Any] | None = None
    result_location: str | None = None
    status: str = "InProgress"
    started: str = field(default_factory=lambda: _now())
    pending: Callable[[], bool] | None = None
    # the status document as this operation's service answers it, when that differs from the
    # online endpoints' (batch.py, schedules.py: their recordings show other fields)
    document: Callable[[Lro, dict[str, Any]], dict[str, Any]] | None = None
    # (method, resource path) of the write that started it: Azure ML refuses other writes to
    # that resource while it runs (tests/azure/fake/conflicts.py)
    target: tuple[str, str] | None = None


@dataclass
class Workspace:
    subscription: str
    resource_group: str
    name: str
    location: str
    guid: str
    storage_account: str
    datastore_credentials: str = "None"
    container_name: str | None = None
    data: dict[str, dict[str, dict]] = field(default_factory=dict)
    models: dict[str, dict[str, dict]] = field(default_factory=dict)
    codes: dict[str, dict[str, dict]] = field(default_factory=dict)
    environments: dict[str, dict[str, dict]] = field(default_factory=dict)
    components: dict[str, dict[str, dict]] = field(default_factory=dict)
    computes: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    deployments: dict[str, dict[str, dict]] = field(default_factory=dict)
    batch_endpoints: dict[str, dict] = field(default_factory=dict)
    batch_deployments: dict[str, dict[str, dict]] = field(default_factory=dict)
    # the user-assigned identity the service gives a batch endpoint created without one (the
    # recorded endpoint got the test region's identity); None: a system-assigned one
    batch_identity: str | None = None
    schedules: dict[str, dict] = field(default_factory=dict)

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.name}"
        )

    @property
    def container(self) -> str:
        return self.container_name or f"azureml-blobstore-{self.guid}"


@dataclass
class Registry:
    subscription: str
    resource_group: str
    name: str
    location: str
    guid: str
    storage_account: str
    container_name: str | None = None
    models: dict[str, dict[str, dict]] = field(default_factory=dict)
    codes: dict[str, dict[str, dict]] = field(default_factory=dict)
    environments: dict[str, dict[str, dict]] = field(default_factory=dict)
    components: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def container(self) -> str:
        return self.container_name or f"{self.name.lower()}-{self.guid}"


def stored_component_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A componentSpec as the service keeps and returns it, in workspaces and registries alike
    (test_pipeline_job...create_with_registries #6, test_component...registry #10): the SDK's
    private `_source` dropped, booleans as "True"/"False" strings, every input's `optional`
    spelled out, a command's `resources` defaulted. Not the `$schema` the 2022 service added
    (componentsdk.azureedge.net/.../CommandComponent.json): azure-ai-ml 1.35.2 takes that
    schema for an internal component and refuses to read the component back."""
    stored = {k: v for k, v in spec.items() if not k.startswith("_")}
    if isinstance(stored.get("is_deterministic"), bool):
        stored["is_deterministic"] = str(stored["is_deterministic"])
    inputs = {}
    for name, port in (stored.get("inputs") or {}).items():
        port = {k: str(v) if isinstance(v, bool) else v for k, v in port.items()}
        port.setdefault("optional", "False")
        inputs[name] = port
    if "inputs" in stored:
        stored["inputs"] = inputs
    if stored.get("type", "command") == "command":
        stored.setdefault("resources", {"instance_count": "1"})
    return stored


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _storage_id(subscription: str, resource_group: str, account: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.Storage/storageAccounts/{account}"
    )


def system_data() -> dict[str, str]:
    now = _now()
    return {
        "createdAt": now,
        "createdBy": "fake-user",
        "createdByType": "User",
        "lastModifiedAt": now,
        "lastModifiedBy": "fake-user",
        "lastModifiedByType": "User",
    }


# --- the fake service ------------------------------------------------------------------------

Handler = Callable[..., Reply]
SCOPE = r"/subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/providers/" + PROVIDER
WS = SCOPE + r"/workspaces/(?P<ws>[^/]+)"
REG = r"/mferp/managementfrontend" + SCOPE + r"/registries/(?P<reg>[^/]+)"
