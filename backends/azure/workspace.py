"""An environment's Azure ML workspace behind the `Workspace` Protocol.

Data assets are versioned by content (a `content_sha256` tag), models are registered once per
pipeline run (a `pipeline_run_id` tag), and aliases follow the tag convention in aliases.py,
so every write here can be repeated after a crash without making a second version.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data
from azure.core.exceptions import ResourceNotFoundError

from backends.azure.clients import AzureConnection, workspace_client
from backends.azure.datastores import DatastorePath, Datastores
from backends.azure.errors import AzureConflict, AzureResourceMissing, explained
from backends.azure.models import ModelStore, ModelStoreDelegate
from backends.azure.pipeline_assets import AssetStore
from backends.azure.pipelines import PipelineRunner
from backends.content_hash import file_sha256
from backends.pipeline_assets import (
    PipelineAssets,
    working_tree_assets,
    workspace_reference,
    workspace_references,
)
from backends.topology import EnvironmentSpec, Topology
from records import lineage_tags
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun

CONTENT_TAG = lineage_tags.CONTENT_SHA256
IDENTITY_TAG = lineage_tags.PIPELINE_RUN_ID
# the SDK's own `models.share` builds the same id (azure.ai.ml.constants ASSET_ID_FORMAT)
WORKSPACE_ASSET_ID = (
    "azureml://locations/{location}/workspaces/{guid}/models/{name}/versions/{version}"
)


class AzureWorkspace(ModelStoreDelegate):
    """The `Workspace` Protocol on one AML workspace (one MLClient)."""

    def __init__(self, spec: EnvironmentSpec, topology: Topology, conn: AzureConnection) -> None:
        self.spec = spec
        self.name = spec.workspace
        self.environment = spec.name
        self.connection = conn
        self.cache = topology.local_root / "azure" / spec.workspace
        with explained(f"connect to workspace {spec.workspace}"):
            self.client: MLClient = workspace_client(spec, conn)
        self.models = ModelStore(
            self.client,
            f"workspace {spec.workspace}",
            self.cache / "models",
            self._asset_id,
        )
        self.datastores = Datastores(self.client, conn, f"workspace {spec.workspace}")
        self.assets = AssetStore(
            self.client,
            f"workspace {spec.workspace}",
            workspace_reference,
            lambda assets: workspace_references(spec.workspace, assets),
        )

    # --- identity ----------------------------------------------------------------------------

    @cached_property
    def location_and_guid(self) -> tuple[str, str]:
        """Where the workspace lives and its GUID: registry imports address models by these.
        The SDK has no public accessor for the GUID; its own `models.share` reads the same
        field of the workspace resource."""
        with explained(f"read workspace {self.name}"):
            found = self.client.workspaces.get(self.name)
        return str(found.location), str(found._workspace_id)

    def _asset_id(self, name: str, version: str) -> str:
        location, guid = self.location_and_guid
        return WORKSPACE_ASSET_ID.format(location=location, guid=guid, name=name, version=version)

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.spec.subscription_id}/resourceGroups/"
            f"{self.spec.resource_group}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{self.spec.workspace}"
        )

    # --- data --------------------------------------------------------------------------------

    def register_data(self, name: str, source: Path, description: str = "") -> DataAsset:
        """Upload the file as a new version, unless a version with these bytes exists."""
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"data file {source} does not exist; pass a CSV file path")
        content_hash = file_sha256(source)
        versions = self._data_versions(name)
        for existing in versions:
            if (existing.tags or {}).get(CONTENT_TAG) == content_hash:
                return DataAsset(name, str(existing.version), str(existing.path), content_hash)
        numbers = [int(str(v.version)) for v in versions if str(v.version).isdigit()]
        data = Data(
            name=name,
            version=str(max(numbers, default=0) + 1),
            path=str(source),
            type=AssetTypes.URI_FILE,
            description=description,
            tags={CONTENT_TAG: content_hash, lineage_tags.SOURCE_FILE: source.name},
        )
        with explained(f"register data asset {name} in {self.name}"):
            created = self.client.data.create_or_update(data)
        return DataAsset(name, str(created.version), str(created.path), content_hash)

    def get_data(self, name: str, version: str) -> DataAsset:
        """A registered version; its `path` is where Azure keeps it (`azureml://...`)."""
        with explained(f"read data asset {name}:{version} in {self.name}"):
            try:
                found = self.client.data.get(name=name, version=version)
            except ResourceNotFoundError as missing:
                raise AzureResourceMissing(
                    f"data asset {name}:{version} is not in workspace {self.name}; the model's "
                    "lineage tags name a version that was never registered here (or was deleted)"
                ) from missing
        return DataAsset(
            name, str(found.version), str(found.path), (found.tags or {}).get(CONTENT_TAG, "")
        )

    def data_path(self, asset: DataAsset) -> Path:
        """A local copy of the asset's file, downloaded from its datastore once and reused
        (a version's content never changes: `content_sha256` checks the copy)."""
        where = DatastorePath.parse(asset.path)
        target = self.cache / "data" / asset.name / asset.version / Path(where.path).name
        if target.is_file() and (
            not asset.content_hash or file_sha256(target) == asset.content_hash
        ):
            return target
        self.datastores.download_file(where, target)
        if asset.content_hash and file_sha256(target) != asset.content_hash:
            raise AzureConflict(
                f"data asset {asset.name}:{asset.version} in {self.name} no longer holds the "
                f"bytes it was registered with ({where.path} changed since); register the data "
                "again and retrain rather than compare against altered data"
            )
        return target

    def _data_versions(self, name: str) -> list[Data]:
        with explained(f"list versions of data asset {name} in {self.name}"):
            try:
                return list(self.client.data.list(name=name))
            except ResourceNotFoundError:
                return []

    # --- pipelines ---------------------------------------------------------------------------

    def register_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        """Environments, then components pinned to them, in this workspace; a version it holds
        already is only read (a re-run sends no write)."""
        return self.assets.register(assets)

    def run_pipeline(
        self,
        pipeline: Path,
        inputs: Mapping[str, Any],
        run_name: str | None = None,
        assets: AssetReferences | None = None,
    ) -> PipelineRun:
        """With `assets`, every step runs the registered component it names. Without, the
        working tree's component YAMLs run as a developer's ad-hoc job does (anonymous
        components, code uploaded with the job), in the working tree's own environment version,
        registered here by content first, rather than whatever `@latest` the workspace holds."""
        runner = PipelineRunner(
            self.client, self.spec, self.cache / "jobs", self.connection.deadlines
        )
        if assets is not None:
            return runner.run(pipeline, inputs, run_name, components=assets.components)
        return runner.run(pipeline, inputs, run_name, environments=self._working_environments())

    def _working_environments(self) -> dict[str, str]:
        """Environment name -> this workspace's reference to the working tree's version of it,
        for the environments the components run in (registered once per content version)."""
        tree = working_tree_assets()
        used = {c.environment for c in tree.components}
        return {
            e.name: self.assets.ensure_environment(e) for e in tree.environments if e.name in used
        }

    # --- models ------------------------------------------------------------------------------

    def register_model(
        self, name: str, model_dir: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> ModelVersion:
        """Idempotent per pipeline run: a re-run after a crash returns the version it made."""
        if IDENTITY_TAG not in tags:
            raise ValueError(f"register_model needs a {IDENTITY_TAG} tag for lineage")
        existing = self.models.find(name, IDENTITY_TAG, str(tags[IDENTITY_TAG]))
        if existing is not None:
            return existing
        return self.models.register(
            name, str(model_dir), {**tags, lineage_tags.RUN_ID: run_id or ""}, description
        )

    def tracking_ui_command(self) -> str:
        return f"open 'https://ml.azure.com/experiments?wsid={self.arm_id}'"
