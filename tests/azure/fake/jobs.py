"""Pipeline jobs: submission, status, child runs in run history, outputs in storage."""

from __future__ import annotations

import json
import re
import uuid

from tests.azure.fake.http import (
    ARM_HOST,
    PROVIDER,
    TERMINAL_JOB_STATUSES,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Workspace,
    system_data,
)

REGISTRY_COMPONENT = re.compile(
    r"azureml://registries/(?P<registry>[^/]+)/components/(?P<name>[^/]+)/versions/(?P<version>[^/]+)"
)


class JobApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- pipeline jobs ---------------------------------------------------------------------

    def _studio(self, ws: Workspace, name: str) -> str:
        return f"https://ml.azure.com/runs/{name}?wsid={ws.arm_id}"

    def _services(self, ws: Workspace, name: str) -> dict:
        return {
            "Tracking": {
                "jobServiceType": "Tracking",
                "port": None,
                "endpoint": f"azureml://{ws.location}.api.azureml.ms/mlflow/v1.0{ws.arm_id}?",
                "status": None,
                "errorMessage": None,
                "properties": None,
                "nodes": None,
            },
            "Studio": {
                "jobServiceType": "Studio",
                "port": None,
                "endpoint": self._studio(ws, name),
                "status": None,
                "errorMessage": None,
                "properties": None,
                "nodes": None,
            },
        }

    def _put_job(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "job"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        if name in found.jobs:
            return arm_error(409, "UserError", f"Job {name} already exists.", "JobExists")
        props = request.json()["properties"]
        if props.get("jobType") != "Pipeline":
            return arm_error(400, "UserError", "The fake runs pipeline jobs only.", "BadArgument")
        compute = (
            (props.get("settings") or {}).get("default_compute") or props.get("computeId") or ""
        )
        if compute.rsplit("/", 1)[-1] not in found.computes:
            return arm_error(400, "UserError", f"Compute {compute} not found.", "ComputeNotFound")
        for step, node in (props.get("jobs") or {}).items():
            component = node.get("componentId", "")
            if self._component_version(found, component) is None:
                return arm_error(
                    400,
                    "UserError",
                    f"Step {step}: component {component} not found.",
                    "BadArgument",
                )
        outputs = {
            out: {
                "description": None,
                "uri": None,
                "assetName": None,
                "assetVersion": None,
                "mode": spec.get("mode", "ReadWriteMount"),
                "pathOnCompute": None,
                "autoDeleteSetting": None,
                "jobOutputType": spec.get("jobOutputType", "uri_folder"),
            }
            for out, spec in (props.get("outputs") or {}).items()
        }
        resource = {
            "id": f"{found.arm_id}/jobs/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "properties": {
                "description": props.get("description"),
                "tags": props.get("tags") or {},
                "properties": (props.get("properties") or {})
                | {
                    "azureml.DevPlatv2": "true",
                    "azureml.DatasetAccessMode": "Asset",
                    "azureml.runsource": "azureml.PipelineRun",
                    "runSource": "MFE",
                    "runType": "HTTP",
                    "azureml.parameters": json.dumps(
                        {
                            k: v.get("value")
                            for k, v in (props.get("inputs") or {}).items()
                            if "value" in v
                        }
                    ),
                    "azureml.continue_on_step_failure": "True",
                    "azureml.continue_on_failed_optional_input": "True",
                    "azureml.enforceRerun": "False",
                    "azureml.defaultComputeName": compute.rsplit("/", 1)[-1],
                    "azureml.defaultDataStoreName": "workspaceblobstore",
                    "azureml.pipelineComponent": "pipelinerun",
                },
                "displayName": props.get("displayName") or name,
                "status": "NotStarted",
                "experimentName": props.get("experimentName") or "Default",
                "services": self._services(found, name),
                "computeId": compute or None,
                "isArchived": False,
                "identity": None,
                "componentId": None,
                "notificationSetting": None,
                "secretsConfiguration": None,
                "jobType": "Pipeline",
                "settings": props.get("settings") or {},
                "jobs": props.get("jobs") or {},
                # the service adds a null description to every input (create_with_registries #13)
                "inputs": {
                    k: {"description": None} | v for k, v in (props.get("inputs") or {}).items()
                }
                if props.get("inputs") is not None
                else None,
                "outputs": outputs,
                "sourceJobId": None,
            },
            "systemData": system_data(),
        }
        found.jobs[name] = resource
        self._job_progress[name] = self.job_polls
        location = f"https://{ARM_HOST}{resource['id']}?api-version={request.query['api-version']}"
        return Reply(201, resource, {"Location": location})

    def _component_version(self, ws: Workspace, component_id: str) -> dict | None:
        """The component version a step names: an ARM id in the job's workspace, or a shared
        registry's `azureml://registries/<r>/components/<n>/versions/<v>`, which the job body
        carries as it is (test_pipeline_job...create_with_registries #13, step `a`)."""
        registry = REGISTRY_COMPONENT.fullmatch(component_id)
        if registry:
            reg = self.registries.get(registry["registry"].lower())
            versions = reg.components.get(registry["name"], {}) if reg else {}
            return versions.get(registry["version"])
        cname, _, cversion = component_id.rpartition("/versions/")
        return ws.components.get(cname.rsplit("/", 1)[-1], {}).get(cversion)

    def _get_job(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "job"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.jobs.get(name) if found else None
        if resource is None:
            return arm_error(404, "UserError", f"Job {name} not found.", "JobNotFound")
        props = resource["properties"]
        if props.get("parentJobName"):
            # a pipeline step is not served by MFE: it answers without properties and the SDK
            # reads the step from run history instead (azure-ai-ml's _is_pipeline_child_job:
            # "pipeline child job has no properties"; JobOperations.get -> runs get_run)
            return Reply(200, {**resource, "properties": None})
        if props["jobType"] == "Pipeline" and props["status"] not in TERMINAL_JOB_STATUSES:
            left = self._job_progress.get(name, 0)
            if left > 0:
                self._job_progress[name] = left - 1
                props["status"] = "Running"
            else:
                self._finish_job(found, resource)
        return Reply(200, resource)

    def _finish_job(self, ws: Workspace, resource: dict) -> None:
        """Children run, outputs land in storage where AML puts them: azureml/{job}/{output}/."""
        props = resource["properties"]
        experiment = props["experimentName"]
        failure = self.job_failures.get(experiment)
        provided = self.job_outputs.get(experiment, {})
        children = []
        steps = list(props["jobs"])
        failing = None
        if failure is not None:
            named = failure.split(":", 1)[0]
            failing = named if named in steps else steps[-1]
        for step, node in props["jobs"].items():
            child = f"{uuid.uuid4()}"
            step_failed = failing is not None and steps.index(step) >= steps.index(failing)
            spec = self._component_version(ws, node["componentId"])["properties"]["componentSpec"]
            for output in spec.get("outputs") or {}:
                source = provided.get(f"{step}.{output}")
                if source is None or step_failed:
                    continue
                self.put_files(
                    ws.storage_account, ws.container, f"azureml/{child}/{output}", source
                )
                bound = ((node.get("outputs") or {}).get(output) or {}).get("value", "")
                parent = re.fullmatch(r"\$\{\{parent\.outputs\.(\w+)\}\}", bound)
                if parent:
                    self.put_files(
                        ws.storage_account,
                        ws.container,
                        f"azureml/{resource['name']}/{parent[1]}",
                        source,
                    )
            status = "Completed"
            if step_failed:
                status = "Failed" if step == failing else "Canceled"
            ws.jobs[child] = self._command_job(ws, child, step, resource, spec, status)
            children.append((child, step, status, failure if step == failing else None))
        self._children[resource["name"]] = children
        props["status"] = "Failed" if failure else "Completed"
        props["properties"]["azureml.pipelines.stages"] = json.dumps(
            {"Initialization": None, "Execution": {"Status": props["status"]}}
        )

    def _command_job(
        self, ws: Workspace, name: str, step: str, parent: dict, spec: dict, status: str
    ) -> dict:
        return {
            "id": f"{ws.arm_id}/jobs/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "properties": {
                "description": None,
                "tags": {},
                "properties": {"azureml.nodeid": step, "azureml.pipeline": parent["name"]},
                "displayName": step,
                "status": status,
                "experimentName": parent["properties"]["experimentName"],
                "services": self._services(ws, name),
                "computeId": parent["properties"]["computeId"],
                "parentJobName": parent["name"],
                "isArchived": False,
                "identity": None,
                "componentId": None,
                "jobType": "Command",
                "codeId": spec.get("code", "").removeprefix("azureml:") or None,
                "command": spec.get("command", ""),
                "environmentId": spec.get("environment", "").removeprefix("azureml:") or None,
                "environmentVariables": {},
                "inputs": {},
                "outputs": {},
                "resources": {"instanceCount": 1, "properties": {}, "shmSize": "2g"},
                "distribution": None,
                "limits": None,
            },
            "systemData": system_data(),
        }

    def _discovery(self, request: SeenRequest) -> Reply:
        base = f"https://{request.host}"
        return Reply(
            200,
            {
                "api": base,
                "catalog": base,
                "experimentation": base,
                "history": base,
                "hyperdrive": base,
                "labeling": base,
                "modelmanagement": base,
                "pipelines": base,
                "studio": "https://ml.azure.com",
            },
        )

    def _get_run(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        """A step's run-history record, as its parent's `runs/{id}/children` lists it."""
        found = self._ws(sub, rg, ws)
        for parent, children in self._children.items():
            for child, step, status, failure in children:
                if found is not None and child == name and parent in found.jobs:
                    compute = found.jobs[parent]["properties"]["computeId"] or ""
                    target = compute.rsplit("/", 1)[-1]
                    return Reply(
                        200, self._run(found, parent, child, step, status, failure, target)
                    )
        return Reply(404, {"error": {"code": "UserError", "message": f"Run {name} not found"}})

    def _run_children(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        found = self._ws(sub, rg, ws)
        if found is None or name not in found.jobs:
            return Reply(404, {"error": {"code": "UserError", "message": f"Run {name} not found"}})
        compute = found.jobs[name]["properties"]["computeId"] or ""
        target = compute.rsplit("/", 1)[-1]
        return Reply(
            200,
            {
                "value": [
                    self._run(found, name, child, step, status, failure, target)
                    for child, step, status, failure in self._children.get(name, [])
                ],  # no continuationToken / nextLink: the recorded list (#25) has neither
            },
        )

    @staticmethod
    def _run(
        ws: Workspace,
        parent: str,
        child: str,
        step: str,
        status: str,
        failure: str | None,
        target: str,
    ) -> dict:
        """A step's run-history record (the shape of the recorded `runs/{id}/children`)."""
        user = {
            "userObjectId": "00000000-0000-0000-0000-000000000000",
            "userPuId": "0000000000000000",
            "userIdp": None,
            "userAltSecId": None,
            "userIss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
            "userTenantId": "00000000-0000-0000-0000-000000000000",
            "userName": "fake-user",
            "upn": None,
            "clientApplicationId": None,
            "applicationACR": None,
        }
        error = None
        if failure:
            error = {
                "error": {
                    "code": "UserError",
                    "severity": None,
                    "message": failure,
                    "messageFormat": None,
                    "messageParameters": {},
                    "referenceCode": None,
                    "detailsUri": None,
                    "target": None,
                    "details": [],
                    "innerError": None,
                    "debugInfo": None,
                    "additionalInfo": None,
                },
                "correlation": None,
                "environment": None,
                "location": None,
                "time": "0001-01-01T00:00:00+00:00",
                "componentName": "CommonRuntime",
            }
        cancel = f"https://{ws.location}.api.azureml.ms/studioservice/apiv2{ws.arm_id}/runs/{child}/Cancel"
        return {
            "runNumber": 1,
            "rootRunId": parent,
            "createdUtc": "2026-01-01T10:00:00.000000+00:00",
            "createdBy": user,
            "userId": "fake-user",
            "token": None,
            "tokenExpiryTimeUtc": None,
            "error": error,
            "warnings": [{"source": "fake", "message": failure}] if failure else [],
            "revision": 5,
            "statusRevision": 3,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, child)),
            "parentRunUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, parent)),
            "rootRunUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, parent)),
            "lastStartTimeUtc": None,
            "currentComputeTime": None,
            "computeDuration": "00:00:01.5000000",
            "effectiveStartTimeUtc": None,
            "lastModifiedBy": user,
            "lastModifiedUtc": "2026-01-01T10:00:01.500000+00:00",
            "duration": "00:00:01.5000000",
            "cancelationReason": None,
            "currentAttemptId": 1,
            "runId": child,
            "parentRunId": parent,
            "experimentId": str(uuid.uuid5(uuid.NAMESPACE_URL, parent)),
            "status": status,
            "startTimeUtc": "2026-01-01T10:00:00.000000+00:00",
            "endTimeUtc": "2026-01-01T10:00:01.500000+00:00",
            "scheduleId": None,
            "displayName": step,
            "name": "azureml_anonymous",
            "dataContainerId": f"dcid.{child}",
            "description": None,
            "hidden": False,
            "runType": "azureml.StepRun",
            "runTypeV2": {
                "orchestrator": "Execution",
                "traits": ["azureml.StepRun", "scriptRun", "remote", "CommonRuntime"],
                "attribution": "Aether",
                "computeType": "AmlcTrain",
            },
            "properties": {
                "azureml.DevPlatv2": "true",
                "azureml.DatasetAccessMode": "Asset",
                "StepType": "PythonScriptStep",
                "ComputeTargetType": "AmlCompute",
                "azureml.moduleid": child,
                "azureml.moduleFamilyId": "0",
                "azureml.moduleName": "azureml_anonymous",
                "azureml.moduleVersion": "1",
                "azureml.runsource": "azureml.StepRun",
                "azureml.nodeid": step,
                "azureml.pipelinerunid": parent,
                "azureml.pipeline": parent,
                "azureml.rootpipelinerunid": parent,
                "azureml.pipelineComponent": "masterescloud",
                "_azureml.ComputeTargetType": "amlctrain",
                "_azureml.ClusterName": target,
                "ProcessInfoFile": "azureml-logs/process_info.json",
                "ProcessStatusFile": "azureml-logs/process_status.json",
            },
            "parameters": {},
            "actionUris": {"Cancel": cancel, "Diagnose": ""},
            "scriptName": None,
            "target": target,
            "uniqueChildRunComputeTargets": [],
            "tags": {"azureml.nodeid": step, "azureml.pipeline": parent},
            "settings": {},
            "services": {},
            "inputDatasets": [],
            "outputDatasets": [],
            "runDefinition": None,
            "jobSpecification": None,
            "primaryMetricName": None,
            "createdFrom": None,
            "cancelUri": cancel,
            "completeUri": None,
            "diagnosticsUri": "",
            "computeRequest": {"nodeCount": 1, "gpuCount": 0},
            "compute": {
                "target": target,
                "targetType": "amlcompute",
                "vmSize": None,
                "instanceType": None,
                "instanceCount": 1,
                "gpuCount": 0,
                "priority": None,
                "region": None,
                "armId": None,
                "properties": None,
            },
            "retainForLifetimeOfWorkspace": None,
            "queueingInfo": None,
            "inputs": None,
            "outputs": None,
        }

    def _run_data(self, request: SeenRequest, sub: str, rg: str, ws: str) -> Reply:
        body = request.json() or {}
        run_id = body.get("runId") or ""
        return Reply(
            200, {"runMetadata": {"runId": run_id, "status": "Completed", "outputs": None}}
        )
