"""Managed online endpoints and deployments: traffic rules, provisioning, logs, scoring."""

from __future__ import annotations

import copy
import re

from tests.azure.fake.http import (
    ARM_HOST,
    PROVIDER,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Workspace,
    system_data,
)


class EndpointApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- online endpoints ------------------------------------------------------------------

    def _endpoint_body(
        self, ws: Workspace, name: str, props: dict, tags: dict, identity: dict | None
    ) -> dict:
        return {
            "id": f"{ws.arm_id}/onlineEndpoints/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints",
            "properties": props,
            "systemData": system_data(),
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
        if existing and existing["properties"]["provisioningState"] in (
            "Creating",
            "Updating",
            "Deleting",
        ):
            return arm_error(
                409, "UserError", f"Endpoint {name} is busy with another operation.", "Conflict"
            )
        invalid = self._invalid_traffic(found, name, traffic, mirror)
        if invalid:
            return arm_error(400, "UserError", invalid, "BadArgument")
        old = copy.deepcopy(existing) if existing else None
        auth = props.get("authMode", "AMLToken")
        state = {
            "description": props.get("description"),
            "properties": {
                "azureml.onlineendpointid": f"{found.arm_id}/onlineendpoints/{name}".lower()
            },
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
            resource["properties"]["scoringUri"] = self.scoring_uri_for(name, found.location)
            resource["properties"]["swaggerUri"] = (
                f"https://{name}.{found.location}.inference.ml.azure.com/swagger.json"
            )

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
        return Reply(201, resource, headers)  # recorded: 201 for the traffic update too

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
            d
            for d, pct in traffic.items()
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
            return arm_error(
                404, "UserError", f"Could not find endpoint {name}.", "EndpointNotFound"
            )
        return Reply(200, resource)

    def _list_endpoints(self, request: SeenRequest, sub: str, rg: str, ws: str) -> Reply:
        found = self._ws(sub, rg, ws)
        return Reply(200, {"value": list(found.endpoints.values()) if found else []})

    def _delete_endpoint(
        self, request: SeenRequest, sub: str, rg: str, ws: str, name: str
    ) -> Reply:
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
        return Reply(
            202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True)
        )

    def _endpoint_token(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is None:
            return arm_error(
                404, "UserError", f"Could not find endpoint {name}.", "EndpointNotFound"
            )
        if resource["properties"]["authMode"] != "AMLToken":
            return arm_error(
                400, "UserError", "Tokens are only issued to AMLToken endpoints.", "BadArgument"
            )
        return Reply(
            200,
            {
                "accessToken": "fake-aml-token",
                "tokenType": "Bearer",
                "expiryTimeUtc": 0,
                "refreshAfterTimeUtc": 0,
            },
        )

    def _endpoint_keys(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is not None and resource["properties"]["authMode"] == "Key":
            # only Key-mode endpoints (the recordings') have keys; fake values, never real ones
            return Reply(200, {"primaryKey": "fake-primary", "secondaryKey": "fake-secondary"})
        return arm_error(
            400,
            "UserError",
            "Keys are only available for endpoints with auth mode Key.",
            "BadArgument",
        )

    # --- online deployments ----------------------------------------------------------------

    def _put_deployment(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or endpoint not in found.endpoints:
            return arm_error(
                404, "UserError", f"Could not find endpoint {endpoint}.", "EndpointNotFound"
            )
        body = request.json()
        props = dict(body.get("properties", {}))
        model = props.get("model", "")
        if not self._model_exists(found, model):
            return arm_error(
                400,
                "UserError",
                f"Model {model} does not exist or is not accessible.",
                "BadArgument",
            )
        state = props | {
            "provisioningState": "Creating",
            "scaleSettings": {"scaleType": "Default"},
            "requestSettings": {
                "maxQueueWait": "PT0S",
                "requestTimeout": "PT5S",
                "maxConcurrentRequestsPerInstance": 1,
            },
            "livenessProbe": {
                "failureThreshold": 30,
                "successThreshold": 1,
                "timeout": "PT2S",
                "period": "PT10S",
                "initialDelay": "PT10S",
            },
            "readinessProbe": {
                "failureThreshold": 30,
                "successThreshold": 1,
                "timeout": "PT2S",
                "period": "PT10S",
                "initialDelay": "PT10S",
            },
            "egressPublicNetworkAccess": "Enabled",
            "endpointComputeType": "Managed",
            "modelMountPath": None,
            "dataCollector": props.get("dataCollector"),
            "privateNetworkConnection": False,
            "properties": dict(props.get("properties") or {}),
        }
        resource = {
            "id": f"{found.arm_id}/onlineEndpoints/{endpoint}/deployments/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
            "properties": state,
            "systemData": system_data(),
            "tags": body.get("tags") or {},
            "location": found.location,
            "kind": "Managed",
            "sku": {**(body.get("sku") or {"name": "Default", "capacity": 1}), "tier": "Standard"},
        }
        existed = name in found.deployments.get(endpoint, {})
        found.deployments.setdefault(endpoint, {})[name] = resource

        def done() -> None:
            """What the service adds once the container runs (seen in the recordings)."""
            state["provisioningState"] = "Succeeded"
            short = re.search(r"/models/([^/]+)/versions/([^/]+)$", model)
            variables = dict(state.get("environmentVariables") or {})
            variables["AZUREML_MODEL_DIR"] = (
                f"/var/azureml-app/azureml-models/{short[1]}/{short[2]}"
            )
            script = (state.get("codeConfiguration") or {}).get("scoringScript")
            if script:
                variables["AZUREML_ENTRY_SCRIPT"] = script
                variables["AML_APP_ROOT"] = "/var/azureml-app/onlinescoring"
            state["environmentVariables"] = variables

        failure = self._failing_deployments.get(name)
        lro = self._start_lro(request, found, "odidp", done, error=failure)
        if lro.error:
            state["provisioningState"] = "Failed"
        api = request.query["api-version"]
        headers = self._lro_headers(lro, found, api) | {
            "Location": f"https://{ARM_HOST}{resource['id']}?api-version={api}"
        }
        state["properties"]["AzureAsyncOperationUri"] = headers["Azure-AsyncOperation"].split(
            "&t="
        )[0]
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
            return arm_error(
                404, "UserError", f"Could not find deployment {name}.", "DeploymentNotFound"
            )
        return Reply(200, resource)

    def _list_deployments(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str
    ) -> Reply:
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        return Reply(
            200, {"value": list(found.deployments.get(endpoint, {}).values()) if found else []}
        )

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
        return Reply(
            202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True)
        )

    def _deployment_logs(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.deployments.get(endpoint, {}).get(name) if found else None
        if resource is None:
            return arm_error(
                404, "UserError", f"Could not find deployment {name}.", "DeploymentNotFound"
            )
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
        rows = (
            len((payload.get("input_data") or payload).get("data", []))
            if isinstance(payload, dict)
            else 1
        )
        return Reply(200, [0.5] * max(rows, 1), {"azureml-model-deployment": target})
