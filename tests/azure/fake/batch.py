"""Batch endpoints and deployments, and batch invocation on the endpoints' inference host.

Everything here follows test_batch_endpoint.pyTestBatchEndpointtest_batch_invoke.json (azure-ai-ml
1.6.0 against the 2022-05-01 service): the endpoint PUT answers 201 `Creating` and its operation
ends `Succeeded` with the scoring URI `https://{endpoint}.{region}.inference.ml.azure.com/jobs`;
the deployment PUT answers 201 `Updating` with the sent settings as the service normalises them
(`loggingLevel` capitalised, empty `resources.properties` null); operation status documents carry
`id`, `name` and `status` only. POST `/jobs` on the inference host, with the
`azureml-model-deployment` header, answers 201 with a batch job in `Preparing`; the service runs
it as a pipeline run in the workspace (its properties say so: `azureml.runsource:
azureml.PipelineRun`, `azureml.pipelineComponent: pipelinerun`), so the fake keeps it in the
workspace's jobs too, where `jobs.get` finds it and it completes like the fake's pipeline jobs.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from tests.azure.fake.batch_runs import BatchRunApi
from tests.azure.fake.endpoints import deployment_not_found, endpoint_not_found, model_not_found
from tests.azure.fake.http import PROVIDER, Reply, SeenRequest, arm_error
from tests.azure.fake.scoring import _refusal
from tests.azure.fake.state import WS, Lro, Workspace, system_data

RECORDING = "recording:test_batch_endpoint.pyTestBatchEndpointtest_batch_invoke.json"
BATCH_JOB_API = "2020-09-01-dataplanepreview"  # the recorded invocation's Location header


def _short_system_data() -> dict[str, str]:
    """The batch resources' systemData as recorded: no `*ByType` fields."""
    data = system_data()
    return {k: data[k] for k in ("createdAt", "createdBy", "lastModifiedAt")}


def _id_name_status(lro: Lro, body: dict[str, Any]) -> dict[str, Any]:
    """A batch operation's status document as recorded (entries 2-3, 16-17)."""
    return {k: v for k, v in body.items() if k in ("id", "name", "status", "error")}


def _refused(status: int, message: str) -> Reply:
    """A refusal of the front door, as the online one answers (scoring.py)."""
    status, headers, body = _refusal(status, message)
    return Reply(status, body, headers)


def _seconds(duration: str) -> int:
    """ISO 8601 `PT30S` / `PT1M` -> seconds (the job parameters carry seconds)."""
    parts = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration or "") or None
    if parts is None:
        return 0
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


class BatchApi(BatchRunApi):
    """Mixed into FakeAzureML, which holds the state and routes requests here; the jobs run
    the deployment's scoring script for real (batch_runs.py)."""

    def add_batch_routes(self) -> None:
        r = self._route
        ep = WS + r"/batchEndpoints/(?P<name>[^/]+)"
        dep = WS + r"/batchEndpoints/(?P<endpoint>[^/]+)/deployments"
        r("PUT", ep, source=RECORDING + "#1")(self._put_batch_endpoint)
        r("GET", ep, source=RECORDING + "#4,5,20,23")(self._get_batch_endpoint)
        r("PUT", dep + r"/(?P<name>[^/]+)", source=RECORDING + "#15")(self._put_batch_deployment)
        r("GET", dep + r"/(?P<name>[^/]+)", source=RECORDING + "#18")(self._get_batch_deployment)
        r("GET", dep, source=RECORDING + "#19,22")(self._list_batch_deployments)
        # azure-ai-ml 1.6.0 looked code snapshots up on the workspace's MFE host (entries 6-7)
        mfe = r"/mferp/managementfrontend" + WS + r"/codes/(?P<name>[^/]+)/versions"
        r("GET", mfe, source=RECORDING + "#6")(self._asset_lister("code"))
        r("GET", mfe + r"/(?P<version>[^/]+)", source=RECORDING + "#7")(self._asset_getter("code"))

    # --- status documents ----------------------------------------------------------------

    def _operation_status(self, request: SeenRequest, sub: str, loc: str, op: str) -> Reply:
        """LroApi's status document, in the shape of the operation's own service where that
        differs (`Lro.document`: batch endpoints and deployments here, schedules)."""
        reply = super()._operation_status(request, sub, loc, op)  # type: ignore[misc]
        lro = self.lros.get(op)
        if reply.status != 200 or lro is None or lro.document is None:
            return reply
        return Reply(reply.status, lro.document(lro, reply.body), reply.headers)

    # --- endpoints -----------------------------------------------------------------------

    def _batch_identity(self, ws: Workspace, name: str, sent: dict | None) -> dict | str:
        """The sent identity as online endpoints keep it; none sent: the workspace's batch
        identity (recorded: a user-assigned one the request did not name), else
        system-assigned."""
        if sent is None and ws.batch_identity is not None:
            sent = {"type": "UserAssigned", "userAssignedIdentities": {ws.batch_identity: {}}}
        return self._endpoint_identity(ws, name, sent)

    def _put_batch_endpoint(
        self, request: SeenRequest, sub: str, rg: str, ws: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "batch_endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        body = request.json() or {}
        props = body.get("properties") or {}
        existing = found.batch_endpoints.get(name)
        identity = (
            existing["identity"]
            if existing is not None
            else self._batch_identity(found, name, body.get("identity"))
        )
        if isinstance(identity, str):
            return arm_error(400, "UserError", identity, "BadArgument")
        api = request.query["api-version"]
        resource_id = f"{found.arm_id}/batchEndpoints/{name}"
        resource = {
            "id": resource_id,
            "name": name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints",
            "properties": {
                "description": props.get("description"),
                "properties": dict(props.get("properties") or {})
                | {
                    "BatchEndpointCreationApiVersion": api,
                    "azureml.onlineendpointid": resource_id,
                },
                "scoringUri": existing["properties"]["scoringUri"] if existing else None,
                "swaggerUri": None,
                "authMode": "AADToken",  # sent `aadToken`; the only mode batch endpoints have
                "defaults": {"deploymentName": None} | (props.get("defaults") or {}),
                "provisioningState": "Updating" if existing else "Creating",
            },
            "systemData": existing["systemData"] if existing else _short_system_data(),
            "tags": body.get("tags") or {},
            "location": found.location,
            "identity": identity,
        }
        found.batch_endpoints[name] = resource

        def done() -> None:
            resource["properties"]["provisioningState"] = "Succeeded"
            resource["properties"]["scoringUri"] = (
                f"https://{name}.{found.location}.inference.ml.azure.com/jobs"
            )

        lro = self._start_lro(request, found, "bebes", done)
        lro.document = _id_name_status
        if lro.error:
            resource["properties"]["provisioningState"] = "Failed"
        headers = self._put_headers(lro, found, api, resource_id)
        return Reply(200 if existing else 201, resource, headers)

    def _get_batch_endpoint(
        self, request: SeenRequest, sub: str, rg: str, ws: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "batch_endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.batch_endpoints.get(name) if found else None
        if resource is None:
            return endpoint_not_found(name)
        return Reply(200, resource)

    # --- deployments ---------------------------------------------------------------------

    def _put_batch_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        """Create or update a batch deployment (recorded: 201 `Updating`, operation polled to
        `Succeeded`). The model and compute must exist: the refusals' bodies follow the
        online deployments' (no recording shows a batch refusal)."""
        if bad := self._api_version(request, "batch_deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or endpoint not in found.batch_endpoints:
            return endpoint_not_found(endpoint)
        body = request.json() or {}
        props = dict(body.get("properties") or {})
        model = (props.get("model") or {}).get("assetId", "")
        if not self._model_exists(found, model):
            return model_not_found(model)
        compute = str(props.get("compute") or "")
        if compute.rsplit("/", 1)[-1] not in found.computes:
            return arm_error(400, "UserError", f"Compute {compute} not found.", "ComputeNotFound")
        resources = dict(props.get("resources") or {})
        state = (
            {"description": None, "properties": {}, "environmentVariables": {}}
            | props
            | {
                "loggingLevel": str(props.get("loggingLevel") or "info").capitalize(),
                "resources": {"instanceType": None}
                | resources
                | {"properties": resources.get("properties") or None},
                "provisioningState": "Updating",
            }
        )
        existed = name in found.batch_deployments.get(endpoint, {})
        resource = {
            "id": f"{found.arm_id}/batchEndpoints/{endpoint}/deployments/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments",
            "properties": state,
            "systemData": _short_system_data(),
            "tags": body.get("tags") or {},
            "location": found.location,
        }
        found.batch_deployments.setdefault(endpoint, {})[name] = resource

        def done() -> None:
            state["provisioningState"] = "Succeeded"

        lro = self._start_lro(request, found, "bdbes", done)
        lro.document = _id_name_status
        if lro.error:
            state["provisioningState"] = "Failed"
        api = request.query["api-version"]
        headers = self._put_headers(lro, found, api, resource["id"])
        return Reply(200 if existed else 201, resource, headers)

    def _get_batch_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "batch_deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.batch_deployments.get(endpoint, {}).get(name) if found else None
        if resource is None:
            return deployment_not_found(name)
        return Reply(200, resource)

    def _list_batch_deployments(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str
    ) -> Reply:
        if bad := self._api_version(request, "batch_deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        deployments = found.batch_deployments.get(endpoint, {}) if found else {}
        return Reply(200, {"value": list(deployments.values())})

    # --- invocation ----------------------------------------------------------------------

    def is_batch_invocation(self, request: SeenRequest) -> bool:
        return request.host.endswith(".inference.ml.azure.com") and request.path == "/jobs"

    def invoke_batch(self, request: SeenRequest) -> Reply:
        """POST `/jobs` on `{endpoint}.{region}.inference.ml.azure.com` (entries 21 and 24):
        the deployment named by `azureml-model-deployment` (else the endpoint's default) runs
        the inputs as a batch job. The front door's refusals (401/404) are answered as the
        online front door answers them (scoring.py; no recording shows them)."""
        with self._lock:
            if self._check_auth(request) is not None:
                return _refused(401, "missing or invalid Entra token")
            endpoint = request.host.split(".")[0]
            ws = next((w for w in self.workspaces.values() if endpoint in w.batch_endpoints), None)
            if ws is None:
                return _refused(404, f"batch endpoint {endpoint} not found")
            headers = {k.lower(): v for k, v in request.headers.items()}
            defaults = ws.batch_endpoints[endpoint]["properties"]["defaults"]
            name = headers.get("azureml-model-deployment") or defaults.get("deploymentName")
            deployment = ws.batch_deployments.get(endpoint, {}).get(name or "")
            if deployment is None:
                message = f"batch endpoint {endpoint} has no deployment {name!r}"
                return _refused(404, message)
            job = self._batch_job(ws, endpoint, deployment, (request.json() or {}))
            location = (
                f"https://{ws.location}.api.azureml.ms/mferp/managementfrontend"
                f"{deployment['id']}?api-version={BATCH_JOB_API}"
            )
            return Reply(
                201,
                job,
                {
                    "azureml-model-deployment": deployment["name"],
                    "Location": location,
                    "Server": "azureml-frontdoor",
                    "X-Request-ID": str(uuid.uuid4()),
                },
            )

    def _batch_job(
        self, ws: Workspace, endpoint: str, deployment: dict, sent: dict[str, Any]
    ) -> dict[str, Any]:
        """The recorded batch job, and the pipeline run behind it in the workspace's jobs."""
        name = f"batchjob-{uuid.uuid4()}"
        dep = deployment["properties"]
        retry = dep.get("retrySettings") or {"maxRetries": 3, "timeout": "PT30S"}
        parameters = {
            "run_max_try": str(retry["maxRetries"]),
            "run_invocation_timeout": str(_seconds(retry["timeout"])),
            "mini_batch_size": str(dep.get("miniBatchSize")),
            "error_threshold": str(dep.get("errorThreshold")),
            "logging_level": str(dep.get("loggingLevel") or "info").upper(),
            "process_count_per_node": str(dep.get("maxConcurrencyPerInstance")),
            "legacy_model_job": "False",
            "NodeCount": str((dep.get("resources") or {}).get("instanceCount")),
            "append_row_file_name": str(dep.get("outputFileName")),
        }
        properties = {
            "azureml.pipelineid": str(uuid.uuid4()),
            "azureml.runsource": "azureml.PipelineRun",
            "runSource": "Unavailable",
            "runType": "HTTP",
            "azureml.parameters": json.dumps(parameters),
            "azureml.continue_on_step_failure": "False",
            "azureml.continue_on_failed_optional_input": "False",
            "azureml.pipelineComponent": "pipelinerun",
        }
        tags = {
            "outputType": "output_data",
            "inputType": "input_data",
            "azureml.batchrun": "true",
            "azureml.deploymentname": deployment["name"],
            "azureml.jobtype": "azureml.batchjob",
        }
        inputs = {
            key: {"description": None, "uri": spec.get("uri"), "mode": "ReadOnlyMount"}
            | {"jobInputType": spec.get("jobInputType")}
            for key, spec in ((sent.get("properties") or {}).get("inputData") or {}).items()
        }
        services = self._services(ws, name)
        created = system_data()
        job = {
            "id": f"{deployment['id']}/jobs/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments/jobs",
            "properties": {
                "provisioningState": "Succeeded",
                "inputData": inputs,
                "compute": {
                    "target": dep.get("compute"),
                    "instanceCount": None,
                    "isLocal": False,
                    "location": None,
                    "instanceType": None,
                    "properties": None,
                },
                "output": {"datastoreId": None, "path": None},
                "retrySettings": retry,
                "status": "Preparing",
                "interactionEndpoints": {
                    kind: {
                        "jobEndpointType": kind,
                        "port": None,
                        "endpoint": services[kind]["endpoint"],
                        "properties": None,
                    }
                    for kind in ("Tracking", "Studio")
                },
                "tags": tags,
                "properties": properties,
                "name": f"batch_run_{uuid.uuid4().hex[:8]}",  # recorded: a generated display name
            },
            "systemData": {
                k: created[k]
                for k in ("createdAt", "createdBy", "lastModifiedAt", "lastModifiedBy")
            },
        }
        # The pipeline run behind it, read back with `jobs.get`: the PipelineJob of the REST
        # API's examples (Job/PipelineJob/get.json, 2024-04-01) with the batch job's tags and
        # properties; it runs as the fake's pipeline jobs do (`job_polls` reads, then
        # Completed, or Failed by `job_failures` keyed by the experiment, the endpoint's name:
        # no source says what experiment a batch run is filed under).
        ws.jobs[name] = {
            "id": f"{ws.arm_id}/jobs/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "properties": {
                "description": None,
                "tags": tags,
                "properties": dict(properties),
                "displayName": job["properties"]["name"],
                "status": "NotStarted",
                "experimentName": endpoint,
                "services": services,
                "computeId": dep.get("compute"),
                "jobType": "Pipeline",
                "settings": {},
                "jobs": {},
                "inputs": {},
                "outputs": {},
            },
            "systemData": created,
        }
        self._job_progress[name] = self.job_polls
        self._start_batch_run(ws, name, deployment, sent)
        return job
