"""Workspaces, datastores, computes and versioned assets (data, models, code, environments,
components) as the AML management front end serves them."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.azure.fake.http import (
    ARM_HOST,
    PROVIDER,
    SAS_FIELDS,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Handler,
    Workspace,
    _now,
    stored_component_spec,
    system_data,
)


class WorkspaceApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

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
                    "keyVault": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.Keyvault/vaults/kv{found.guid[:8]}",
                    "applicationInsights": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.insights/components/ai{found.guid[:8]}",
                    "containerRegistry": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.ContainerRegistry/registries/cr{found.guid[:8]}",
                    "imageBuildCompute": None,
                    "managedNetwork": {
                        "changeableIsolationModes": [
                            "AllowInternetOutbound",
                            "AllowOnlyApprovedOutbound",
                        ],
                        "isolationMode": "Disabled",
                        "enableNetworkMonitor": False,
                        "enableFirewallLog": False,
                    },
                    "allowRoleAssignmentOnRG": True,
                    "creationTime": "2026-01-01T00:00:00.0000000Z",
                    "notebookInfo": {
                        "resourceId": found.guid.replace("-", ""),
                        "fqdn": f"ml-{found.name}-{loc}-{found.guid}.{loc}.notebooks.azure.net",
                        "isPrivateLinkEnabled": False,
                        "notebookPreparationError": None,
                    },
                    "linkedModelInventoryArmId": None,
                    "privateLinkCount": 0,
                    "ipAllowlist": [],
                    "networkAcls": {
                        "defaultAction": "Allow",
                        "bypass": "",
                        "ipRules": [],
                        "resourceAccessRules": [],
                    },
                    "serverlessComputeSettings": None,
                    "EnableSoftwareBillOfMaterials": False,
                    "sdkTelemetryAppInsightsKey": str(uuid.uuid5(uuid.NAMESPACE_URL, found.guid)),
                    "sasGetterUri": "",
                    "enableServiceSideCMKEncryption": False,
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
                "systemData": system_data(),
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
                "credentials": {"credentialsType": ws.datastore_credentials},
                "intellectualProperty": None,
                "subscriptionId": ws.subscription,
                "resourceGroup": ws.resource_group,
                "datastoreType": "AzureBlob",
                "accountName": ws.storage_account,
                "containerName": containers[name],
                "endpoint": "core.windows.net",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            },
            "systemData": system_data(),
        }

    def _get_datastore(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "datastore"):
            return bad
        found = self._ws(sub, rg, ws)
        store = self._datastore(found, name) if found else None
        if store is None:
            return arm_error(404, "UserError", f"Datastore {name} not found.", "DatastoreNotFound")
        return Reply(200, store)

    def _list_datastores(self, request: SeenRequest, sub: str, rg: str, ws: str) -> Reply:
        if bad := self._api_version(request, "datastore"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        stores = [
            self._datastore(found, n) for n in ("workspaceblobstore", "workspaceartifactstore")
        ]
        if request.query.get("isDefault") == "true":
            stores = [s for s in stores if s and s["properties"]["isDefault"]]
        return Reply(200, {"value": stores})

    def _list_secrets(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "datastore"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None or found.datastore_credentials == "None":
            return arm_error(400, "UserError", "No secrets for credentials of type None.")
        signature = "fakesig" + uuid.uuid4().hex
        self.issued_sas.add(signature)
        return Reply(
            200,
            {
                "secretsType": "Sas",
                "sasToken": f"?sv=2021-10-04&sig={signature}&se=2099-01-01&srt=co&ss=bf&sp=rcuwdl",
            },
        )

    def _start_pending_upload(
        self, request: SeenRequest, sub: str, rg: str, ws: str, name: str, version: str
    ) -> Reply:
        """Code snapshots (components' and online deployments') go to a container the service
        hands out with a short-lived SAS: CodeVersions_CreateOrGetStartPendingUpload of the
        REST API (azure-rest-api-specs, machinelearningservices; its registry twin's example is
        .../examples/Registry/DataVersionBase/createOrGetStartPendingUpload.json), in the shape
        the registry's recorded tempdatarefs answer has (blobReferenceForConsumption)."""
        if bad := self._api_version(request, "code"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        signature = "fakesig" + uuid.uuid4().hex
        self.issued_sas.add(signature)
        container = f"{found.guid}-{uuid.uuid4().hex[:24]}"
        self.blobs[(found.storage_account, container)] = {}
        blob_uri = f"https://{found.storage_account}.blob.core.windows.net:443/{container}"
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": blob_uri,
                    "storageAccountArmId": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.Storage/storageAccounts/{found.storage_account}",
                    "credential": {
                        "credentialType": "SAS",
                        "sasUri": f"{blob_uri}?{SAS_FIELDS}&sig={signature}",
                    },
                },
                "pendingUploadId": str(uuid.uuid4()),
                "pendingUploadType": "TemporaryBlobReference",
            },
        )

    # --- versioned assets (data, models) ---------------------------------------------------

    def _asset_store(self, ws: Workspace, kind: str) -> dict[str, dict[str, dict]]:
        return {
            "data": ws.data,
            "model": ws.models,
            "code": ws.codes,
            "environment": ws.environments,
            "component": ws.components,
        }[kind]

    def _asset_lister(self, kind: str) -> Handler:
        def list_versions(request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
            if bad := self._api_version(request, kind):
                return bad
            found = self._ws(sub, rg, ws)
            if found is None:
                return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
            store = self._asset_store(found, kind)
            versions = store.get(name)
            if "hash" in request.query:  # a content lookup spans every container (recorded)
                versions = {f"{n}/{v}": item for n, vs in store.items() for v, item in vs.items()}
            if versions is None and kind not in ("data", "model"):
                versions = {}
            if versions is None:
                label = {"data": "Data", "model": "Model"}.get(kind, kind.title())
                return arm_error(
                    404,
                    "UserError",
                    f"{label} container with name: {name} not found.",
                    f"{label}NotFound",
                )
            items = [i for i in versions.values() if not i["properties"].get("isAnonymous")]
            query = request.query
            if "hash" in query:  # anonymous code snapshots are found by hash, not listed
                items = list(versions.values())
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
            if kind == "component" and "componentSpec" in props:
                props["componentSpec"] = stored_component_spec(props["componentSpec"])
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
            item = versions[version] = self._workspace_asset_body(found, kind, name, version, props)
            location = f"https://{ARM_HOST}{item['id']}?api-version={request.query['api-version']}"
            return Reply(201, item, {"Location": location})

        return put_version

    def _workspace_asset_body(
        self, ws: Workspace, kind: str, name: str, version: str, props: dict
    ) -> dict:
        """A workspace asset version as the service answers it: the kind's defaults, then the
        properties sent."""
        plural = {"data": "data", "model": "models", "code": "codes"}.get(kind, kind + "s")
        return {
            "id": f"{ws.arm_id}/{plural}/{name}/versions/{version}",
            "name": version,
            "type": f"{PROVIDER}/workspaces/{plural}/versions",
            "properties": self._asset_defaults(kind) | props,
            "systemData": system_data(),
        }

    @staticmethod
    def _asset_defaults(kind: str) -> dict[str, Any]:
        base: dict[str, Any] = {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "isAnonymous": False,
        }
        if kind in ("code", "component"):
            # the recorded code (2023-04-01) and component (2022) versions have no
            # autoDeleteSetting, nor the component a provisioningState
            return base | ({"provisioningState": "Succeeded"} if kind == "code" else {})
        base["autoDeleteSetting"] = None
        if kind == "data":
            return base | {"stage": None, "intellectualProperty": None}
        if kind == "environment":
            return base | {
                "properties": {"azureml.labels": ""},
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
        return base

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
                "provisioningWarnings": {},
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
                    "nodeStateCounts": {
                        "preparingNodeCount": 0,
                        "runningNodeCount": 0,
                        "idleNodeCount": 0,
                        "unusableNodeCount": 0,
                        "leavingNodeCount": 0,
                        "preemptedNodeCount": 0,
                    },
                    "allocationStateTransitionTime": _now(),
                    "errors": None,
                    "remoteLoginPortPublicAccess": "Disabled",
                    "virtualMachineImage": None,
                    "enableBatchPrivateLink": False,
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
