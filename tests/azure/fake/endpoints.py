"""Managed online endpoints and deployments: identities, traffic rules, provisioning, logs.

Endpoints keep the identity they were created with: a user-assigned identity is answered in the
shape the recorded batch endpoint shows (test_batch_invoke.json: `principalId`/`clientId` per
identity, read from the identity resource the fake's Resource Manager holds), a system-assigned
one as the recorded online endpoint (test_online_endpoint_e2e.json), with a principal made up
when the endpoint is created.

A deployment provisions (when the fake's serving is on) by running its scoring script in a
container (containers.py); before that the service checks that the endpoint identity may read
what the deployment pulls from the shared registry (model or environment). No recording shows
that refusal: it is modelled on the Azure ML docs ("Authentication and authorization for online
endpoints": an endpoint's user-assigned identity gets no role automatically; pulling registry
assets takes a role with the registry's asset read action, such as AzureML Registry User), with
the role assignments read from what the fake's Resource Manager deployed (infra/main.bicep, or
`grant` in a test) and an operation error naming the identity, the role and the registry.

Traffic updates and deployment deletions are refused by Azure ML's traffic rules, the ones the
backends check too: backends/traffic_rules.py, which cites them (the Azure ML REST API's
`traffic`/`mirrorTraffic` descriptions and the safe-rollout article's limits). A refusal is
answered as the recordings show a refused request: 400 UserError with a BadArgument detail
carrying the rule's reason.
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

from backends.traffic_rules import RequestRefused, check_deletable, check_traffic
from tests.azure.fake.http import (
    ARM_HOST,
    PROVIDER,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Lro,
    ProvisioningFailed,
    Workspace,
    system_data,
)

TENANT = "00000000-0000-0000-0000-000000000000"
ROLE_ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments/"
REGISTRY_READERS = {
    "1823dd4f-9b8c-4ab6-ab4e-7397a3684615": "AzureML Registry User",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
}
"""Built-in roles whose actions include reading registry assets
(Microsoft.MachineLearningServices/registries/assets/read)."""
PROBE_DEFAULTS = {
    "failureThreshold": 30,
    "successThreshold": 1,
    "timeout": "PT2S",
    "period": "PT10S",
    "initialDelay": "PT10S",
}
REGISTRY_ASSET = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/")


class EndpointApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- online endpoints ------------------------------------------------------------------

    def _endpoint_body(
        self, ws: Workspace, name: str, props: dict, tags: dict, identity: dict
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
            "identity": identity,
        }

    def _endpoint_identity(self, ws: Workspace, name: str, sent: dict | None) -> dict | str:
        """The identity a new endpoint gets from its request (SystemAssigned when none is
        sent), or why it cannot have it."""
        kind = str((sent or {}).get("type") or "SystemAssigned")
        if kind.replace(" ", "").lower() == "systemassigned":
            # made when the endpoint is created: a re-created endpoint is a new principal
            principal = str(uuid.uuid4())
            return {"type": "SystemAssigned", "principalId": principal, "tenantId": TENANT}
        if kind.lower() != "userassigned":
            return f"Identity type {kind} is not supported for online endpoints."
        identities = {}
        for resource_id in (sent or {}).get("userAssignedIdentities") or {}:
            found = self.arm_resources.get(resource_id.lower())
            if found is None or found["type"] != "Microsoft.ManagedIdentity/userAssignedIdentities":
                return f"The user-assigned identity {resource_id} was not found."
            identities[found["id"]] = {
                "principalId": found["properties"]["principalId"],
                "clientId": found["properties"]["clientId"],
            }
        if not identities:
            return "A UserAssigned identity needs userAssignedIdentities."
        return {
            "type": "UserAssigned",
            "principalId": TENANT,  # recorded: zeros for a user-assigned-only identity
            "tenantId": TENANT,
            "userAssignedIdentities": identities,
        }

    @staticmethod
    def _same_identity(kept: dict, sent: dict | None) -> bool:
        if sent is None:
            return True
        kind = str(sent.get("type") or "").replace(" ", "").lower()
        if kind != kept["type"].lower():
            return False
        held = {k.lower() for k in kept.get("userAssignedIdentities") or {}}
        return held == {k.lower() for k in sent.get("userAssignedIdentities") or {}}

    # --- role assignments -------------------------------------------------------------------

    def grant(self, principal_id: str, role: str, scope: str) -> str:
        """A role assignment as Resource Manager holds one (what infra/ deploys; for tests
        that arrange a world without running the Bicep). `role`: the role definition GUID."""
        subscription = scope.split("/")[2]
        definition = (
            f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/"
            f"{role}"
        )
        name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}|{principal_id}|{definition}"))
        resource_id = f"{scope}{ROLE_ASSIGNMENTS}{name}"
        self.arm_resources[resource_id.lower()] = {
            "id": resource_id,
            "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": definition,
                "principalId": principal_id,
                "principalType": "ServicePrincipal",
            },
        }
        return resource_id

    def revoke(self, principal_id: str, role: str) -> list[dict[str, Any]]:
        """Remove the principal's assignments of `role` (a GUID) at any scope; what was removed
        (give it back with `restore`)."""
        removed = [
            doc
            for doc in self.role_assignments(principal_id)
            if doc["properties"]["roleDefinitionId"].lower().endswith(role.lower())
        ]
        for doc in removed:
            del self.arm_resources[doc["id"].lower()]
        return removed

    def restore(self, assignments: list[dict[str, Any]]) -> None:
        for doc in assignments:
            self.arm_resources[doc["id"].lower()] = doc

    def role_assignments(self, principal_id: str) -> list[dict[str, Any]]:
        return [
            doc
            for doc in self.arm_resources.values()
            if doc.get("type") == "Microsoft.Authorization/roleAssignments"
            and str(doc.get("properties", {}).get("principalId")) == principal_id
        ]

    def _principals(self, identity: dict) -> list[tuple[str, str]]:
        """(how the identity is named, principal ID) of an endpoint identity."""
        if identity.get("type") == "SystemAssigned":
            return [("the endpoint's system-assigned identity", identity["principalId"])]
        return [
            (resource_id, item["principalId"])
            for resource_id, item in (identity.get("userAssignedIdentities") or {}).items()
        ]

    def _registry_refusal(self, endpoint: dict, assets: list[str]) -> str | None:
        """Why the endpoint identity may not pull these registry assets, or None."""
        for asset in assets:
            match = REGISTRY_ASSET.match(asset)
            if match is None:
                continue
            registry = self.registries.get(match["registry"].lower())
            if registry is None:
                return f"Registry {match['registry']} was not found."
            registry_id = (
                f"/subscriptions/{registry.subscription}/resourceGroups/"
                f"{registry.resource_group}/providers/{PROVIDER}/registries/{registry.name}"
            ).lower()
            for named, principal in self._principals(endpoint.get("identity") or {}):
                allowed = any(
                    _covers(doc["id"].lower().split(ROLE_ASSIGNMENTS.lower())[0], registry_id)
                    and doc["properties"]["roleDefinitionId"].rsplit("/", 1)[-1].lower()
                    in REGISTRY_READERS
                    for doc in self.role_assignments(principal)
                )
                if not allowed:
                    return (
                        f"Failed to pull {asset}: the endpoint identity {named} (principal "
                        f"{principal}) has no role on registry {registry.name} that allows "
                        "Microsoft.MachineLearningServices/registries/assets/read. Assign it "
                        f"AzureML Registry User on {registry_id} and deploy again."
                    )
        return None

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
        if existing is None:
            identity = self._endpoint_identity(found, name, body.get("identity"))
            if isinstance(identity, str):
                return arm_error(400, "UserError", identity, "BadArgument")
        elif self._same_identity(existing["identity"], body.get("identity")):
            identity = existing["identity"]
        else:
            return arm_error(
                400,
                "UserError",
                f"The identity of endpoint {name} cannot be changed; delete and recreate the "
                "endpoint to run it under another identity.",
                "BadArgument",
            )
        auth = props.get("authMode", "AMLToken")
        state = {
            "description": props.get("description"),
            "properties": {
                "azureml.onlineendpointid": f"{found.arm_id}/onlineendpoints/{name}".lower()
            },
            "scoringUri": None,
            "swaggerUri": None,
            "authMode": auth,
            # an update answers Creating too (test_online_deployment_create #98, the traffic PUT)
            "provisioningState": "Creating",
            "compute": None,
            "traffic": traffic,
            "mirrorTraffic": mirror,
            "publicNetworkAccess": props.get("publicNetworkAccess", "Enabled"),
        }
        if existing:
            state["scoringUri"] = existing["properties"]["scoringUri"]
            state["swaggerUri"] = existing["properties"]["swaggerUri"]
        resource = self._endpoint_body(found, name, state, body.get("tags") or {}, identity)
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
        headers = self._put_headers(lro, found, api, resource["id"])
        status_uri = headers["Azure-AsyncOperation"].split("&t=")[0]
        resource["properties"]["properties"]["AzureAsyncOperationUri"] = status_uri
        return Reply(201, resource, headers)  # recorded: 201 for the traffic update too

    def _put_headers(self, lro: Lro, ws: Workspace, api: str, resource_id: str) -> dict:
        """A PUT's answer headers for an online or batch endpoint or deployment: the
        operation's, and the resource's own URL as `Location`."""
        return self._lro_headers(lro, ws, api) | {
            "Location": f"https://{ARM_HOST}{resource_id}?api-version={api}"
        }

    def _invalid_traffic(self, ws: Workspace, name: str, traffic: dict, mirror: dict) -> str | None:
        """Why Azure refuses this routing (backends/traffic_rules.py holds Azure's rules and
        their sources), or None; a deployment still provisioning, or failed, is not running."""
        deployments = ws.deployments.get(name, {})
        try:
            check_traffic(
                name,
                deployments,
                traffic,
                mirror,
                not_running=[
                    d
                    for d, resource in deployments.items()
                    if resource["properties"]["provisioningState"] != "Succeeded"
                ],
            )
        except RequestRefused as refused:
            return refused.reason
        return None

    def _get_endpoint(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "endpoint"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is None:
            return endpoint_not_found(name)
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
            for deployment in found.deployments.pop(name, {}):
                self._stop_container(
                    self.containers.pop((found.name.lower(), name, deployment), None)
                )

        found.endpoints[name]["properties"]["provisioningState"] = "Deleting"
        lro = self._start_lro(request, found, "oeidp", done)
        return Reply(
            202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True)
        )

    def _endpoint_token(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        found = self._ws(sub, rg, ws)
        resource = found.endpoints.get(name) if found else None
        if resource is None:
            return endpoint_not_found(name)
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
        """Create or update a deployment (recorded: 201, then its operation polled while the
        service provisions it). With the fake's serving on, provisioning is real: the
        deployment's container starts (containers.py) and the operation ends when its server
        is ready or has failed."""
        if bad := self._api_version(request, "deployment"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or endpoint not in found.endpoints:
            return endpoint_not_found(endpoint)
        body = request.json()
        props = dict(body.get("properties", {}))
        model = props.get("model", "")
        if not self._model_exists(found, model):
            return model_not_found(model)
        state = props | {
            "provisioningState": "Creating",
            "scaleSettings": {"scaleType": "Default"},
            # what was sent, over the service's defaults (as the recorded deployment shows them)
            "requestSettings": {
                "maxQueueWait": "PT0S",
                "requestTimeout": "PT5S",
                "maxConcurrentRequestsPerInstance": 1,
            }
            | (props.get("requestSettings") or {}),
            "livenessProbe": PROBE_DEFAULTS | (props.get("livenessProbe") or {}),
            "readinessProbe": PROBE_DEFAULTS | (props.get("readinessProbe") or {}),
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
        key = (found.name.lower(), endpoint, name)
        failure = self._failing_deployments.get(name) or self._registry_refusal(
            found.endpoints[endpoint], [model, str(props.get("environmentId") or "")]
        )
        container = None
        if failure is None and self.serving:
            try:
                container = self._start_container(
                    found, resource, self._container_spec(found, state)
                )
            except ProvisioningFailed as refused:
                failure = refused.message

        def done() -> None:
            """What the service adds once the container runs (seen in the recordings)."""
            if container is not None:
                if container.state != "Ready":
                    state["provisioningState"] = "Failed"
                    self._stop_container(container)
                    self._stop_container(self.containers.pop(key, None))
                    self._failed_containers[key] = container
                    raise self._container_failure(container)
                self._stop_container(self.containers.get(key))
                self.containers[key] = container
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

        lro = self._start_lro(
            request,
            found,
            "odidp",
            done,
            error=failure,
            pending=(lambda: container.state == "Starting") if container is not None else None,
        )
        if lro.error:
            state["provisioningState"] = "Failed"
        api = request.query["api-version"]
        headers = self._put_headers(lro, found, api, resource["id"])
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
            return deployment_not_found(name)
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
        try:
            check_deletable(endpoint, name, props["traffic"], props["mirrorTraffic"])
        except RequestRefused as refused:
            return arm_error(400, "UserError", refused.reason, "BadArgument")

        def done() -> None:
            found.deployments.get(endpoint, {}).pop(name, None)
            self._stop_container(self.containers.pop((found.name.lower(), endpoint, name), None))

        lro = self._start_lro(request, found, "odidp", done)
        return Reply(
            202, "null", self._lro_headers(lro, found, request.query["api-version"], delete=True)
        )

    def _deployment_logs(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        """`getLogs`: `{"content": ...}` (what azure-ai-ml reads; no recording has it), the tail
        of the deployment's container log when one ran."""
        found = self._ws(sub, rg, ws)
        resource = found.deployments.get(endpoint, {}).get(name) if found else None
        if resource is None:
            return deployment_not_found(name)
        key = (found.name.lower(), endpoint, name)
        container = self.containers.get(key) or self._failed_containers.get(key)
        if container is not None:
            lines = int((request.json() or {}).get("tail") or 100)
            return Reply(200, {"content": container.log_tail(lines) + "\n"})
        message = self._failing_deployments.get(
            name, "no container runs (the fake's serving is off)"
        )
        return Reply(200, {"content": f"fake container log for {name}: {message}\n"})


def endpoint_not_found(name: str) -> Reply:
    """The service's 404 for an endpoint (test_online_endpoint_e2e.json); batch endpoints answer
    it too (no recording shows theirs)."""
    return arm_error(404, "UserError", f"Could not find endpoint {name}.", "EndpointNotFound")


def deployment_not_found(name: str) -> Reply:
    return arm_error(404, "UserError", f"Could not find deployment {name}.", "DeploymentNotFound")


def model_not_found(model: str) -> Reply:
    """A deployment's refusal of a model that does not exist or cannot be read."""
    return arm_error(
        400, "UserError", f"Model {model} does not exist or is not accessible.", "BadArgument"
    )


def _covers(scope: str, resource_id: str) -> bool:
    """Whether a role assigned at `scope` applies to `resource_id` (itself or below it)."""
    return resource_id == scope or resource_id.startswith(scope.rstrip("/") + "/")
