"""A fake of the Azure ML REST API (ARM, registry data plane, blob storage) at the HTTP layer.

`FakeAzureML` keeps state in memory (workspaces, datastores and their blobs, data, models,
code/environment/component assets, jobs, online endpoints and deployments, registries) and
answers the requests azure-ai-ml 1.35.2 sends, in the shapes Azure sends back (checked against
/work/shared/azure-recordings by tests/azure/test_recordings.py). `FakeArmTransport` is an
azure-core `HttpTransport` (a `RequestsTransport` whose session answers in memory), so the real
SDK, its retry policy and its LRO pollers run unchanged on top of it.

This module holds the state, the routing and the fault switches (`throttle`, `inject`,
`fail_next_lro`, `conflict_on_share`, `fail_deployment`, `fail_resource`, `crash_when_live`);
each service area lives in tests/azure/fake/ (workspaces, storage, operations, endpoints,
registries, jobs, Resource Manager deployments, the endpoints' front door in scoring.py and the
deployments' containers in containers.py). Every request is kept in `requests`, with the status
it got, for assertions.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.azure.fake.batch import BatchApi
from tests.azure.fake.batch_runs import BATCH_RUN_SOURCES
from tests.azure.fake.conflicts import ConflictApi
from tests.azure.fake.container_instances import ContainerInstanceApi
from tests.azure.fake.containers import Container, ContainerApi
from tests.azure.fake.deployments import DeploymentApi
from tests.azure.fake.endpoints import EndpointApi
from tests.azure.fake.http import (
    API_VERSIONS,
    PROVIDER,
    FakeArmTransport,
    Reply,
    SeenRequest,
    StaticTokenCredential,
    arm_error,
)
from tests.azure.fake.jobs import JobApi
from tests.azure.fake.operations import LroApi
from tests.azure.fake.registries import RegistryApi
from tests.azure.fake.schedules import ScheduleApi
from tests.azure.fake.scoring import FRONT_DOOR_SOURCES, ScoringApi
from tests.azure.fake.state import (
    COMPONENT_REGISTRY_RECORDING,
    DATA_RECORDING,
    DEPLOYMENT_RECORDING,
    ENDPOINT_RECORDING,
    ENVIRONMENT_REGISTRY_RECORDING,
    MODEL_CRUD_RECORDING,
    MODEL_REGISTRY_RECORDING,
    PIPELINE_RECORDING,
    PIPELINE_REGISTRY_RECORDING,
    PROMOTE_IMPORT_RECORDING,
    REG,
    WS,
    Blob,
    Handler,
    Lro,
    Registry,
    RouteSource,
    Workspace,
    system_data,
)
from tests.azure.fake.storage import BLOB_SOURCES, BlobApi
from tests.azure.fake.workspaces import WorkspaceApi

ML_EXAMPLE = "example:machinelearningservices.stable."
ARM_EXAMPLE = "example:resources.stable.2024-03-01."
# workspace asset routes: (kind, verb) -> source (None: the `why` in _add_routes)
ASSET_SOURCES = {
    ("data", "list"): ML_EXAMPLE + "2024-04-01.Workspace.DataVersionBase.list.json",
    ("data", "get"): DATA_RECORDING + "#5",
    ("data", "put"): DATA_RECORDING + "#4",
    ("model", "list"): MODEL_CRUD_RECORDING + "#0,7",
    ("model", "get"): MODEL_CRUD_RECORDING + "#6",
    ("model", "put"): MODEL_CRUD_RECORDING + "#5",
    ("code", "list"): DEPLOYMENT_RECORDING + "#7",
    ("code", "get"): DEPLOYMENT_RECORDING + "#8",
    ("code", "put"): PIPELINE_REGISTRY_RECORDING + "#5,11",
    ("environment", "list"): ML_EXAMPLE + "2024-04-01.Workspace.EnvironmentVersion.list.json",
    ("environment", "get"): ML_EXAMPLE + "2024-04-01.Workspace.EnvironmentVersion.get.json",
    ("environment", "put"): DEPLOYMENT_RECORDING + "#9",
    ("component", "list"): None,
    ("component", "get"): None,
    ("component", "put"): PIPELINE_REGISTRY_RECORDING + "#6,12",
}
NO_COMPONENT_READ = (
    "answers {what} of a workspace component in the shape of the recorded component PUT "
    "answers (test_pipeline_job_create_with_registries #6, #12); no recording reads a "
    "workspace component, and the 2024-04-01 spec has no ComponentVersion example"
)
# registry asset routes: (kind, verb) -> source
REGISTRY_SOURCES = {
    ("model", "list"): MODEL_REGISTRY_RECORDING + "#1",
    ("model", "get"): MODEL_REGISTRY_RECORDING + "#13-15",
    ("model", "put"): MODEL_REGISTRY_RECORDING + "#10",
    ("code", "list"): None,
    ("code", "get"): COMPONENT_REGISTRY_RECORDING + "#7",
    ("code", "put"): COMPONENT_REGISTRY_RECORDING + "#5",
    ("environment", "list"): None,
    ("environment", "get"): ENVIRONMENT_REGISTRY_RECORDING + "#11",
    ("environment", "put"): ENVIRONMENT_REGISTRY_RECORDING + "#2",
    ("component", "list"): COMPONENT_REGISTRY_RECORDING + "#12",
    ("component", "get"): COMPONENT_REGISTRY_RECORDING + "#10,11",
    ("component", "put"): COMPONENT_REGISTRY_RECORDING + "#8",
}
NO_REGISTRY_LIST = (
    "lists a registry's {kind} versions in the shape of the recorded registry component list "
    "(test_component_create_get_list_from_registry #12); no recording lists registry {kind}s"
)


class FakeAzureML(
    WorkspaceApi,
    BlobApi,
    BatchApi,  # before LroApi: reshapes the status documents of batch and schedule operations
    ScheduleApi,
    LroApi,
    EndpointApi,
    RegistryApi,
    JobApi,
    ScoringApi,
    ContainerApi,
    DeploymentApi,
    ContainerInstanceApi,
    ConflictApi,
):
    """The in-memory Azure ML control plane, registry data plane and blob storage."""

    def __init__(self, credential: StaticTokenCredential, location: str = "eastus2") -> None:
        self.credential = credential
        # tokens the fake's identity endpoints issued to managed identities: token -> the
        # identity's resource ID (see `accepts_token`)
        self.identity_tokens: dict[str, str] = {}
        self.location = location
        self.workspaces: dict[str, Workspace] = {}
        self.registries: dict[str, Registry] = {}
        self.blobs: dict[tuple[str, str], dict[str, Blob]] = {}  # (account, container) -> blobs
        self.lros: dict[str, Lro] = {}
        self.requests: list[SeenRequest] = []
        self.unhandled: list[SeenRequest] = []
        self.issued_sas: set[str] = set()
        self.lro_polls = 1  # status reads that answer InProgress before an LRO finishes
        self.job_polls = 1  # job reads that answer Running before a pipeline job finishes
        # experiment name -> {"step.output": local folder the fake job "writes" to storage}
        self.job_outputs: dict[str, dict[str, Path]] = {}
        self.job_failures: dict[str, str] = {}  # experiment name -> "step: error"
        # (workspace, endpoint, deployment) -> the container serving it (with serving on)
        self.containers: dict[tuple[str, str, str], Container] = {}
        self._failed_containers: dict[tuple[str, str, str], Container] = {}
        self._injected: list[list[Any]] = []
        self._failing_lros: list[tuple[re.Pattern[str], str]] = []
        self._share_conflicts = 0
        self._failing_deployments: dict[str, str] = {}
        self.crashes: dict[tuple[str, str], int] = {}  # (endpoint, deployment) -> live % it dies at
        self._job_progress: dict[str, int] = {}
        self._children: dict[str, list[tuple[str, str, str, str | None]]] = {}
        self._staged: dict[tuple[str, str, str], dict[str, bytes]] = {}
        # Resource Manager: resources by lower-cased ID, subscription deployments by name
        self.arm_resources: dict[str, dict[str, Any]] = {}
        self.arm_deployments: dict[str, dict[str, Any]] = {}
        self._failing_resources: dict[str, tuple[str, str]] = {}
        self._what_if_results: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        # what each route follows, in the routes' order, then the handlers dispatched outside
        # the table (blob storage, the endpoints' front door)
        self.route_sources: list[RouteSource] = []
        self._add_routes()

    # --- setup -----------------------------------------------------------------------------

    def transport(self) -> FakeArmTransport:
        return FakeArmTransport(self)

    def add_workspace(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        computes: tuple[str, ...] = (),
        location: str | None = None,
        storage_account: str | None = None,
        datastore_credentials: str = "None",
        container: str | None = None,
    ) -> Workspace:
        """A workspace; its datastores are identity-based (`None` credentials) unless told
        `AccountKey`, in which case `listSecrets` hands out a fake, fake-issued SAS."""
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{subscription}/{resource_group}/{name}"))
        ws = Workspace(
            subscription,
            resource_group,
            name,
            location or self.location,
            guid,
            storage_account=(storage_account or "st" + guid.replace("-", "")[:16]).lower(),
            datastore_credentials=datastore_credentials,
            container_name=container,
        )
        for compute in computes:
            ws.computes[compute] = self._compute(ws, compute)
        self.workspaces[name.lower()] = ws
        self.blobs[(ws.storage_account, ws.container)] = {}
        self.blobs[(ws.storage_account, f"azureml-{ws.guid}")] = {}
        return ws

    def add_registry(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        storage_account: str | None = None,
        container: str | None = None,
    ) -> Registry:
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"registry/{name}"))
        reg = Registry(
            subscription,
            resource_group,
            name,
            self.location,
            guid,
            storage_account=(storage_account or "streg" + guid.replace("-", "")[:14]).lower(),
            container_name=container,
        )
        self.registries[name.lower()] = reg
        self.blobs[(reg.storage_account, reg.container)] = {}
        return reg

    # --- faults ----------------------------------------------------------------------------

    def throttle(self, times: int, retry_after: int = 1, path_pattern: str = ".*") -> None:
        """Answer the next `times` ARM/registry requests matching `path_pattern` with 429 and
        `Retry-After` (as ARM does when a subscription's read/write budget is spent)."""
        self.inject(
            429,
            "TooManyRequests",
            "The request is being throttled.",
            times,
            path_pattern,
            {"Retry-After": str(retry_after)},
        )

    def inject(
        self,
        status: int,
        code: str,
        message: str,
        times: int = 1,
        path_pattern: str = ".*",
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` matching ARM/registry requests with this error instead."""
        self._injected.append(
            [re.compile(path_pattern), times, status, code, message, headers or {}, method]
        )

    def fail_next_lro(self, path_pattern: str, message: str = "Internal failure") -> None:
        """The next LRO started by a request matching `path_pattern` ends Failed."""
        self._failing_lros.append((re.compile(path_pattern), message))

    def conflict_on_share(self, times: int = 1) -> None:
        """The registry import completes but the client is told 409 (a retried request whose
        first attempt went through: what a client sees after a timeout)."""
        self._share_conflicts += times

    def fail_deployment(self, deployment: str, message: str) -> None:
        """A deployment of this name fails to provision (e.g. the model does not load)."""
        self._failing_deployments[deployment] = message

    # --- dispatch --------------------------------------------------------------------------

    def handle(self, request: SeenRequest) -> Reply:
        if self.is_scoring_request(request):  # forwarded to a container: not under the lock
            with self._lock:
                self.requests.append(request)
            reply = self.score_request(request)
            request.status = reply.status
            return reply
        with self._lock:
            self.requests.append(request)
            reply = self._dispatch(request)
            request.status = reply.status
            return reply

    def _dispatch(self, request: SeenRequest) -> Reply:
        host = request.host
        if host.endswith(".blob.core.windows.net"):
            return self._blob(request)
        # the SDK sends discovery without a token; a managed identity's endpoint has none
        anonymous = request.path == "/discovery" or request.path.endswith(
            "/metadata/identity/oauth2/token"
        )
        denied = None if anonymous else self._check_auth(request)
        if denied is not None:
            return denied
        injected = self._injected_reply(request)
        if injected is not None:
            return injected
        busy = self._refused_while_running(request)  # Azure ML's 409: see fake/conflicts.py
        if busy is not None:
            return busy
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return handler(request, **match.groupdict())
        self.unhandled.append(request)
        return arm_error(
            400,
            "FakeUnsupported",
            f"the fake does not implement {request.method} {request.path}",
        )

    def _check_auth(self, request: SeenRequest) -> Reply | None:
        header = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if self.accepts_token(header):
            return None
        return Reply(
            401,
            {"error": {"code": "AuthenticationFailed", "message": "Bearer token missing/invalid"}},
            {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/"'},
        )

    def accepts_token(self, authorization: str) -> bool:
        """One rule for every service of the fake: a bearer token the test's credential or one
        of the fake's managed identities was issued."""
        if not authorization.startswith("Bearer "):
            return False
        token = authorization[7:]
        return token in self.credential.issued.values() or token in self.identity_tokens

    def _injected_reply(self, request: SeenRequest) -> Reply | None:
        for fault in self._injected:
            pattern, times, status, code, message, headers, method = fault
            if times > 0 and pattern.search(request.path) and method in (None, request.method):
                fault[1] = times - 1
                return Reply(status, {"error": {"code": code, "message": message}}, dict(headers))
        return None

    def _api_version(self, request: SeenRequest, kind: str) -> Reply | None:
        version = request.query.get("api-version")
        if version in API_VERSIONS[kind]:
            return None
        return arm_error(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid for {kind}. Supported: "
            f"{sorted(API_VERSIONS[kind])}",
        )

    def workspace(self, name: str) -> Workspace:
        return self.workspaces[name.lower()]

    def _ws(self, sub: str, rg: str, ws: str) -> Workspace | None:
        found = self.workspaces.get(ws.lower())
        if found and found.subscription == sub and found.resource_group.lower() == rg.lower():
            return found
        return None

    def _route(
        self, method: str, pattern: str, source: str | None = None, why: str = ""
    ) -> Callable[[Handler], Handler]:
        """Register a route and what it follows: `source` names a recording
        (`"recording:<file>#<entry indexes>"`) or vendored REST API spec examples
        (`"example:<file under fixtures/rest-api-examples>"`, several joined by `" + "`); a
        route no source shows has `source=None` and says `why` (checked by
        tests/azure/test_fake_sources.py, listed in tests/azure/FAKE_SOURCES.md)."""

        def register(handler: Handler) -> Handler:
            self.routes.append((method, re.compile(pattern), handler))
            source_of = RouteSource(
                method, pattern, handler.__name__, source, why if not source else ""
            )
            self.route_sources.append(source_of)
            return handler

        return register

    def _add_routes(self) -> None:
        r = self._route
        r("GET", WS, ENDPOINT_RECORDING + "#0")(self._get_workspace)
        r("GET", WS + r"/computes/(?P<name>[^/]+)", PIPELINE_RECORDING + "#0-2")(self._get_compute)
        r("GET", WS + r"/datastores", ML_EXAMPLE + "2024-04-01.Datastore.list.json")(
            self._list_datastores
        )
        r("GET", WS + r"/datastores/(?P<name>[^/]+)", DATA_RECORDING + "#0")(self._get_datastore)
        r("POST", WS + r"/datastores/(?P<name>[^/]+)/listSecrets", DATA_RECORDING + "#1")(
            self._list_secrets
        )
        for kind, plural in (
            ("data", "data"),
            ("model", "models"),
            ("code", "codes"),
            ("environment", "environments"),
            ("component", "components"),
        ):
            versions = WS + rf"/{plural}/(?P<name>[^/]+)/versions"
            why = NO_COMPONENT_READ
            r("GET", versions, ASSET_SOURCES[kind, "list"], why.format(what="the version list"))(
                self._asset_lister(kind)
            )
            r(
                "GET",
                versions + r"/(?P<version>[^/]+)",
                ASSET_SOURCES[kind, "get"],
                why.format(what="one version"),
            )(self._asset_getter(kind))
            r("PUT", versions + r"/(?P<version>[^/]+)", ASSET_SOURCES[kind, "put"])(
                self._asset_putter(kind)
            )
        r(
            "POST",
            WS + r"/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload",
            ML_EXAMPLE + "2024-04-01.Workspace.CodeVersion.createOrGetStartPendingUpload.json",
        )(self._start_pending_upload)
        r("PUT", WS + r"/jobs/(?P<name>[^/]+)", PIPELINE_RECORDING + "#4")(self._put_job)
        r("GET", WS + r"/jobs/(?P<name>[^/]+)", PIPELINE_RECORDING + "#5-22")(self._get_job)
        r("GET", r"/discovery", PIPELINE_RECORDING + "#24")(self._discovery)
        r(
            "GET",
            r"/history/v1\.0" + WS + r"/runs/(?P<name>[^/]+)/children",
            PIPELINE_RECORDING + "#25",
        )(self._run_children)
        r(
            "GET",
            r"/history/v1\.0" + WS + r"/runs/(?P<name>[^/]+)",
            why="no recording reads one step's run; azure-ai-ml reads a pipeline step from run "
            "history (MFE answers it without properties), in the shape the recorded "
            "runs/{id}/children entries have (test_pipeline_job_child_run_download #25)",
        )(self._get_run)
        r(
            "POST",
            r"/history/v1\.0" + WS + r"/rundata",
            why="answers a run's metadata as Completed with no outputs (what azure-ai-ml reads "
            "when it downloads a job's outputs); no recording or spec example shows run history's "
            "rundata",
        )(self._run_data)
        ops = rf"/subscriptions/(?P<sub>[^/]+)/providers/{PROVIDER}/locations/(?P<loc>[^/]+)"
        r("GET", ops + r"/mfeOperationsStatus/(?P<op>[^/]+)", ENDPOINT_RECORDING + "#2-4,11-13")(
            self._operation_status
        )
        r(
            "GET",
            ops + r"/mfeOperationResults/(?P<op>[^/]+)",
            why="the Location of an ARM operation: 202 with Location while it runs, then 200 "
            "without a body (500 with the error if it failed); the recordings' answers name "
            "this URL but the SDK polls Azure-AsyncOperation, so no recording reads it",
        )(self._operation_result)
        ep = WS + r"/onlineEndpoints/(?P<name>[^/]+)"
        r(
            "GET",
            WS + r"/onlineEndpoints",
            ML_EXAMPLE + "2024-04-01.Workspace.OnlineEndpoint.list.json",
        )(self._list_endpoints)
        r("PUT", ep, ENDPOINT_RECORDING + "#1")(self._put_endpoint)
        r("GET", ep, ENDPOINT_RECORDING + "#5,6,8")(self._get_endpoint)
        r("DELETE", ep, ENDPOINT_RECORDING + "#10")(self._delete_endpoint)
        r("POST", ep + "/token", ENDPOINT_RECORDING + "#9")(self._endpoint_token)
        r("POST", ep + "/listKeys", DEPLOYMENT_RECORDING + "#107")(self._endpoint_keys)
        dep = WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments"
        r("GET", dep, DEPLOYMENT_RECORDING + "#96,105")(self._list_deployments)
        r("PUT", dep + r"/(?P<name>[^/]+)", DEPLOYMENT_RECORDING + "#17")(self._put_deployment)
        r("GET", dep + r"/(?P<name>[^/]+)", DEPLOYMENT_RECORDING + "#94,95")(self._get_deployment)
        r(
            "DELETE",
            dep + r"/(?P<name>[^/]+)",
            ML_EXAMPLE + "2023-04-01.OnlineDeployment.delete.json",
        )(self._delete_deployment)
        r(
            "POST",
            dep + r"/(?P<name>[^/]+)/getLogs",
            ML_EXAMPLE + "2023-04-01.OnlineDeployment.getLogs.json",
        )(self._deployment_logs)
        r(  # the response shape of the api-version called; PT1M grains, grains without data
            "GET",
            ep + r"/providers/Microsoft\.Insights/metrics",
            "example:monitor.stable.2023-10-01.GetMetric.json"
            " + monitor.stable.2018-01-01.GetMetric.json",
        )(self._metrics)
        r(
            "GET",
            r"/registrymanagement/v1\.0/registries/(?P<name>[^/]+)/discovery",
            MODEL_REGISTRY_RECORDING + "#0",
        )(self._registry_discovery)
        for kind in ("model", "code", "environment", "component"):
            versions = REG + rf"/{kind}s/(?P<name>[^/]+)/versions"
            r("GET", versions, REGISTRY_SOURCES[kind, "list"], NO_REGISTRY_LIST.format(kind=kind))(
                self._registry_asset_lister(kind)
            )
            r("GET", versions + r"/(?P<version>[^/]+)", REGISTRY_SOURCES[kind, "get"])(
                self._registry_asset_getter(kind)
            )
            r("PUT", versions + r"/(?P<version>[^/]+)", REGISTRY_SOURCES[kind, "put"])(
                self._registry_asset_putter(kind)
            )
        r("POST", REG + r"/import", PROMOTE_IMPORT_RECORDING + "#9")(self._registry_import)
        r(
            "PUT",
            REG + r"/tempdatarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
            MODEL_REGISTRY_RECORDING + "#2",
        )(self._temp_data_ref)
        r(
            "POST",
            REG + r"/datarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
            MODEL_REGISTRY_RECORDING + "#16",
        )(self._data_ref)
        r(
            "GET",
            r"/assetstore/v1\.0/operations/(?P<op>[^/]+)",
            MODEL_REGISTRY_RECORDING + "#11,12",
        )(self._asset_operation)
        r(
            "GET",
            r"/environment/v1\.0/operations/(?P<op>[^/]+)",
            ENVIRONMENT_REGISTRY_RECORDING + "#3-10",
        )(self._environment_operation)
        self.add_deployment_routes()
        self.add_container_instance_routes()
        self.add_batch_routes()
        self.add_schedule_routes()
        self.route_sources.extend(BLOB_SOURCES + FRONT_DOOR_SOURCES + BATCH_RUN_SOURCES)


__all__ = [
    "Blob",
    "FakeArmTransport",
    "FakeAzureML",
    "Reply",
    "RouteSource",
    "SeenRequest",
    "StaticTokenCredential",
    "system_data",
]
