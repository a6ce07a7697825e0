"""A fake of the Azure ML REST API (ARM, registry data plane, blob storage) at the HTTP layer.

`FakeAzureML` keeps state in memory (workspaces, datastores and their blobs, data, models,
code/environment/component assets, jobs, online endpoints and deployments, registries) and
answers the requests azure-ai-ml 1.35.2 sends, in the shapes Azure sends back (see
/work/shared/azure-recordings and tests/azure/test_recordings.py). `FakeArmTransport` is an
azure-core `HttpTransport` (a `RequestsTransport` whose session answers in memory), so the real
SDK, its retry policy and its LRO pollers run unchanged on top of it.

Faults are injected with `throttle`, `fail_next_lro`, `conflict_on_share` and
`fail_deployment`; every request is kept in `requests` for assertions.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict

ARM_HOST = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"
# api-versions azure-ai-ml 1.35.2 sends, per resource kind (anything else: 400, as ARM does)
API_VERSIONS = {
    "workspace": {"2024-10-01-preview", "2025-01-01-preview", "2023-08-01-preview"},
    "datastore": {"2024-10-01-preview", "2024-07-01-preview", "2023-04-01-preview"},
    "data": {"2023-04-01-preview", "2024-01-01-preview"},
    "model": {"2023-08-01-preview", "2024-01-01-preview"},
    "code": {"2023-04-01", "2024-01-01-preview"},
    "environment": {"2023-04-01-preview", "2024-01-01-preview"},
    "component": {"2024-01-01-preview", "2024-04-01-preview", "2025-01-01-preview"},
    "compute": {"2023-08-01-preview", "2024-10-01-preview"},
    "job": {"2024-01-01-preview", "2024-04-01-preview", "2025-01-01-preview"},
    "endpoint": {"2022-02-01-preview", "2023-04-01-preview", "2024-10-01-preview"},
    "deployment": {"2023-04-01-preview", "2022-02-01-preview", "2024-10-01-preview"},
    "operation": {"2022-02-01-preview", "2023-04-01-preview", "2024-10-01-preview"},
    "registry": {"2021-10-01-dataplanepreview"},
}
TERMINAL_JOB_STATUSES = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}


# --- the credential tests use ---------------------------------------------------------------


class StaticTokenCredential:
    """A TokenCredential that issues one opaque token per scope and remembers what it issued."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        scope = " ".join(sorted(scopes))
        token = self.issued.setdefault(scope, "fake-aad-" + hashlib.sha1(scope.encode()).hexdigest())
        return AccessToken(token, int(datetime.now(UTC).timestamp()) + 3600)

    def close(self) -> None:
        pass


# --- requests and responses ------------------------------------------------------------------


@dataclass
class SeenRequest:
    """One request as the fake received it (headers and body included, for assertions)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.url).path)

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query).items()}

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list -> JSON; bytes -> as is; str -> text; None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
        elif self.body is None:
            data = b""
        else:
            data = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        headers.setdefault("Content-Length", str(len(data)))
        headers.setdefault("Date", formatdate(usegmt=True))
        headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        return data, headers


def arm_error(status: int, code: str, message: str, detail_code: str | None = None) -> Reply:
    """The error envelope the AML management front end sends (see the 404 in the recordings)."""
    details = [{"code": detail_code, "message": message, "details": [], "additionalInfo": []}]
    return Reply(
        status,
        {
            "error": {
                "code": code,
                "message": message if not detail_code else _generic_message(status),
                "details": details if detail_code else [],
                "additionalInfo": [{"type": "ComponentName", "info": {"value": "fake-mfe"}}],
            }
        },
    )


def _generic_message(status: int) -> str:
    return {
        404: "The specified resource was not found.",
        409: "The request conflicts with the current state of the resource.",
        400: "The request is invalid.",
    }.get(status, "The request failed.")


def _read_body(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if hasattr(data, "read"):
        return data.read()
    if isinstance(data, dict):
        return json.dumps(data).encode()
    return b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in data)


class _InMemorySession(requests.Session):
    """A requests session whose `request` asks the fake instead of the network."""

    def __init__(self, fake: FakeAzureML) -> None:
        super().__init__()
        self._fake = fake

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
        body = _read_body(kwargs.get("data"))
        if kwargs.get("files"):
            body += b"".join(_read_body(f[1] if isinstance(f, tuple) else f) for f in kwargs["files"].values())
        seen = SeenRequest(method.upper(), url, headers, body)
        reply = self._fake.handle(seen)
        data, reply_headers = reply.encoded()
        response = requests.Response()
        response.status_code = reply.status
        response.headers = CaseInsensitiveDict(reply_headers)
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(data),
            headers=reply_headers,
            status=reply.status,
            preload_content=False,
            decode_content=False,
            request_method=method.upper(),
        )
        response.url = url
        response.reason = "OK" if reply.status < 400 else "Error"
        response.request = requests.Request(method, url, headers=headers).prepare()
        return response


class FakeArmTransport(RequestsTransport):
    """An azure-core HttpTransport that answers from a FakeAzureML, never the network."""

    def __init__(self, fake: FakeAzureML, **kwargs: Any) -> None:
        super().__init__(session=_InMemorySession(fake), session_owner=False)

    def close(self) -> None:  # the session is shared by every client of one test
        pass


# --- state ----------------------------------------------------------------------------------


@dataclass
class Blob:
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: '"0x' + uuid.uuid4().hex[:15].upper() + '"')
    created: str = field(default_factory=lambda: formatdate(usegmt=True))


@dataclass
class Lro:
    """A long-running operation: InProgress for `polls` status reads, then its outcome."""

    id: str
    kind: str  # "arm" (Azure-AsyncOperation status documents) or "assetstore" (registry)
    polls: int
    outcome: Callable[[], None] | None = None
    error: dict[str, Any] | None = None
    result_location: str | None = None
    status: str = "InProgress"
    started: str = field(default_factory=lambda: _now())


@dataclass
class Workspace:
    subscription: str
    resource_group: str
    name: str
    location: str
    guid: str
    storage_account: str
    data: dict[str, dict[str, dict]] = field(default_factory=dict)
    models: dict[str, dict[str, dict]] = field(default_factory=dict)
    codes: dict[str, dict[str, dict]] = field(default_factory=dict)
    environments: dict[str, dict[str, dict]] = field(default_factory=dict)
    components: dict[str, dict[str, dict]] = field(default_factory=dict)
    computes: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    deployments: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.name}"
        )

    @property
    def container(self) -> str:
        return f"azureml-blobstore-{self.guid}"


@dataclass
class Registry:
    subscription: str
    resource_group: str
    name: str
    location: str
    guid: str
    storage_account: str
    models: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def container(self) -> str:
        return f"{self.name.lower()}-{self.guid}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _system_data() -> dict[str, str]:
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
WS = rf"/subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/providers/{PROVIDER}/workspaces/(?P<ws>[^/]+)"
REG = rf"/mferp/managementfrontend/subscriptions/(?P<sub>[^/]+)/resource[gG]roups/(?P<rg>[^/]+)/providers/{PROVIDER}/registries/(?P<reg>[^/]+)"


class FakeAzureML:
    """The in-memory Azure ML control plane, registry data plane and blob storage."""

    def __init__(self, credential: StaticTokenCredential, location: str = "eastus2") -> None:
        self.credential = credential
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
        self.job_outputs: dict[str, dict[str, Path]] = {}  # pipeline display name -> outputs
        self.job_failures: dict[str, str] = {}  # pipeline display name -> error message
        self.scoring: Callable[[str, str, Any], Any] | None = None
        self._throttles: list[tuple[re.Pattern[str], int, int]] = []
        self._failing_lros: list[tuple[re.Pattern[str], str]] = []
        self._share_conflicts = 0
        self._failing_deployments: dict[str, str] = {}
        self._staged: dict[tuple[str, str, str], dict[str, bytes]] = {}
        self._lock = threading.RLock()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._add_routes()

    # --- setup -----------------------------------------------------------------------------

    def transport(self) -> FakeArmTransport:
        return FakeArmTransport(self)

    def add_workspace(
        self, subscription: str, resource_group: str, name: str, computes: tuple[str, ...] = ()
    ) -> Workspace:
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{subscription}/{resource_group}/{name}"))
        ws = Workspace(
            subscription,
            resource_group,
            name,
            self.location,
            guid,
            storage_account="st" + guid.replace("-", "")[:16],
        )
        for compute in computes:
            ws.computes[compute] = self._compute(ws, compute)
        self.workspaces[name.lower()] = ws
        self.blobs[(ws.storage_account, ws.container)] = {}
        self.blobs[(ws.storage_account, f"azureml-{ws.guid}")] = {}
        self.blobs[(ws.storage_account, f"{ws.guid}-code")] = {}
        return ws

    def add_registry(self, subscription: str, resource_group: str, name: str) -> Registry:
        guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"registry/{name}"))
        reg = Registry(
            subscription,
            resource_group,
            name,
            self.location,
            guid,
            storage_account="streg" + guid.replace("-", "")[:14],
        )
        self.registries[name.lower()] = reg
        self.blobs[(reg.storage_account, reg.container)] = {}
        return reg

    # --- faults ----------------------------------------------------------------------------

    def throttle(self, times: int, retry_after: int = 1, path_pattern: str = ".*") -> None:
        """Answer the next `times` ARM/registry requests matching `path_pattern` with 429."""
        self._throttles.append((re.compile(path_pattern), times, retry_after))

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
        with self._lock:
            self.requests.append(request)
            host = request.host
            if host.endswith(".blob.core.windows.net"):
                return self._blob(request)
            denied = self._check_auth(request)
            if denied is not None:
                return denied
            throttled = self._throttled(request)
            if throttled is not None:
                return throttled
            if host.endswith(".inference.ml.azure.com"):
                return self._score(request)
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
        if header.startswith("Bearer ") and header[7:] in self.credential.issued.values():
            return None
        return Reply(
            401,
            {"error": {"code": "AuthenticationFailed", "message": "Bearer token missing/invalid"}},
            {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/"'},
        )

    def _throttled(self, request: SeenRequest) -> Reply | None:
        for i, (pattern, times, retry_after) in enumerate(self._throttles):
            if times > 0 and pattern.search(request.path):
                self._throttles[i] = (pattern, times - 1, retry_after)
                return Reply(
                    429,
                    {
                        "error": {
                            "code": "TooManyRequests",
                            "message": "The request is being throttled.",
                        }
                    },
                    {"Retry-After": str(retry_after)},
                )
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

    def _route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((method, re.compile(pattern), handler))
            return handler

        return register

    def _add_routes(self) -> None:
        r = self._route
        r("GET", WS)(self._get_workspace)
        r("GET", WS + r"/computes/(?P<name>[^/]+)")(self._get_compute)
        r("GET", WS + r"/datastores/(?P<name>[^/]+)")(self._get_datastore)
        r("POST", WS + r"/datastores/(?P<name>[^/]+)/listSecrets")(self._list_secrets)
        for kind, plural in (
            ("data", "data"),
            ("model", "models"),
            ("code", "codes"),
            ("environment", "environments"),
            ("component", "components"),
        ):
            r("GET", WS + rf"/{plural}/(?P<name>[^/]+)/versions")(self._asset_lister(kind))
            r("GET", WS + rf"/{plural}/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(
                self._asset_getter(kind)
            )
            r("PUT", WS + rf"/{plural}/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(
                self._asset_putter(kind)
            )
        r("POST", WS + r"/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload")(
            self._start_pending_upload
        )
        ops = rf"/subscriptions/(?P<sub>[^/]+)/providers/{PROVIDER}/locations/(?P<loc>[^/]+)"
        r("GET", ops + r"/mfeOperationsStatus/(?P<op>[^/]+)")(self._operation_status)
        r("GET", ops + r"/mfeOperationResults/(?P<op>[^/]+)")(self._operation_result)
        ep = WS + r"/onlineEndpoints/(?P<name>[^/]+)"
        r("GET", WS + r"/onlineEndpoints")(self._list_endpoints)
        r("PUT", ep)(self._put_endpoint)
        r("GET", ep)(self._get_endpoint)
        r("DELETE", ep)(self._delete_endpoint)
        r("POST", ep + "/token")(self._endpoint_token)
        r("POST", ep + "/listKeys")(self._endpoint_keys)
        dep = WS + r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments"
        r("GET", dep)(self._list_deployments)
        r("PUT", dep + r"/(?P<name>[^/]+)")(self._put_deployment)
        r("GET", dep + r"/(?P<name>[^/]+)")(self._get_deployment)
        r("DELETE", dep + r"/(?P<name>[^/]+)")(self._delete_deployment)
        r("POST", dep + r"/(?P<name>[^/]+)/getLogs")(self._deployment_logs)
        r("GET", r"/registrymanagement/v1\.0/registries/(?P<name>[^/]+)/discovery")(self._registry_discovery)
        r("GET", REG + r"/models/(?P<name>[^/]+)/versions")(self._registry_list)
        r("GET", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(self._registry_get)
        r("PUT", REG + r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(self._registry_put)
        r("POST", REG + r"/import")(self._registry_import)
        r("PUT", REG + r"/tempdatarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(self._temp_data_ref)
        r("POST", REG + r"/datarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)")(self._data_ref)
        r("GET", r"/assetstore/v1\.0/operations/(?P<op>[^/]+)")(self._asset_operation)

    # --- workspace, datastores -------------------------------------------------------------

    def _get_workspace(self, request: SeenRequest, sub: str, rg: str, ws: str) -> Reply:
        if bad := self._api_version(request, "workspace"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource '{PROVIDER}/workspaces/{ws}' under resource group '{rg}' was not "
                "found.",
            )
        loc = found.location
        return Reply(
            200,
            {
                "id": found.arm_id,
                "name": found.name,
                "type": f"{PROVIDER}/workspaces",
                "location": loc,
                "tags": {},
                "etag": None,
                "properties": {
                    "friendlyName": found.name,
                    "description": "",
                    "storageAccount": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.Storage/storageAccounts/{found.storage_account}",
                    "hbiWorkspace": False,
                    "tenantId": "00000000-0000-0000-0000-000000000000",
                    "provisioningState": "Succeeded",
                    "v1LegacyMode": False,
                    "softDeleteEnabled": False,
                    "storageHnsEnabled": False,
                    "workspaceId": found.guid,
                    "publicNetworkAccess": "Enabled",
                    "discoveryUrl": f"https://{loc}.api.azureml.ms/discovery",
                    "mlFlowTrackingUri": f"azureml://{loc}.api.azureml.ms/mlflow/v1.0{found.arm_id}",
                    "enableDataIsolation": False,
                    "systemDatastoresAuthMode": "identity",
                },
                "identity": {
                    "type": "SystemAssigned",
                    "principalId": "00000000-0000-0000-0000-000000000000",
                    "tenantId": "00000000-0000-0000-0000-000000000000",
                },
                "kind": "Default",
                "sku": {"name": "Basic", "tier": "Basic"},
                "systemData": _system_data(),
            },
        )

    def _datastore(self, ws: Workspace, name: str) -> dict | None:
        containers = {
            "workspaceblobstore": ws.container,
            "workspaceartifactstore": f"azureml-{ws.guid}",
        }
        if name not in containers:
            return None
        return {
            "id": f"{ws.arm_id}/datastores/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/datastores",
            "properties": {
                "description": None,
                "tags": None,
                "properties": None,
                "isDefault": name == "workspaceblobstore",
                # identity-based: no account key or SAS exists to be listed (as in the
                # deployment recording), so the SDK uses the caller's own Entra token
                "credentials": {"credentialsType": "None"},
                "subscriptionId": ws.subscription,
                "resourceGroup": ws.resource_group,
                "datastoreType": "AzureBlob",
                "accountName": ws.storage_account,
                "containerName": containers[name],
                "endpoint": "core.windows.net",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            },
            "systemData": _system_data(),
        }

    def _get_datastore(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "datastore"):
            return bad
        found = self._ws(sub, rg, ws)
        store = self._datastore(found, name) if found else None
        if store is None:
            return arm_error(404, "UserError", f"Datastore {name} not found.", "DatastoreNotFound")
        return Reply(200, store)

    def _list_secrets(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "datastore"):
            return bad
        return arm_error(400, "UserError", "No secrets for credentials of type None.")

    def _start_pending_upload(
        self, request: SeenRequest, sub: str, rg: str, ws: str, name: str, version: str
    ) -> Reply:
        """Code snapshots go to a container the service hands out with a short-lived SAS."""
        if bad := self._api_version(request, "code"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        signature = "fakesig" + uuid.uuid4().hex
        self.issued_sas.add(signature)
        blob_uri = f"https://{found.storage_account}.blob.core.windows.net:443/{found.guid}-code/{name}-{version}"
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": blob_uri,
                    "storageAccountArmId": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.Storage/storageAccounts/{found.storage_account}",
                    "credential": {
                        "credentialType": "SAS",
                        "sasUri": f"{blob_uri}?sv=2021-10-04&se=2099-01-01T00%3A00%3A00Z&sr=c&sp=rcwl&sig={signature}",
                    },
                },
                "pendingUploadId": str(uuid.uuid4()),
                "pendingUploadType": "TemporaryBlobReference",
            },
        )

    # --- versioned assets (data, models) ---------------------------------------------------

    def _asset_store(self, ws: Workspace, kind: str) -> dict[str, dict[str, dict]]:
        return {"data": ws.data, "model": ws.models, "code": ws.codes}[kind] if kind in (
            "data",
            "model",
            "code",
        ) else {"environment": ws.environments, "component": ws.components}[kind]

    def _asset_lister(self, kind: str) -> Handler:
        def list_versions(request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
            if bad := self._api_version(request, kind):
                return bad
            found = self._ws(sub, rg, ws)
            if found is None:
                return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
            versions = self._asset_store(found, kind).get(name)
            if versions is None and kind not in ("data", "model"):
                versions = {}  # hash lookups of code/environments: an empty page, as recorded
            if versions is None:
                label = {"data": "Data", "model": "Model"}.get(kind, kind.title())
                return arm_error(
                    404,
                    "UserError",
                    f"{label} container with name: {name} not found.",
                    f"{label}NotFound",
                )
            items = list(versions.values())
            query = request.query
            if query.get("listViewType", "ActiveOnly") == "ActiveOnly":
                items = [i for i in items if not i["properties"].get("isArchived")]
            if "hash" in query:
                items = [
                    i
                    for i in items
                    if i["properties"].get("properties", {}).get("hash_sha256") == query["hash"]
                ]
            if query.get("$orderBy", "").startswith("createdtime"):
                items.sort(key=lambda i: i["systemData"]["createdAt"], reverse=True)
            if "$top" in query:
                items = items[: int(query["$top"])]
            return Reply(200, {"value": items})

        return list_versions

    def _asset_getter(self, kind: str) -> Handler:
        def get_version(
            request: SeenRequest, sub: str, rg: str, ws: str, name: str, version: str
        ) -> Reply:
            if bad := self._api_version(request, kind):
                return bad
            found = self._ws(sub, rg, ws)
            item = self._asset_store(found, kind).get(name, {}).get(version) if found else None
            if item is None:
                return arm_error(
                    404,
                    "UserError",
                    f"Could not find asset with ID: {name}:{version}",
                    "ResourceNotFound",
                )
            return Reply(200, item)

        return get_version

    def _asset_putter(self, kind: str) -> Handler:
        plural = {"data": "data", "model": "models", "code": "codes"}.get(kind, kind + "s")
        uri_field = {"data": "dataUri", "model": "modelUri", "code": "codeUri"}.get(kind)

        def put_version(
            request: SeenRequest, sub: str, rg: str, ws: str, name: str, version: str
        ) -> Reply:
            if bad := self._api_version(request, kind):
                return bad
            found = self._ws(sub, rg, ws)
            if found is None:
                return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
            props = dict(request.json()["properties"])
            versions = self._asset_store(found, kind).setdefault(name, {})
            existing = versions.get(version)
            if uri_field and props.get(uri_field):
                props[uri_field] = self._long_uri(found, props[uri_field], kind)
            if existing is not None:
                before = existing["properties"]
                if uri_field and props.get(uri_field) and props[uri_field] != before.get(uri_field):
                    return arm_error(
                        400,
                        "UserError",
                        "The asset path cannot be changed for an existing version; register a "
                        "new version instead.",
                        "Immutable",
                    )
                merged = {**before, **props}
                existing["properties"] = merged
                existing["systemData"]["lastModifiedAt"] = _now()
                return Reply(200, existing)
            item = {
                "id": f"{found.arm_id}/{plural}/{name}/versions/{version}",
                "name": version,
                "type": f"{PROVIDER}/workspaces/{plural}/versions",
                "properties": self._asset_defaults(kind) | props,
                "systemData": _system_data(),
            }
            versions[version] = item
            location = f"https://{ARM_HOST}{item['id']}?api-version={request.query['api-version']}"
            return Reply(201, item, {"Location": location})

        return put_version

    @staticmethod
    def _asset_defaults(kind: str) -> dict[str, Any]:
        base: dict[str, Any] = {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "isAnonymous": False,
            "autoDeleteSetting": None,
        }
        if kind == "data":
            return base | {"stage": None, "intellectualProperty": None}
        if kind == "environment":
            return base | {
                "environmentType": "UserCreated",
                "osType": "Linux",
                "autoRebuild": "Disabled",
                "provisioningState": "Succeeded",
                "stage": "Logged",
                "intellectualProperty": None,
            }
        if kind == "model":
            return base | {
                "flavors": {},
                "jobName": None,
                "provisioningState": "Succeeded",
                "stage": "Development",
                "intellectualProperty": None,
            }
        return base | {"provisioningState": "Succeeded"}

    @staticmethod
    def _long_uri(ws: Workspace, uri: str, kind: str) -> str:
        """azureml://datastores/x/paths/p -> the long form the service echoes back."""
        short = re.match(r"azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)", uri)
        if not short:
            return uri
        rg = "resourcegroups" if kind == "data" else "resourceGroups"
        return (
            f"azureml://subscriptions/{ws.subscription}/{rg}/{ws.resource_group}/workspaces/"
            f"{ws.name}/datastores/{short['store']}/paths/{short['path']}"
        )

    # --- blob storage ----------------------------------------------------------------------

    def _blob(self, request: SeenRequest) -> Reply:
        account = request.host.split(".")[0]
        parts = request.path.lstrip("/").split("/", 1)
        container = parts[0]
        name = parts[1] if len(parts) > 1 else ""
        query = request.query
        headers = {k.lower(): v for k, v in request.headers.items()}
        sas = query.get("sig")
        bearer = headers.get("authorization", "")
        if sas is not None:
            if sas not in self.issued_sas:
                return self._blob_error(403, "AuthenticationFailed")
        elif not (bearer.startswith("Bearer ") and bearer[7:] in self.credential.issued.values()):
            return self._blob_error(401, "NoAuthenticationInformation")
        blobs = self.blobs.get((account, container))
        if blobs is None:
            return self._blob_error(404, "ContainerNotFound")
        common = {"x-ms-version": headers.get("x-ms-version", "2025-01-05")}
        if query.get("restype") == "container":
            if query.get("comp") == "list":
                return Reply(200, self._list_blobs(account, container, blobs, query), common | {
                    "Content-Type": "application/xml"
                })
            return Reply(200, None, common | {"ETag": '"0x1"', "Last-Modified": formatdate(usegmt=True)})
        meta_headers = {k[len("x-ms-meta-"):]: v for k, v in headers.items() if k.startswith("x-ms-meta-")}
        if request.method == "PUT":
            comp = query.get("comp")
            if comp == "metadata":
                if name not in blobs:
                    return self._blob_error(404, "BlobNotFound")
                blobs[name].metadata = meta_headers
                return Reply(200, None, common | {"ETag": blobs[name].etag})
            if comp == "block":
                self._staged.setdefault((account, container, name), {})[query["blockid"]] = request.body
                return Reply(201, None, common)
            if comp == "blocklist":
                staged = self._staged.pop((account, container, name), {})
                ids = re.findall(r"<(?:Latest|Committed|Uncommitted)>([^<]+)<", request.body.decode())
                blobs[name] = Blob(b"".join(staged[i] for i in ids), meta_headers)
                return Reply(201, None, common | {"ETag": blobs[name].etag})
            if comp in ("properties", "tier"):
                return Reply(200, None, common)
            blobs[name] = Blob(request.body, meta_headers)
            md5 = base64.b64encode(hashlib.md5(request.body).digest()).decode()
            return Reply(
                201,
                None,
                common
                | {
                    "ETag": blobs[name].etag,
                    "Last-Modified": blobs[name].created,
                    "Content-MD5": md5,
                    "x-ms-request-server-encrypted": "true",
                },
            )
        blob = blobs.get(name)
        if blob is None:
            return self._blob_error(404, "BlobNotFound", head=request.method == "HEAD")
        props = common | {
            "Content-Type": "application/octet-stream",
            "ETag": blob.etag,
            "Last-Modified": blob.created,
            "x-ms-creation-time": blob.created,
            "x-ms-blob-type": "BlockBlob",
            "Accept-Ranges": "bytes",
            **{f"x-ms-meta-{k}": v for k, v in blob.metadata.items()},
        }
        if request.method == "HEAD":
            return Reply(200, None, props | {"Content-Length": str(len(blob.data))})
        if request.method == "DELETE":
            del blobs[name]
            return Reply(202, None, common)
        wanted = headers.get("x-ms-range") or headers.get("range")
        if wanted:
            start_text, _, end_text = wanted.removeprefix("bytes=").partition("-")
            start = int(start_text)
            end = min(int(end_text) if end_text else len(blob.data) - 1, len(blob.data) - 1)
            if start >= len(blob.data) and blob.data:
                return self._blob_error(416, "InvalidRange")
            chunk = blob.data[start : end + 1]
            return Reply(
                206, chunk, props | {"Content-Range": f"bytes {start}-{end}/{len(blob.data)}"}
            )
        return Reply(200, blob.data, props)

    @staticmethod
    def _blob_error(status: int, code: str, head: bool = False) -> Reply:
        body = None if head else (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{code}</Message></Error>"
        )
        return Reply(status, body, {"x-ms-error-code": code, "Content-Type": "application/xml"})

    @staticmethod
    def _list_blobs(account: str, container: str, blobs: dict[str, Blob], query: Mapping[str, str]) -> str:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter")
        include_metadata = "metadata" in query.get("include", "")
        items, prefixes = [], []
        for name in sorted(blobs):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                sub = prefix + rest.split(delimiter)[0] + delimiter
                if sub not in prefixes:
                    prefixes.append(sub)
                continue
            blob = blobs[name]
            meta = (
                "<Metadata>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in blob.metadata.items()) + "</Metadata>"
                if include_metadata
                else ""
            )
            items.append(
                f"<Blob><Name>{escape(name)}</Name><Properties><Creation-Time>{blob.created}"
                f"</Creation-Time><Last-Modified>{blob.created}</Last-Modified><Etag>{blob.etag.strip(chr(34))}"
                f"</Etag><Content-Length>{len(blob.data)}</Content-Length><Content-Type>"
                "application/octet-stream</Content-Type><BlobType>BlockBlob</BlobType>"
                "<AccessTier>Hot</AccessTier><LeaseStatus>unlocked</LeaseStatus><LeaseState>"
                f"available</LeaseState><ServerEncrypted>true</ServerEncrypted></Properties>{meta}</Blob>"
            )
        items += [f"<BlobPrefix><Name>{escape(p)}</Name></BlobPrefix>" for p in prefixes]
        delim = f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else ""
        return (
            '\ufeff<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f'"https://{account}.blob.core.windows.net/" ContainerName="{container}"><Prefix>'
            f"{escape(prefix)}</Prefix>{delim}<Blobs>{''.join(items)}</Blobs><NextMarker />"
            "</EnumerationResults>"
        )

    # --- storage helpers for tests ---------------------------------------------------------

    def put_files(self, account: str, container: str, prefix: str, directory: Path) -> None:
        """Place a local directory's files in fake storage under `prefix` (job outputs)."""
        blobs = self.blobs.setdefault((account, container), {})
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file():
                blobs[f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}"] = Blob(
                    path.read_bytes()
                )

    def files_under(self, account: str, container: str, prefix: str) -> dict[str, bytes]:
        blobs = self.blobs.get((account, container), {})
        return {k[len(prefix):].lstrip("/"): v.data for k, v in blobs.items() if k.startswith(prefix)}

    # --- computes --------------------------------------------------------------------------

    def _compute(self, ws: Workspace, name: str) -> dict:
        return {
            "id": f"{ws.arm_id}/computes/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/computes",
            "location": ws.location,
            "tags": {},
            "properties": {
                "createdOn": _now(),
                "modifiedOn": _now(),
                "disableLocalAuth": True,
                "description": None,
                "resourceId": None,
                "computeType": "AmlCompute",
                "computeLocation": ws.location,
                "provisioningState": "Succeeded",
                "provisioningErrors": None,
                "isAttachedCompute": False,
                "properties": {
                    "vmSize": "STANDARD_DS3_V2",
                    "vmPriority": "Dedicated",
                    "scaleSettings": {
                        "maxNodeCount": 4,
                        "minNodeCount": 0,
                        "nodeIdleTimeBeforeScaleDown": "PT2M",
                    },
                    "subnet": None,
                    "currentNodeCount": 0,
                    "targetNodeCount": 0,
                    "allocationState": "Steady",
                    "errors": None,
                    "remoteLoginPortPublicAccess": "Disabled",
                    "osType": "Linux",
                    "isolatedNetwork": False,
                    "propertyBag": {},
                },
            },
        }

    def _get_compute(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "compute"):
            return bad
        found = self._ws(sub, rg, ws)
        compute = found.computes.get(name) if found else None
        if compute is None:
            return arm_error(404, "UserError", f"Compute {name} not found.", "ComputeNotFound")
        return Reply(200, compute)

    # --- long-running operations -----------------------------------------------------------

    def _start_lro(
        self,
        request: SeenRequest,
        ws: Workspace | Registry,
        prefix: str,
        outcome: Callable[[], None] | None,
        error: str | None = None,
    ) -> Lro:
        for i, (pattern, message) in enumerate(self._failing_lros):
            if pattern.search(request.path):
                del self._failing_lros[i]
                error = message
                break
        op_id = f"{prefix}:{ws.guid}:{uuid.uuid4()}"
        lro = Lro(
            op_id,
            "arm",
            self.lro_polls,
            outcome,
            {"code": "InternalServerError" if prefix != "odidp" else "DeploymentFailed", "message": error}
            if error
            else None,
        )
        self.lros[op_id] = lro
        return lro

    def _lro_headers(self, lro: Lro, ws: Workspace, api_version: str, delete: bool = False) -> dict:
        base = (
            f"https://{ARM_HOST}/subscriptions/{ws.subscription}/providers/{PROVIDER}/locations/"
            f"{ws.location}"
        )
        signature = f"&t={uuid.uuid4().int % 10**18}&c=fakecert&s=fakesig&h=fakehash"
        headers = {
            "Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{lro.id}?api-version={api_version}{signature}",
            "x-ms-async-operation-timeout": "PT1H",
        }
        if delete:
            headers["Location"] = f"{base}/mfeOperationResults/{lro.id}?api-version={api_version}{signature}"
        return headers

    def _advance(self, lro: Lro) -> None:
        if lro.status != "InProgress":
            return
        if lro.polls > 0:
            lro.polls -= 1
            return
        if lro.error:
            lro.status = "Failed"
            return
        lro.status = "Succeeded"
        if lro.outcome is not None:
            lro.outcome()

    def _operation_status(self, request: SeenRequest, sub: str, loc: str, op: str) -> Reply:
        if bad := self._api_version(request, "operation"):
            return bad
        lro = self.lros.get(op)
        if lro is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        self._advance(lro)
        body: dict[str, Any] = {
            "id": f"/subscriptions/{sub}/providers/{PROVIDER}/locations/{loc}/mfeOperationsStatus/{op}",
            "name": op,
            "startTime": lro.started,
            "endTime": _now() if lro.status != "InProgress" else "0001-01-01T00:00:00+00:00",
            "percentComplete": 100.0 if lro.status != "InProgress" else 0.0,
            "status": "Updating" if lro.status == "InProgress" else lro.status,
        }
        if lro.status == "Failed":
            body["error"] = lro.error
        return Reply(200, body, {"x-ms-retry-after-ms": "20"})

    def _operation_result(self, request: SeenRequest, sub: str, loc: str, op: str) -> Reply:
        lro = self.lros.get(op)
        if lro is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        self._advance(lro)
        if lro.status == "InProgress":
            return Reply(202, None, {"x-ms-retry-after-ms": "20", "Location": request.url})
        if lro.status == "Failed":
            return Reply(500, {"error": lro.error})
        return Reply(200, None)

    # --- online endpoints ------------------------------------------------------------------

    def _endpoint_body(self, ws: Workspace, name: str, props: dict, tags: dict, identity: dict | None) -> dict:
        return {
            "id": f"{ws.arm_id}/onlineEndpoints/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints",
            "properties": props,
            "systemData": _system_data(),
            "tags": tags,
            "location": ws.location,
            "kind": "Managed",
            "identity": identity
            or {
                "type": "SystemAssigned",
                "principalId": "00000000-0000-0000-0000-000000000000",
                "tenantId": "00000000-0000-0000-0000-000000000000",
            },
        }

    def _put_endpoint(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        body = request.json()
        props = body.get("properties", {})
        traffic = {k: int(v) for k, v in (props.get("traffic") or {}).items()}
        mirror = {k: int(v) for k, v in (props.get("mirrorTraffic") or {}).items()}
        existing = found.endpoints.get(name)
        if existing and existing["properties"]["provisioningState"] in ("Creating", "Updating", "Deleting"):
            return arm_error(409, "UserError", f"Endpoint {name} is busy with another operation.", "Conflict")
        invalid = self._invalid_traffic(found, name, traffic, mirror)
        if invalid:
            return arm_error(400, "UserError", invalid, "BadArgument")
        old = copy.deepcopy(existing) if existing else None
        auth = props.get("authMode", "AMLToken")
        state = {
            "description": props.get("description"),
            "properties": {"azureml.onlineendpointid": f"{found.arm_id}/onlineendpoints/{name}".lower()},
            "scoringUri": None,
            "swaggerUri": None,
            "authMode": auth,
            "provisioningState": "Updating" if existing else "Creating",
            "compute": None,
            "traffic": traffic,
            "mirrorTraffic": mirror,
            "publicNetworkAccess": props.get("publicNetworkAccess", "Enabled"),
        }
        if existing:
            state["scoringUri"] = existing["properties"]["scoringUri"]
            state["swaggerUri"] = existing["properties"]["swaggerUri"]
        resource = self._endpoint_body(found, name, state, body.get("tags") or {}, None)
        if existing:
            resource["systemData"] = existing["systemData"]
        found.endpoints[name] = resource
        api = request.query["api-version"]

        def done() -> None:
            resource["properties"]["provisioningState"] = "Succeeded"
            resource["properties"]["scoringUri"] = f"https://{name}.{found.location}.inference.ml.azure.com/score"
            resource["properties"]["swaggerUri"] = f"https://{name}.{found.location}.inference.ml.azure.com/swagger.json"

        lro = self._start_lro(request, found, "oeidp", done)
        if lro.error:  # the update fails: Azure keeps the routing that was live
            if old is not None:
                found.endpoints[name] = old
            else:
                resource["properties"]["provisioningState"] = "Failed"
        headers = self._lro_headers(lro, found, api) | {
            "Location": f"https://{ARM_HOST}{resource['id']}?api-version={api}"
        }
        status_uri = headers["Azure-AsyncOperation"].split("&t=")[0]
        resource["properties"]["properties"]["AzureAsyncOperationUri"] = status_uri
        return Reply(200 if existing else 201, resource, headers)

    def _invalid_traffic(self, ws: Workspace, name: str, traffic: dict, mirror: dict) -> str | None:
        deployments = ws.deployments.get(name, {})
        missing = sorted((set(traffic) | set(mirror)) - set(deployments))
        if missing:
            return f"Traffic is set for deployments that do not exist: {missing}."
        total = sum(traffic.values())
        if traffic and total not in (0, 100):
            return f"Traffic values must add up to 100 (or 0); got {total}."
        for deployment, share in mirror.items():
            if traffic.get(deployment, 0) > 0:
                return f"Deployment {deployment} cannot receive live and mirror traffic."
            if share > 50:
                return "Mirror traffic cannot exceed 50%."
        not_ready = [
            d for d, pct in traffic.items()
            if pct > 0 and deployments[d]["properties"]["provisioningState"] != "Succeeded"
        ]
        if not_ready:
            return f"Deployments {not_ready} are not in a Succeeded state and cannot take traffic."
        return None

    def _get_endpoint(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is None:
            return arm_error(404, "UserError", f"Could not find endpoint {name}.", "EndpointNotFound")
        return Reply(200, resource)

    def _list_endpoints(self, request: SeenRequest, sub: str, rg: str, ws: str) -> Reply:
        found = self._ws(sub, rg, ws)
        return Reply(200, {"value": list(found.endpoints.values()) if found else []})

    def _delete_endpoint(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or name not in found.endpoints:
            return Reply(204)

        def done() -> None:
            found.endpoints.pop(name, None)
            found.deployments.pop(name, None)

        found.endpoints[name]["properties"]["provisioningState"] = "Deleting"
        lro = self._start_lro(request, found, "oeidp", done)
        return Reply(202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True))

    def _endpoint_token(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is None:
            return arm_error(404, "UserError", f"Could not find endpoint {name}.", "EndpointNotFound")
        if resource["properties"]["authMode"] != "AMLToken":
            return arm_error(400, "UserError", "Tokens are only issued to AMLToken endpoints.", "BadArgument")
        return Reply(200, {"accessToken": "fake-aml-token", "tokenType": "Bearer", "expiryTimeUtc": 0, "refreshAfterTimeUtc": 0})

    def _endpoint_keys(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        return arm_error(
            400, "UserError", "Keys are only available for endpoints with auth mode Key.", "BadArgument"
        )

    # --- online deployments ----------------------------------------------------------------

    def _put_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or endpoint not in found.endpoints:
            return arm_error(404, "UserError", f"Could not find endpoint {endpoint}.", "EndpointNotFound")
        body = request.json()
        props = dict(body.get("properties", {}))
        model = props.get("model", "")
        if not self._model_exists(found, model):
            return arm_error(400, "UserError", f"Model {model} does not exist or is not accessible.", "BadArgument")
        state = props | {
            "provisioningState": "Creating",
            "scaleSettings": {"scaleType": "Default"},
            "requestSettings": {"maxQueueWait": "PT0S", "requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1},
            "livenessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S", "period": "PT10S", "initialDelay": "PT10S"},
            "readinessProbe": {"failureThreshold": 30, "successThreshold": 1, "timeout": "PT2S", "period": "PT10S", "initialDelay": "PT10S"},
            "egressPublicNetworkAccess": "Enabled",
            "endpointComputeType": "Managed",
            "properties": props.get("properties") or {},
        }
        resource = {
            "id": f"{found.arm_id}/onlineEndpoints/{endpoint}/deployments/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
            "properties": state,
            "systemData": _system_data(),
            "tags": body.get("tags") or {},
            "location": found.location,
            "kind": "Managed",
            "sku": {**(body.get("sku") or {"name": "Default", "capacity": 1}), "tier": "Standard"},
        }
        existed = name in found.deployments.get(endpoint, {})
        found.deployments.setdefault(endpoint, {})[name] = resource

        def done() -> None:
            state["provisioningState"] = "Succeeded"

        failure = self._failing_deployments.get(name)
        lro = self._start_lro(request, found, "odidp", done, error=failure)
        if lro.error:
            state["provisioningState"] = "Failed"
        api = request.query["api-version"]
        headers = self._lro_headers(lro, found, api) | {
            "Location": f"https://{ARM_HOST}{resource['id']}?api-version={api}"
        }
        return Reply(200 if existed else 201, resource, headers)

    def _model_exists(self, ws: Workspace, model: str) -> bool:
        short = re.search(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", model)
        if not short:
            return False
        if model.startswith("azureml://registries/"):
            registry = self.registries.get(model.split("/")[3].lower())
            return bool(registry and short["version"] in registry.models.get(short["name"], {}))
        return short["version"] in ws.models.get(short["name"], {})

    def _get_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.deployments.get(endpoint, {}).get(name) if found else None
        if resource is None:
            return arm_error(404, "UserError", f"Could not find deployment {name}.", "DeploymentNotFound")
        return Reply(200, resource)

    def _list_deployments(self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        return Reply(200, {"value": list(found.deployments.get(endpoint, {}).values()) if found else []})

    def _delete_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or name not in found.deployments.get(endpoint, {}):
            return Reply(204)
        props = found.endpoints[endpoint]["properties"]
        if props["traffic"].get(name, 0) > 0 or props["mirrorTraffic"].get(name, 0) > 0:
            return arm_error(
                400,
                "UserError",
                f"Deployment {name} has traffic; set its traffic to 0 before deleting it.",
                "BadArgument",
            )

        def done() -> None:
            found.deployments.get(endpoint, {}).pop(name, None)

        lro = self._start_lro(request, found, "odidp", done)
        return Reply(202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True))

    def _deployment_logs(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.deployments.get(endpoint, {}).get(name) if found else None
        if resource is None:
            return arm_error(404, "UserError", f"Could not find deployment {name}.", "DeploymentNotFound")
        message = self._failing_deployments.get(name, "Model loaded; listening on port 31311")
        return Reply(200, {"content": f"fake container log for {name}: {message}\n"})

    def _score(self, request: SeenRequest) -> Reply:
        endpoint_name = request.host.split(".")[0]
        ws = next((w for w in self.workspaces.values() if endpoint_name in w.endpoints), None)
        if ws is None:
            return Reply(404, {"error": "endpoint not found"})
        props = ws.endpoints[endpoint_name]["properties"]
        pinned = {k.lower(): v for k, v in request.headers.items()}.get("azureml-model-deployment")
        live = [d for d, pct in props["traffic"].items() if pct > 0]
        target = pinned or (max(live, key=lambda d: props["traffic"][d]) if live else None)
        if target is None:
            return Reply(424, {"error": "no deployment takes traffic"})
        payload = request.json()
        if self.scoring is not None:
            return Reply(200, self.scoring(endpoint_name, target, payload))
        rows = len((payload.get("input_data") or payload).get("data", [])) if isinstance(payload, dict) else 1
        return Reply(200, [0.5] * max(rows, 1), {"azureml-model-deployment": target})

    # --- registries ------------------------------------------------------------------------

    def _registry_discovery(self, request: SeenRequest, name: str) -> Reply:
        reg = self.registries.get(name.lower())
        if reg is None:
            return Reply(404, {"error": {"code": "NotFound", "message": f"Registry {name} not found."}})
        host = f"https://{reg.location}.api.azureml.ms"
        return Reply(
            200,
            {
                "registryId": reg.guid,
                "registryName": reg.name,
                "tenantId": "00000000-0000-0000-0000-000000000000",
                "primaryRegion": reg.location,
                "regions": [reg.location],
                "subscriptionId": reg.subscription,
                "resourceGroup": reg.resource_group,
                "workspaceName": None,
                "primaryRegionResourceProviderUri": f"{host}/",
                "registryFqdns": {reg.location: {"uri": host}},
                "intellectualPropertyPublisher": None,
            },
        )

    def _reg(self, sub: str, rg: str, name: str) -> Registry | None:
        reg = self.registries.get(name.lower())
        if reg and reg.subscription == sub and reg.resource_group.lower() == rg.lower():
            return reg
        return None

    def _registry_model_body(self, reg: Registry, name: str, version: str, props: dict, system: dict | None = None) -> dict:
        return {
            "id": f"azureml://registries/{reg.name}/models/{name}/versions/{version}",
            "name": name,
            "type": "models",
            "properties": props,
            "systemData": system or _system_data(),
        }

    def _registry_list(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str) -> Reply:
        if bad := self._api_version(request, "registry"):
            return bad
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        items = list(found.models.get(name, {}).values())
        query = request.query
        if query.get("listViewType", "ActiveOnly") == "ActiveOnly":
            items = [i for i in items if not i["properties"].get("isArchived")]
        if query.get("$orderBy", "").startswith("createdtime"):
            items.sort(key=lambda i: i["systemData"]["createdAt"], reverse=True)
        if "$top" in query:
            items = items[: int(query["$top"])]
        return Reply(200, {"value": items})

    def _registry_get(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str) -> Reply:
        if bad := self._api_version(request, "registry"):
            return bad
        found = self._reg(sub, rg, reg)
        item = found.models.get(name, {}).get(version) if found else None
        if item is None:
            return arm_error(404, "UserError", f"Could not find asset with ID: {name}:{version}", "ResourceNotFound")
        return Reply(200, item)

    def _registry_put(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str) -> Reply:
        if bad := self._api_version(request, "registry"):
            return bad
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        props = dict(request.json()["properties"])
        existing = found.models.get(name, {}).get(version)
        if existing is not None:
            before = existing["properties"]
            if props.get("modelUri") and props["modelUri"] != before.get("modelUri"):
                return arm_error(400, "UserError", "The asset path cannot be changed for an existing version.", "Immutable")
            changes = {k: v for k, v in props.items() if k in ("tags", "description", "isArchived", "stage", "properties")}

            def update() -> None:
                existing["properties"] = before | changes
                existing["systemData"]["lastModifiedAt"] = _now()

            return self._asset_store_lro(request, found, update)
        defaults = {
            "description": None, "tags": {}, "properties": {}, "isArchived": False, "isAnonymous": False,
            "flavors": {}, "originAssetId": None, "jobName": None, "intellectualProperty": None,
        }

        def create() -> None:
            found.models.setdefault(name, {})[version] = self._registry_model_body(found, name, version, defaults | props)

        return self._asset_store_lro(request, found, create)

    def _asset_store_lro(self, request: SeenRequest, reg: Registry, outcome: Callable[[], None], conflict: bool = False) -> Reply:
        lro = Lro(str(uuid.uuid4()).replace("-", "")[:43], "assetstore", self.lro_polls, outcome)
        self.lros[lro.id] = lro
        location = f"https://{reg.location}.api.azureml.ms/assetstore/v1.0/operations/{lro.id}"
        if conflict:
            self._advance_all(lro)
            return arm_error(409, "UserError", "A model with this name and version already exists in the registry.", "Conflict")
        return Reply(202, "null", {"Location": location, "Retry-After": "0", "x-ms-retry-after-ms": "20"})

    def _advance_all(self, lro: Lro) -> None:
        lro.polls = 0
        self._advance(lro)

    def _asset_operation(self, request: SeenRequest, op: str) -> Reply:
        lro = self.lros.get(op)
        if lro is None:
            return Reply(404, {"error": {"code": "NotFound", "message": f"operation {op}"}})
        self._advance(lro)
        if lro.status == "InProgress":
            return Reply(202, None, {"x-ms-retry-after-ms": "20"})
        if lro.status == "Failed":
            return Reply(500, {"error": lro.error})
        return Reply(200, None)

    def _registry_import(self, request: SeenRequest, sub: str, rg: str, reg: str) -> Reply:
        if bad := self._api_version(request, "registry"):
            return bad
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        props = request.json()["properties"]
        source = re.fullmatch(
            r"azureml://locations/[^/]+/workspaces/(?P<guid>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
            props["sourceAssetId"],
        )
        ws = next((w for w in self.workspaces.values() if source and w.guid == source["guid"]), None)
        model = ws.models.get(source["name"], {}).get(source["version"]) if ws and source else None
        if model is None:
            return arm_error(400, "UserError", f"Source asset {props['sourceAssetId']} not found.", "BadArgument")
        name = props.get("destinationName") or source["name"]
        version = props.get("destinationVersion") or source["version"]
        if version in found.models.get(name, {}):
            return arm_error(409, "UserError", f"Model {name}:{version} already exists in registry {reg}.", "Conflict")

        def copy_in() -> None:
            prefix = f"{name}/{version}"
            store = re.search(r"/datastores/[^/]+/paths/(?P<path>.*)$", model["properties"]["modelUri"])
            source_blobs = self.blobs[(ws.storage_account, ws.container)]
            target = self.blobs[(found.storage_account, found.container)]
            base = store["path"].rstrip("/") if store else ""
            for blob_name, blob in source_blobs.items():
                if blob_name.startswith(base + "/"):
                    target[f"{prefix}/{blob_name[len(base) + 1:]}"] = Blob(blob.data, dict(blob.metadata))
            copied = {k: copy.deepcopy(model["properties"].get(k)) for k in ("description", "tags", "properties", "flavors", "modelType")}
            found.models.setdefault(name, {})[version] = self._registry_model_body(
                found,
                name,
                version,
                {
                    "isArchived": False, "isAnonymous": False, "jobName": None, "intellectualProperty": None,
                    **copied,
                    "modelUri": f"https://{found.storage_account}.blob.core.windows.net/{found.container}/{prefix}",
                    "originAssetId": props["sourceAssetId"],
                },
            )

        if self._share_conflicts > 0:
            self._share_conflicts -= 1
            return self._asset_store_lro(request, found, copy_in, conflict=True)
        return self._asset_store_lro(request, found, copy_in)

    def _sas(self, reg: Registry) -> str:
        signature = "fakesig" + uuid.uuid4().hex
        self.issued_sas.add(signature)
        return f"https://{reg.storage_account}.blob.core.windows.net/{reg.container}?sv=2021-10-04&se=2099-01-01T00%3A00%3A00Z&sr=c&sp=rcwl&sig={signature}"

    def _temp_data_ref(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str) -> Reply:
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": f"https://{found.storage_account}.blob.core.windows.net:443/{found.container}",
                    "storageAccountArmId": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{found.storage_account}",
                    "credential": {"credentialType": "SAS", "sasUri": self._sas(found)},
                },
                "imageReferenceForConsumption": None,
                "temporaryDataReferenceId": str(uuid.uuid4()),
                "temporaryDataReferenceType": None,
            },
        )

    def _data_ref(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str) -> Reply:
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        body = request.json()
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": body["blobUri"],
                    "storageAccountArmId": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{found.storage_account}",
                    "credential": {"credentialType": "SAS", "sasUri": self._sas(found)},
                }
            },
        )
