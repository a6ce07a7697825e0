"""Resource Manager template deployments at subscription scope, as azure-mgmt-resource-deployments
calls them, and at resource-group scope, as azure-mgmt-resource 24.0.0's ResourceManagementClient
(api-version 2025-04-01) calls them for prefect-azure's ACI worker (`resourceGroup()` is the
group's, a container group declared in the template starts its container, fake/
container_instances.py): PUT a deployment (201 + `Azure-AsyncOperation`, status documents
until Succeeded or Failed, then the deployment with its outputs), and POST whatIf (202 +
`Location`, 202 while it runs, then 200 with the WhatIfOperationResult). The templates run in
arm_templates.py against the fake's resources; deploying a workspace or registry also makes it
usable by the AML routes, a blob container makes it usable by the blob routes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from tests.azure.fake.arm_templates import Scope, TemplateEngine, TemplateError, what_if
from tests.azure.fake.http import ARM_HOST, Reply, SeenRequest, arm_error
from tests.azure.fake.state import Lro, _now

DEPLOYMENT = (
    r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Resources/deployments/(?P<name>[^/]+)"
)
PUT_EXAMPLE = (
    "example:resources.stable.2024-03-01.PutDeploymentSubscriptionTemplateSpecsWithId.json"
)
GROUP_DEPLOYMENT = (
    r"/subscriptions/(?P<sub>[^/]+)/resource[Gg]roups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.Resources/deployments/(?P<name>[^/]+)"
)
GROUP_PUT_EXAMPLE = (
    "example:resources.stable.2024-03-01.PutDeploymentWithOnErrorDeploymentSpecificDeployment.json"
)
GROUP_API_VERSIONS = {"2025-04-01"}  # azure-mgmt-resource 24.0.0's deployments
WHAT_IF_EXAMPLE = "example:resources.stable.2024-03-01.PostDeploymentWhatIfOnSubscription.json"
FAILED = (
    "At least one resource deployment operation failed. Please list deployment operations for "
    "details. Please see https://aka.ms/arm-deployment-operations for usage details."
)


class DeploymentApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    def add_deployment_routes(self) -> None:
        r = self._route
        r("PUT", DEPLOYMENT, PUT_EXAMPLE)(self._put_arm_deployment)
        r(
            "GET",
            DEPLOYMENT,
            why="the deployment document its PUT answered (the PUT example's body), with "
            "provisioningState advanced as the operation ran, or 404 DeploymentNotFound; no "
            "recording or vendored example shows a deployment GET",
        )(self._get_arm_deployment)
        r("POST", DEPLOYMENT + r"/whatIf", WHAT_IF_EXAMPLE)(self._what_if)
        r(
            "GET",
            DEPLOYMENT + r"/operationStatuses/(?P<op>[^/]+)",
            why="the PUT's Azure-AsyncOperation: {status: Running} until the template is "
            "deployed, then Succeeded or Failed with the error (ARM's async-operation pattern); "
            "no recording or vendored example shows this status document",
        )(self._arm_deployment_status)
        r(
            "GET",
            r"/subscriptions/(?P<sub>[^/]+)/operationresults/(?P<op>[^/]+)",
            WHAT_IF_EXAMPLE,  # its 202 names this Location; the GET answers its 200 body
        )(self._what_if_result)
        r("PUT", GROUP_DEPLOYMENT, GROUP_PUT_EXAMPLE)(self._put_arm_deployment)
        r(
            "GET",
            GROUP_DEPLOYMENT,
            why="the resource-group deployment its PUT answered (the PUT example's body), with "
            "provisioningState advanced as the operation ran; no example shows a deployment GET",
        )(self._get_arm_deployment)
        r(
            "GET",
            GROUP_DEPLOYMENT + r"/operationStatuses/(?P<op>[^/]+)",
            why="the resource-group PUT's Azure-AsyncOperation, as at subscription scope: "
            "{status: Running} until the template is deployed, then Succeeded or Failed; no "
            "recording or vendored example shows this status document",
        )(self._arm_deployment_status)

    # --- faults ------------------------------------------------------------------------------

    def fail_resource(self, name: str, code: str, message: str) -> None:
        """Deploying the resource of this name fails (e.g. a quota or a policy refusal)."""
        self._failing_resources[name.lower()] = (code, message)

    # --- deployments -------------------------------------------------------------------------

    def _checked_body(
        self, request: SeenRequest, rg: str | None = None
    ) -> tuple[dict[str, Any], Reply | None]:
        if bad := self._deployment_api_version(request, rg):
            return {}, bad
        body = request.json() or {}
        properties = body.get("properties") or {}
        if "location" not in body and rg is None:
            return body, arm_error(
                400, "InvalidDeploymentLocation", "A subscription deployment needs a location."
            )
        if not isinstance(properties.get("template"), dict):
            return body, arm_error(400, "InvalidTemplate", "properties.template is required.")
        if properties.get("mode") not in ("Incremental", "Complete"):
            return body, arm_error(400, "InvalidDeploymentMode", "mode must be Incremental.")
        return body, None

    def _deployment_api_version(self, request: SeenRequest, rg: str | None) -> Reply | None:
        if rg is None:
            return self._api_version(request, "resource_deployment")
        if request.query.get("api-version") in GROUP_API_VERSIONS:
            return None
        return arm_error(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{request.query.get('api-version')}' is invalid. Supported: "
            f"{sorted(GROUP_API_VERSIONS)}",
        )

    def _put_arm_deployment(
        self, request: SeenRequest, sub: str, name: str, rg: str | None = None
    ) -> Reply:
        body, bad = self._checked_body(request, rg)
        if bad:
            return bad
        properties = body["properties"]
        group = None
        if rg is not None:
            group = self.arm_resources.get(f"/subscriptions/{sub}/resourcegroups/{rg}".lower())
            if group is None:
                return arm_error(
                    404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
                )
        scope = f"/subscriptions/{sub}" + (f"/resourceGroups/{rg}" if rg else "")
        deployment_id = f"{scope}/providers/Microsoft.Resources/deployments/{name}"
        location = body.get("location") or (group or {}).get("location") or self.location
        template_hash = hashlib.sha256(
            json.dumps(properties["template"], sort_keys=True).encode()
        ).hexdigest()[:20]
        document = {
            "id": deployment_id,
            "name": name,
            "type": "Microsoft.Resources/deployments",
            "location": location,
            "tags": body.get("tags") or {},
            "properties": {
                "templateHash": str(int(template_hash, 16)),
                "parameters": properties.get("parameters") or {},
                "mode": properties["mode"],
                "provisioningState": "Accepted",
                "timestamp": _now(),
                "duration": "PT0S",
                "correlationId": str(uuid.uuid4()),
                "providers": [],
                "dependencies": [],
            },
        }
        if rg is None:
            document["location"] = location
        else:
            del document["location"]  # a resource-group deployment has none (the example)
        self.arm_deployments[deployment_id.lower() if rg else name.lower()] = document
        op_id = uuid.uuid4().hex.upper()

        def run() -> None:
            self._run_template(sub, document, properties, rg, location)

        lro = Lro(op_id, "arm", self.lro_polls, run)
        self.lros[op_id] = lro
        status = (
            f"https://{ARM_HOST}{deployment_id}/operationStatuses/{op_id}"
            f"?api-version={request.query['api-version']}"
        )
        return Reply(201, document, {"Azure-AsyncOperation": status, "x-ms-retry-after-ms": "20"})

    def deploy_template(
        self, template: dict, parameters: dict, subscription: str, location: str, name: str = ""
    ) -> dict[str, Any]:
        """Run a compiled template at subscription scope as a deployment does, without the
        SDK round trip: for tests whose world is what infra/ deploys. Its outputs."""
        engine = TemplateEngine(
            self.arm_resources, on_resource=self._provisioned, deployment_name=name
        )
        return engine.deploy(template, parameters, Scope(subscription, None, location)).outputs

    def _run_template(
        self,
        sub: str,
        document: dict,
        properties: dict,
        rg: str | None = None,
        location: str | None = None,
    ) -> None:
        engine = TemplateEngine(
            self.arm_resources,
            on_resource=self._provisioned,
            deployment_name=document["name"],
        )
        document["properties"]["provisioningState"] = "Running"
        outcome = engine.deploy(
            properties["template"],
            properties.get("parameters") or {},
            Scope(sub, rg, location or document["location"]),
        )
        document["properties"].update(
            provisioningState="Succeeded",
            outputs=outcome.outputs,
            outputResources=[{"id": i} for i in dict.fromkeys(outcome.touched)],
            duration="PT1S",
        )

    def _provisioned(self, resource: dict[str, Any]) -> None:
        """A failing resource (fault switch) stops the deployment; workspaces and registries
        become reachable through the AML routes once created."""
        name = resource["name"].lower()
        if name in self._failing_resources:
            code, message = self._failing_resources.pop(name)
            raise TemplateError(code, message, resource["id"])
        parts = resource["id"].split("/")
        subscription, group = parts[2], parts[4] if len(parts) > 4 else ""
        if resource["type"] == "Microsoft.MachineLearningServices/workspaces":
            if resource["name"].lower() not in self.workspaces:
                self.add_workspace(
                    subscription, group, resource["name"], location=resource.get("location")
                )
        elif resource["type"] == "Microsoft.MachineLearningServices/workspaces/computes":
            ws = self.workspaces.get(parts[8].lower())
            if ws is not None and resource["name"] not in ws.computes:
                ws.computes[resource["name"]] = self._compute(ws, resource["name"])
        elif (
            resource["type"] == "Microsoft.MachineLearningServices/registries"
            and resource["name"].lower() not in self.registries
        ):
            self.add_registry(subscription, group, resource["name"])
        elif resource["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers":
            self.blobs.setdefault((parts[8].lower(), resource["name"]), {})
        elif resource["type"] == "Microsoft.ContainerInstance/containerGroups":
            self.start_container_group(resource)

    def _deployment_document(self, sub: str, name: str, rg: str | None) -> dict | None:
        if rg is None:
            return self.arm_deployments.get(name.lower())
        deployment_id = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Resources"
        return self.arm_deployments.get(f"{deployment_id}/deployments/{name}".lower())

    def _get_arm_deployment(
        self, request: SeenRequest, sub: str, name: str, rg: str | None = None
    ) -> Reply:
        if bad := self._deployment_api_version(request, rg):
            return bad
        document = self._deployment_document(sub, name, rg)
        if document is None or not document["id"].startswith(f"/subscriptions/{sub}/"):
            return Reply(
                404,
                {
                    "error": {
                        "code": "DeploymentNotFound",
                        "message": f"Deployment '{name}' could not be found.",
                    }
                },
            )
        return Reply(200, document)

    def _arm_deployment_status(
        self, request: SeenRequest, sub: str, name: str, op: str, rg: str | None = None
    ) -> Reply:
        lro = self.lros.get(op)
        document = self._deployment_document(sub, name, rg)
        if lro is None or document is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        self._advance_deployment(lro, document)
        body: dict[str, Any] = {"status": "Running" if lro.status == "InProgress" else lro.status}
        if lro.status == "Failed":
            body["error"] = lro.error
        return Reply(200, body, {"x-ms-retry-after-ms": "20"})

    def _advance_deployment(self, lro: Lro, document: dict) -> None:
        if lro.status != "InProgress":
            return
        if lro.polls > 0:
            lro.polls -= 1
            return
        try:
            if lro.outcome is not None:
                lro.outcome()
            lro.status = "Succeeded"
        except TemplateError as error:
            lro.status = "Failed"
            lro.error = {
                "code": "DeploymentFailed",
                "target": document["id"],
                "message": FAILED,
                "details": [{"code": error.code, "target": error.target, "message": error.message}],
            }
            document["properties"].update(provisioningState="Failed", error=lro.error)

    # --- what-if -----------------------------------------------------------------------------

    def _what_if(self, request: SeenRequest, sub: str, name: str) -> Reply:
        body, bad = self._checked_body(request)
        if bad:
            return bad
        properties = body["properties"]
        op_id = uuid.uuid4().hex
        result: dict[str, Any] = {}

        def predict() -> None:
            try:
                changes = what_if(
                    self.arm_resources,
                    properties["template"],
                    properties.get("parameters") or {},
                    Scope(sub, None, body["location"]),
                )
                result.update(status="Succeeded", properties={"changes": changes})
            except TemplateError as error:
                result.update(
                    status="Failed",
                    error={"code": error.code, "message": error.message, "target": error.target},
                )

        lro = Lro(op_id, "arm", self.lro_polls, predict)
        self.lros[op_id] = lro
        self._what_if_results[op_id] = result
        location = f"https://{ARM_HOST}/subscriptions/{sub}/operationresults/{op_id}?api-version={request.query['api-version']}"
        return Reply(202, None, {"Location": location, "x-ms-retry-after-ms": "20"})

    def _what_if_result(self, request: SeenRequest, sub: str, op: str) -> Reply:
        lro = self.lros.get(op)
        if lro is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        if lro.status == "InProgress":
            if lro.polls > 0:
                lro.polls -= 1
                return Reply(202, None, {"Location": request.url, "x-ms-retry-after-ms": "20"})
            if lro.outcome is not None:
                lro.outcome()
            lro.status = "Succeeded"
        result = self._what_if_results[op]
        if result.get("status") == "Failed":
            return Reply(400, {"error": result["error"]})
        return Reply(200, result)
