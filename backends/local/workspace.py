"""A local ML workspace: a directory with its own MLflow store (tracking + registry).

One sqlite store per environment keeps dev, test and prod as isolated as separate AML
workspaces. MLflow resolves `models:/` URIs against the global tracking URI only (see FACTS.md),
so everything here goes through an explicit MlflowClient and download URIs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from backends.content_hash import file_sha256
from backends.local.component_runner import ComponentRunner
from backends.local.pipeline_assets import (
    COMPONENT_FILE,
    registry_store,
    resolve,
    workspace_store,
)
from backends.pipeline_assets import (
    PipelineAssets,
    registry_reference,
    registry_references,
    workspace_reference,
    workspace_references,
)
from backends.topology import EnvironmentSpec, RegistrySpec, Topology
from records import lineage_tags
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun


def create_store_once(db: Path) -> None:
    """Create a migrated MLflow sqlite store at `db`, whole or not at all.

    MLflow migrates a new store on first open, one alembic revision at a time. A process killed
    part-way (the release's crash-and-re-run promise) left a store whose columns were added but
    whose revision was not, and every later open failed with "duplicate column name". So the
    store is migrated under another name and renamed into place, under a file lock that also
    serialises first opens across processes (flows, workers, component subprocesses). Opening
    MLflow's SQLAlchemy store is what migrates it (and adds the Default experiment, with the
    artifact root an MlflowClient would have given it).
    """
    if db.exists():
        return
    with FileLock(f"{db}.lock"):
        if db.exists():
            return
        partial = db.with_name(f"{db.name}.partial")  # a killed attempt's leftovers
        partial.unlink(missing_ok=True)
        store = SqlAlchemyStore(f"sqlite:///{partial}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        os.replace(partial, db)


def _to_model_version(mv: MlflowModelVersion) -> ModelVersion:
    return ModelVersion(
        name=mv.name,
        version=str(mv.version),
        source=mv.source or "",  # MLflow always sets it; its type says optional
        run_id=mv.run_id or None,
        tags=dict(mv.tags or {}),
        aliases=tuple(mv.aliases or ()),
    )


class MlflowRegistry:
    """A model registry in its own MLflow store: a workspace's, or the shared one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
        create_store_once(directory / "mlflow.db")
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        """Get or create an experiment whose artifacts live inside this directory."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.directory / "artifacts" / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def register_once(
        self,
        name: str,
        model_dir: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str,
        identity_tag: str,
    ) -> ModelVersion:
        """Register once per identity tag value: a re-run returns the version it made before."""
        existing = [
            v
            for v in self.list_model_versions(name)
            if v.tags.get(identity_tag) == tags[identity_tag]
        ]
        if existing:
            return existing[0]
        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                raise
        mv = self.client.create_model_version(
            name,
            source=model_dir,
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            description=description,
        )
        return _to_model_version(mv)

    def get_model(self, name: str, alias: str) -> ModelVersion | None:
        try:
            return _to_model_version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """Versions in order, with their aliases (MLflow's search leaves aliases out)."""
        found = self.client.search_model_versions(f"name = '{name}'")
        if not found:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in self.client.get_registered_model(name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        versions = [
            replace(_to_model_version(v), aliases=tuple(sorted(by_version.get(str(v.version), []))))
            for v in found
        ]
        return sorted(versions, key=lambda v: int(v.version))

    def model_path(self, model: ModelVersion) -> Path:
        uri = self.client.get_model_version_download_uri(model.name, model.version)
        return Path(uri.removeprefix("file://"))

    def tracking_ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri} --port 5000"


class LocalWorkspace(MlflowRegistry):
    """An environment's workspace: data assets, pipeline jobs, tracking and model registry."""

    def __init__(self, spec: EnvironmentSpec, root: Path) -> None:
        super().__init__(root / "workspaces" / spec.workspace)
        self.name = spec.workspace
        self.environment = spec.name
        self.root = root
        self.assets = workspace_store(self.directory)
        self.runner = ComponentRunner(
            self.directory / "jobs", self.tracking_uri, self.experiment_id
        )

    def register_data(self, name: str, source: Path, description: str = "") -> DataAsset:
        """Copy the file in as a new version, unless this exact content is already a version."""
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"data file {source} does not exist; pass a CSV file path")
        content_hash = file_sha256(source)
        asset_dir = self.directory / "data" / name
        versions = sorted(
            (int(p.name) for p in asset_dir.glob("*") if p.name.isdigit()), reverse=True
        )
        for version in versions:
            meta = json.loads((asset_dir / str(version) / "asset.json").read_text())
            if meta["content_hash"] == content_hash:
                return DataAsset(name, str(version), meta["path"], content_hash)
        version_dir = asset_dir / str((versions[0] if versions else 0) + 1)
        version_dir.mkdir(parents=True)
        target = version_dir / source.name
        shutil.copyfile(source, target)
        meta = {
            "name": name,
            "version": version_dir.name,
            "path": str(target),
            "content_hash": content_hash,
            "description": description,
            "source": str(source),
        }
        (version_dir / "asset.json").write_text(json.dumps(meta, indent=2))
        return DataAsset(name, version_dir.name, str(target), content_hash)

    def get_data(self, name: str, version: str) -> DataAsset:
        meta_path = self.directory / "data" / name / str(version) / "asset.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"data asset {name}:{version} is not in {self.name}")
        meta = json.loads(meta_path.read_text())
        return DataAsset(name, str(version), meta["path"], meta["content_hash"])

    def data_path(self, asset: DataAsset) -> Path:
        """The asset's own file: local assets already live on this disk."""
        return Path(asset.path)

    def register_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        self.assets.add(
            assets, lambda name, version: workspace_reference("environment", name, version)
        )
        return workspace_references(self.name, assets)

    def run_pipeline(
        self,
        pipeline: Path,
        inputs: Mapping[str, Any],
        run_name: str | None = None,
        assets: AssetReferences | None = None,
    ) -> PipelineRun:
        components = None
        if assets is not None:
            components = {
                name: (
                    reference,
                    resolve(reference, "component", self.assets, self.root) / COMPONENT_FILE,
                )
                for name, reference in assets.components.items()
            }
        return self.runner.run(pipeline, inputs, run_name, components)

    def register_model(
        self, name: str, model_dir: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> ModelVersion:
        """Idempotent per pipeline run: re-running a crashed flow never adds a second version."""
        identity = lineage_tags.PIPELINE_RUN_ID
        if identity not in tags:
            raise ValueError(f"register_model needs a {identity} tag for lineage")
        return self.register_once(name, model_dir, run_id, tags, description, identity)


class LocalSharedRegistry(MlflowRegistry):
    """The shared registry: its own MLflow store; promotion copies the model's files in."""

    def __init__(self, spec: RegistrySpec, root: Path) -> None:
        super().__init__(root / "registries" / spec.name)
        self.name = spec.name
        self.assets = registry_store(root, spec.name)

    def promote(
        self, model: ModelVersion, model_dir: Path, tags: Mapping[str, str], description: str
    ) -> ModelVersion:
        """Copy files, then register with the origin as identity tag: a re-run after a crash
        at any point converges on exactly one version."""
        origin = f"{tags[lineage_tags.SOURCE_WORKSPACE]}:{model.name}:{model.version}"
        target = self.directory / "models" / model.name / origin.replace(":", "_")
        shutil.copytree(model_dir, target, dirs_exist_ok=True)
        return self.register_once(
            model.name,
            str(target),
            None,  # the training run lives in the source workspace's store, not this one
            {
                **model.tags,
                **tags,
                lineage_tags.PROMOTED_FROM: origin,
                lineage_tags.SOURCE_RUN_ID: model.run_id or "",
            },
            description,
            identity_tag=lineage_tags.PROMOTED_FROM,
        )

    def publish_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        self.assets.add(
            assets,
            lambda name, version: registry_reference(self.name, "environment", name, version),
        )
        return self.pipeline_asset_references(assets)

    def pipeline_asset_references(self, assets: PipelineAssets) -> AssetReferences:
        return registry_references(self.name, assets, self.assets.holds)


def open_workspace(spec: EnvironmentSpec, topology: Topology) -> LocalWorkspace:
    return LocalWorkspace(spec, topology.local_root)


def open_shared_registry(topology: Topology) -> LocalSharedRegistry:
    return LocalSharedRegistry(topology.shared_registry, topology.local_root)
