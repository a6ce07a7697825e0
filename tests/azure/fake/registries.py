"""AML registries: discovery, the data-plane model API, imports from workspaces, storage SAS."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable

import yaml

from tests.azure.fake.http import (
    SAS_FIELDS,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Blob,
    Handler,
    Lro,
    Registry,
    _now,
    _storage_id,
    stored_component_spec,
    system_data,
)

# the fake's clock: azure-core waits this long between polls (no recording shows the header;
# the recorded operations took seconds, which tests need not wait for)
POLL_SOON = {"x-ms-retry-after-ms": "20"}


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

    def _registry_store(self, reg: Registry, kind: str) -> dict[str, dict[str, dict]]:
        return {
            "model": reg.models,
            "code": reg.codes,
            "environment": reg.environments,
            "component": reg.components,
        }[kind]

    def _registry_model_body(
        self, reg: Registry, name: str, version: str, props: dict, system: dict | None = None
    ) -> dict:
        return self._registry_asset_body(reg, "model", name, version, props, system)

    @staticmethod
    def _registry_asset_body(
        reg: Registry, kind: str, name: str, version: str, props: dict, system: dict | None = None
    ) -> dict:
        """A registry asset version as the data plane answers it. The recordings disagree
        between kinds, and each kind follows its own: a model is named by its name, typed
        `models` (test_model...registry, promote_model[import]); code and component versions
        by their version, typed with the ARM-style type (test_component...registry); an
        environment by its version, typed `environments`, with a lower-cased registry in its
        id (test_environment...registry)."""
        plural = f"{kind}s"
        registry = reg.name.lower() if kind == "environment" else reg.name
        return {
            "id": f"azureml://registries/{registry}/{plural}/{name}/versions/{version}",
            "name": name if kind == "model" else version,
            "type": {
                "model": "models",
                "environment": "environments",
            }.get(kind, f"Microsoft.MachineLearningServices/registries/{plural}/versions"),
            "properties": props,
            "systemData": system or system_data(),
        }

    def _registry_list(self, request: SeenRequest, sub: str, rg: str, reg: str, name: str) -> Reply:
        return self._registry_asset_lister("model")(request, sub, rg, reg, name)

    def _registry_get(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
        return self._registry_asset_getter("model")(request, sub, rg, reg, name, version)

    def _registry_put(
        self, request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
    ) -> Reply:
        return self._registry_asset_putter("model")(request, sub, rg, reg, name, version)

    def _registry_asset_lister(self, kind: str) -> Handler:
        def list_versions(request: SeenRequest, sub: str, rg: str, reg: str, name: str) -> Reply:
            if bad := self._api_version(request, "registry"):
                return bad
            found = self._reg(sub, rg, reg)
            if found is None:
                return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
            items = list(self._registry_store(found, kind).get(name, {}).values())
            query = request.query
            if query.get("listViewType", "ActiveOnly") == "ActiveOnly":
                items = [i for i in items if not i["properties"].get("isArchived")]
            if query.get("$orderBy", "").startswith("createdtime"):
                items.sort(key=lambda i: i["systemData"]["createdAt"], reverse=True)
            if "$top" in query:
                items = items[: int(query["$top"])]
            return Reply(200, {"value": items})

        list_versions.__name__ = f"_registry_{kind}_list"
        return list_versions

    def _registry_asset_getter(self, kind: str) -> Handler:
        def get_version(
            request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
        ) -> Reply:
            if bad := self._api_version(request, "registry"):
                return bad
            found = self._reg(sub, rg, reg)
            item = self._registry_store(found, kind).get(name, {}).get(version) if found else None
            if item is None:
                # the recorded 404 (promote_model[import] #8) names the asset by its full id
                return arm_error(
                    404,
                    "UserError",
                    f"Could not find asset with ID: azureml://registries/{reg}/{kind}s/{name}"
                    f"/versions/{version}",
                )
            return Reply(200, item)

        get_version.__name__ = f"_registry_{kind}_get"
        return get_version

    def _registry_asset_putter(self, kind: str) -> Handler:
        content = {
            "model": ("modelUri",),
            "code": ("codeUri",),
            "environment": ("image", "condaFile", "build"),
            "component": ("componentSpec",),
        }[kind]

        def put_version(
            request: SeenRequest, sub: str, rg: str, reg: str, name: str, version: str
        ) -> Reply:
            if bad := self._api_version(request, "registry"):
                return bad
            found = self._reg(sub, rg, reg)
            if found is None:
                return arm_error(404, "ResourceNotFound", f"registry {reg} not found")
            sent = dict(request.json()["properties"])
            props = self._registry_props(kind, sent)
            asset_id = f"azureml://registries/{reg.lower()}/{kind}s/{name}/versions/{version}"
            existing = self._registry_store(found, kind).get(name, {}).get(version)
            if existing is not None:
                before = existing["properties"]
                # no recording shows a second PUT of a registry version: the fake keeps the
                # content immutable (as the workspace routes do) and lets metadata change
                if any(props.get(k) and props[k] != before.get(k) for k in content):
                    return arm_error(
                        400,
                        "UserError",
                        "The asset path cannot be changed for an existing version.",
                        "Immutable",
                    )
                changes = {
                    k: props.get(k, v)
                    for k, v in sent.items()
                    if k in ("tags", "description", "isArchived", "stage", "properties")
                }

                def update() -> None:
                    existing["properties"] = before | changes
                    existing["systemData"]["lastModifiedAt"] = _now()

                return self._registry_lro(request, found, kind, name, version, update, asset_id)

            def create() -> None:
                self._registry_store(found, kind).setdefault(name, {})[version] = (
                    self._registry_asset_body(found, kind, name, version, props)
                )

            return self._registry_lro(request, found, kind, name, version, create, asset_id)

        put_version.__name__ = f"_registry_{kind}_put"
        return put_version

    @staticmethod
    def _registry_props(kind: str, props: dict) -> dict:
        """What a registry version keeps of the PUT body, field for field as recorded."""
        base = {
            "description": props.get("description"),
            "tags": props.get("tags") or {},
            "properties": props.get("properties") or {},
            "isArchived": bool(props.get("isArchived", False)),
            "isAnonymous": bool(props.get("isAnonymous", False)),
        }
        if kind == "model":
            return base | {
                "flavors": props.get("flavors") or {},
                **{k: v for k, v in props.items() if k not in base and k != "flavors"},
                "originAssetId": props.get("originAssetId"),
                "jobName": props.get("jobName"),
                "intellectualProperty": None,  # test_model...registry #13 (2024)
            }
        if kind == "code":
            # test_component...registry #5/#7: sent isAnonymous true, answered false
            return base | {"isAnonymous": False, "codeUri": props.get("codeUri")}
        if kind == "component":
            # #8/#10: the top-level description comes back null (the spec keeps it)
            return base | {
                "description": None,
                "componentSpec": stored_component_spec(props.get("componentSpec") or {}),
            }
        conda = props.get("condaFile")
        return base | {  # test_environment...registry #11
            "properties": base["properties"] | {"azureml.labels": "latest"},
            "environmentType": "UserCreated",
            "image": props.get("image"),
            **({"build": props["build"]} if props.get("build") else {}),
            # the service stores the conda file as JSON (the recorded GET), YAML accepted
            "condaFile": json.dumps(yaml.safe_load(conda), indent=2) if conda else None,
            "osType": props.get("osType") or "Linux",
            "stage": "Development",
            "intellectualProperty": None,
        }

    def _registry_lro(
        self,
        request: SeenRequest,
        reg: Registry,
        kind: str,
        name: str,
        version: str,
        outcome: Callable[[], None],
        asset_id: str,
    ) -> Reply:
        if kind != "environment":
            return self._asset_store_lro(request, reg, outcome, asset_id=asset_id)
        # test_environment...registry #2: `Location` to the environment service's operation,
        # named after the registry, the asset and its version
        attempt = 1 + sum(1 for op in self.lros if op.startswith(f"{reg.name.lower()}_{name}_"))
        op = f"{reg.name.lower()}_{name}_{version}_{attempt}"
        lro = Lro(op, "environment", self.lro_polls, outcome)
        self.lros[op] = lro
        return Reply(
            202,
            "null",
            {
                "Location": f"https://{reg.location}.api.azureml.ms/environment/v1.0/operations/{op}",
                "x-ms-async-operation-timeout": "PT1H",
            }
            | POLL_SOON,
        )

    def _polled_operation(self, op: str, finished: Callable[[Lro], Reply]) -> Reply:
        """A registry data-plane operation, polled: 202 with no body while it runs, 500 with
        its error when it failed, else what `finished` answers."""
        lro = self.lros.get(op)
        if lro is None:
            return Reply(404, {"error": {"code": "NotFound", "message": f"operation {op}"}})
        self._advance(lro)
        if lro.status == "InProgress":
            return Reply(202, None, dict(POLL_SOON))
        if lro.status == "Failed":
            return Reply(500, {"error": lro.error})
        return finished(lro)

    def _environment_operation(self, request: SeenRequest, op: str) -> Reply:
        """test_environment...registry #3-#10: 202 with no body while the image builds, then
        200 with no body."""
        return self._polled_operation(op, lambda lro: Reply(200, None))

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
            {"Location": location, "x-ms-async-operation-timeout": "PT1H"} | POLL_SOON,
        )

    def _advance_all(self, lro: Lro) -> None:
        lro.polls = 0
        self._advance(lro)

    def _asset_operation(self, request: SeenRequest, op: str) -> Reply:
        """Done, a created version answers 200 with its id (test_component...registry #6,
        #9); an import 204 with no body (promote_model[import] #11)."""

        def finished(lro: Lro) -> Reply:
            if lro.result_location:
                return Reply(200, {"assetId": lro.result_location})
            return Reply(204, None)

        return self._polled_operation(op, finished)

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
            store = re.search(
                r"/datastores/[^/]+/paths/(?P<path>.*)$", model["properties"]["modelUri"]
            )
            source_blobs = self.blobs[(ws.storage_account, ws.container)]
            target = self.blobs[(found.storage_account, found.container)]
            base = store["path"].rstrip("/") if store else ""
            # the copy keeps the source's path in the registry's container (#12's modelUri)
            prefix = base or f"{name}/{version}"
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
                    "intellectualProperty": None,  # as a created version (2024 recording)
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
