"""The shared AML registry behind the `ModelRegistry` Protocol: promotion is a server-side copy.

`promote` asks the registry to import the workspace's model version (what `models.share` does),
so the bytes go storage-to-storage and the registry keeps a reference to its origin. It is
idempotent on the origin: a version tagged `promoted_from=<workspace>:<name>:<version>` (or
carrying the same `pipeline_run_id`, which the import copies from the source, for a crash
between the import and the tagging) is returned instead of importing again, and a 409 from the
import (the copy exists already) is accepted once that version is found.

Why not `ml_client.models.share(...)` itself: in azure-ai-ml 1.35.2 it builds a second registry
client with only the credential (`get_registry_client(credential, registry_name)`), dropping
the transport and retry settings given to MLClient; we send the same import request through
our registry MLClient instead, so it is retried like everything else (and testable).

Pipeline assets (components and environments) are published by content version through the
same AssetStore as dev's workspace registration (backends/azure/pipeline_assets.py): a version
the registry holds is never written again, so a re-run after a crash converges.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from azure.ai.ml import MLClient
from azure.ai.ml.entities._assets.workspace_asset_reference import WorkspaceAssetReference
from azure.ai.ml.exceptions import ValidationException

from backends.azure.clients import AzureConnection, registry_client
from backends.azure.errors import AzureConflict, explained
from backends.azure.models import ModelStore, ModelStoreDelegate
from backends.azure.pipeline_assets import AssetStore
from backends.pipeline_assets import PipelineAssets, registry_reference, registry_references
from backends.topology import RegistrySpec, Topology
from records import lineage_tags
from records.workspace import AssetReferences, ModelVersion

IDENTITY_TAG = lineage_tags.PROMOTED_FROM
REGISTRY_ASSET_ID = "azureml://registries/{registry}/models/{name}/versions/{version}"
WORKSPACE_ASSET_PREFIX = "azureml://locations/"


class AzureSharedRegistry(ModelStoreDelegate):
    """The `ModelRegistry` Protocol on an AML registry (one registry MLClient)."""

    def __init__(self, spec: RegistrySpec, topology: Topology, conn: AzureConnection) -> None:
        self.spec = spec
        self.name = spec.name
        with explained(f"connect to registry {spec.name}"):
            self.client: MLClient = registry_client(spec, conn)
        self.models = ModelStore(
            self.client,
            f"registry {spec.name}",
            topology.local_root / "azure" / "registries" / spec.name / "models",
            lambda name, version: REGISTRY_ASSET_ID.format(
                registry=spec.name, name=name, version=version
            ),
        )
        self.assets = AssetStore(
            self.client,
            f"registry {spec.name}",
            lambda kind, name, version: registry_reference(spec.name, kind, name, version),
            lambda assets: registry_references(spec.name, assets, self.assets.holds),
        )

    # --- pipeline assets ---------------------------------------------------------------------

    def publish_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        """Environments, then components pinned to the registry's environment versions; what
        the registry holds already is only read."""
        return self.assets.register(assets)

    def pipeline_asset_references(self, assets: PipelineAssets) -> AssetReferences:
        """The registry's references for exactly these versions, or AssetsNotPromoted naming
        each one it does not hold (one read per asset; nothing is written)."""
        return registry_references(self.name, assets, self.assets.holds)

    # --- models ------------------------------------------------------------------------------

    def promote(
        self, model: ModelVersion, model_dir: Path, tags: Mapping[str, str], description: str
    ) -> ModelVersion:
        origin = f"{tags[lineage_tags.SOURCE_WORKSPACE]}:{model.name}:{model.version}"
        wanted = {
            **model.tags,
            **tags,
            IDENTITY_TAG: origin,
            lineage_tags.SOURCE_RUN_ID: model.run_id or "",
            lineage_tags.SOURCE_ASSET_ID: model.source,
        }
        copy = self._copy_of(model, origin)
        if copy is None:
            if model.source.startswith(WORKSPACE_ASSET_PREFIX):
                copy = self._import(model, origin)
            else:  # not a workspace model (e.g. built elsewhere): upload its files
                copy = self.models.register(model.name, str(model_dir), wanted, description)
        fresh = IDENTITY_TAG not in copy.tags  # never tagged here: drop the source's aliases
        self.models.set_tags(
            copy.name, copy.version, wanted, drop_aliases=fresh, description=description
        )
        return self.models.get_version(copy.name, copy.version)

    def _copy_of(self, model: ModelVersion, origin: str) -> ModelVersion | None:
        run = model.tags.get(lineage_tags.PIPELINE_RUN_ID)
        for version in self.models.list_model_versions(model.name):
            if version.tags.get(IDENTITY_TAG) == origin:
                return version
            if (
                run
                and version.tags.get(lineage_tags.PIPELINE_RUN_ID) == run
                and IDENTITY_TAG not in version.tags
            ):
                return version  # imported, then interrupted before it was tagged
        return None

    def _import(self, model: ModelVersion, origin: str) -> ModelVersion:
        version = self.models.next_version(model.name)
        reference = WorkspaceAssetReference(name=model.name, version=version, asset_id=model.source)
        try:
            with explained(f"import {origin} into registry {self.name} as v{version}"):
                self.client.models.create_or_update(reference)
        except (AzureConflict, ValidationException) as error:
            # 409, or the SDK's own "already exists in registry" check: the copy may be ours
            # (a retried request whose first attempt went through); verify before accepting
            found = self._copy_of(model, origin)
            if found is None:
                raise AzureConflict(
                    f"registry {self.name} refused to import {origin} as v{version}: {error}. "
                    "Another promotion took that version number; re-run the promotion"
                ) from error
            return found
        return self.models.get_version(model.name, version)
