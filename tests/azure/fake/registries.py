"""AML registries: discovery, the data-plane model API, imports from workspaces, storage SAS."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable

from tests.azure.fake.http import (
    SAS_FIELDS,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Blob,
    Lro,
    Registry,
    _now,
    _storage_id,
    system_data,
)


class RegistryApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- registries ------------------------------------------------------------------------

    def _registry_discovery(self, request: SeenRequest, name: str) -> Reply:
        reg = self.registries.get(name.lower())
        if reg is None:
            return Reply(
                404, {"error": {"code": "NotFound", "message": f"Registry {name} not found."}}
            )
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

    def _registry_model_body(
        self, reg: Registry, name: str, version: str, props: dict, system: dict | None = None
    ) -> dict:
        return {
            "id": f"azureml://registries/{reg.name}/models/{name}/versions/{version}",
            "name": name,
            "type": "models",
            "properties": props,
            "systemData": system or system_data(),
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

    def _registry_get(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
        if bad := self._api_version(request, "registry"):
            return bad
        found = self._reg(sub, rg, reg)
        item = found.models.get(name, {}).get(version) if found else None
        if item is None:
            return arm_error(
                404,
                "UserError",
                f"Could not find asset with ID: {name}:{version}",
                "ResourceNotFound",
            )
        return Reply(200, item)

    def _registry_put(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
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
                return arm_error(
                    400,
                    "UserError",
                    "The asset path cannot be changed for an existing version.",
                    "Immutable",
                )
            changes = {
                k: v
                for k, v in props.items()
                if k in ("tags", "description", "isArchived", "stage", "properties")
            }

            def update() -> None:
                existing["properties"] = before | changes
                existing["systemData"]["lastModifiedAt"] = _now()

            asset_id = f"azureml://registries/{reg.lower()}/models/{name}/versions/{version}"
            return self._asset_store_lro(request, found, update, asset_id=asset_id)
        defaults = {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "isAnonymous": False,
            "flavors": {},
            "originAssetId": None,
            "jobName": None,
            "intellectualProperty": None,
        }

        def create() -> None:
            found.models.setdefault(name, {})[version] = self._registry_model_body(
                found, name, version, defaults | props
            )

        asset_id = f"azureml://registries/{reg.lower()}/models/{name}/versions/{version}"
        return self._asset_store_lro(request, found, create, asset_id=asset_id)

    def _asset_store_lro(
        self,
        request: SeenRequest,
        reg: Registry,
        outcome: Callable[[], None],
        conflict: bool = False,
        asset_id: str | None = None,
    ) -> Reply:
        lro = Lro(str(uuid.uuid4()).replace("-", "")[:43], "assetstore", self.lro_polls, outcome)
        lro.result_location = asset_id
        self.lros[lro.id] = lro
        location = f"https://{reg.location}.api.azureml.ms/assetstore/v1.0/operations/{lro.id}"
        if conflict:
            self._advance_all(lro)
            return arm_error(
                409,
                "UserError",
                "A model with this name and version already exists in the registry.",
                "Conflict",
            )
        return Reply(
            202,
            "null",
            {
                "Location": location,
                "x-ms-async-operation-timeout": "PT1H",
                "x-ms-retry-after-ms": "20",
            },
        )

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
        # a created version answers with its id (recorded); an import with nothing, which is
        # what the SDK's share path expects (it re-reads the model when the result is empty)
        return Reply(200, {"assetId": lro.result_location} if lro.result_location else None)

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
        ws = next(
            (w for w in self.workspaces.values() if source and w.guid == source["guid"]), None
        )
        model = ws.models.get(source["name"], {}).get(source["version"]) if ws and source else None
        if model is None:
            return arm_error(
                400, "UserError", f"Source asset {props['sourceAssetId']} not found.", "BadArgument"
            )
        name = props.get("destinationName") or source["name"]
        version = props.get("destinationVersion") or source["version"]
        if version in found.models.get(name, {}):
            return arm_error(
                409,
                "UserError",
                f"Model {name}:{version} already exists in registry {reg}.",
                "Conflict",
            )

        def copy_in() -> None:
            prefix = f"{name}/{version}"
            store = re.search(
                r"/datastores/[^/]+/paths/(?P<path>.*)$", model["properties"]["modelUri"]
            )
            source_blobs = self.blobs[(ws.storage_account, ws.container)]
            target = self.blobs[(found.storage_account, found.container)]
            base = store["path"].rstrip("/") if store else ""
            for blob_name, blob in source_blobs.items():
                if blob_name.startswith(base + "/"):
                    target[f"{prefix}/{blob_name[len(base) + 1 :]}"] = Blob(
                        blob.data, dict(blob.metadata)
                    )
            copied = {
                k: copy.deepcopy(model["properties"].get(k))
                for k in ("description", "tags", "properties", "flavors", "modelType")
            }
            found.models.setdefault(name, {})[version] = self._registry_model_body(
                found,
                name,
                version,
                {
                    "isArchived": False,
                    "isAnonymous": False,
                    "jobName": None,
                    "intellectualProperty": None,
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
        account = f"https://{reg.storage_account}.blob.core.windows.net"
        return f"{account}/{reg.container}?{SAS_FIELDS}&sig={signature}"

    def _temp_data_ref(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": f"https://{found.storage_account}.blob.core.windows.net:443/{found.container}",
                    "storageAccountArmId": _storage_id(sub, rg, found.storage_account),
                    "credential": {"credentialType": "SAS", "sasUri": self._sas(found)},
                },
                "imageReferenceForConsumption": None,
                "temporaryDataReferenceId": str(uuid.uuid4()),
                "temporaryDataReferenceType": None,
            },
        )

    def _data_ref(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
        found = self._reg(sub, rg, reg)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
        body = request.json()
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": body["blobUri"],
                    "storageAccountArmId": _storage_id(sub, rg, found.storage_account),
                    "credential": {"credentialType": "SAS", "sasUri": self._sas(found)},
                }
            },
        )
