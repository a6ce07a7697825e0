"""What every backend provides, as Protocols.

Tasks only ever see these Protocols and the records they return (the `records` package, which
every layer may import), so the local and the azure backends are swapped by configuration,
never branched on in orchestration code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from records.audit import AuditRecord
from records.batch import BatchSummary, InboxFile
from records.infra import InfraPlan
from records.serving import DeploymentInfo, EndpointInfo, ServingMetrics
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun

if TYPE_CHECKING:
    import pandas as pd

    from backends.pipeline_assets import PipelineAssets
    from settings import BatchSettings


class Workspace(Protocol):
    """An environment's ML workspace (dev, test or prod): data, jobs, tracking and models."""

    name: str
    environment: str

    def register_data(self, name: str, source: Path, description: str = "") -> DataAsset: ...

    def get_data(self, name: str, version: str) -> DataAsset: ...

    def data_path(self, asset: DataAsset) -> Path:
        """A local file with the asset's content (Azure: downloaded from its datastore)."""
        ...

    def register_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        """Register the components and environments in this workspace, once per content
        version (a re-run registers nothing new), and say how to refer to them."""
        ...

    def run_pipeline(
        self,
        pipeline: Path,
        inputs: Mapping[str, Any],
        run_name: str | None = None,
        assets: AssetReferences | None = None,
    ) -> PipelineRun:
        """Run the pipeline with each step's component taken from `assets` (this workspace's
        or the shared registry's references); None runs the working tree's YAML files."""
        ...

    def register_model(
        self, name: str, model_dir: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> ModelVersion: ...

    def get_model(self, name: str, alias: str) -> ModelVersion | None: ...

    def set_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def list_model_versions(self, name: str) -> list[ModelVersion]: ...

    def model_path(self, model: ModelVersion) -> Path: ...

    def tracking_ui_command(self) -> str: ...


class Endpoints(Protocol):
    """A workspace's online endpoints (AML managed online endpoints, or local HTTP servers)."""

    def create_or_update_endpoint(self, name: str) -> EndpointInfo: ...

    def get_endpoint(self, name: str) -> EndpointInfo | None: ...

    def create_or_update_deployment(
        self,
        endpoint: str,
        deployment: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None = None,
    ) -> DeploymentInfo:
        """Deploy `model` with the scoring script in the inference environment `environment`
        (a reference, e.g. the shared registry's version); None: the working tree's inference
        environment, registered in this workspace."""
        ...

    def set_traffic(
        self, endpoint: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int] | None
    ) -> EndpointInfo: ...

    def serving_metrics(self, endpoint: str, start: datetime, end: datetime) -> ServingMetrics:
        """Requests, errors and p95 latency per deployment over [start, end) (timezone-aware),
        as the platform's metrics report them, with how much of the window they cover yet. It
        never waits: the caller decides how long to wait for a window to be covered."""
        ...

    def delete_deployment(self, endpoint: str, deployment: str) -> None: ...

    def delete_endpoint(self, name: str) -> None: ...

    def get_key(self, name: str) -> str: ...

    def read_capture(self, name: str, since: datetime) -> pd.DataFrame: ...


class ModelRegistry(Protocol):
    """The shared registry every environment promotes into and prod deploys from."""

    name: str

    def promote(
        self, model: ModelVersion, model_dir: Path, tags: Mapping[str, str], description: str
    ) -> ModelVersion: ...

    def get_model(self, name: str, alias: str) -> ModelVersion | None: ...

    def set_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def list_model_versions(self, name: str) -> list[ModelVersion]: ...

    def model_path(self, model: ModelVersion) -> Path: ...

    def publish_pipeline_assets(self, assets: PipelineAssets) -> AssetReferences:
        """Put the components and environments in the registry, once per content version: a
        re-run after a crash converges and never makes a duplicate."""
        ...

    def pipeline_asset_references(self, assets: PipelineAssets) -> AssetReferences:
        """The registry's references for exactly these versions; raises AssetsNotPromoted
        naming every one the registry does not hold."""
        ...


class BatchScoring(Protocol):
    """An environment's batch endpoint and the inbox it scores: files in, scored rows written
    back beside them (an Azure ML batch endpoint and a datastore folder; locally the batch
    scoring script in a process pool and a workspace folder). Names and layout: records.batch.
    """

    inbox: str
    """Where people drop files, as they find it (a folder; a datastore URI)."""

    def inbox_files(self, since: datetime | None = None) -> list[InboxFile]:
        """The files under the inbox last modified at or after `since` (None: all), oldest
        first (last modified, then name), hashed. Older files are not read: a watcher in a
        fresh container does not download the whole inbox to find what is new."""
        ...

    def inbox_file(self, name_or_uri: str) -> InboxFile:
        """One file: a name under the inbox, a local path, or a datastore URI (azure); raises
        FileNotFoundError naming what was looked for."""
        ...

    def local_copy(self, file: InboxFile) -> Path:
        """The file's content on this machine, for the contract check (azure: downloaded)."""
        ...

    def put_inbox_file(self, source: Path, name: str) -> InboxFile:
        """Drop a local file in the inbox as `name` (what a person or a data pipeline does);
        it shows to `inbox_files` only once complete."""
        ...

    def results_copy(self, summary: BatchSummary, into: Path) -> tuple[Path, Path]:
        """(scored, rejects) Parquet files of a finished job on this machine (azure:
        downloaded into `into`; local: where they are)."""
        ...

    def deploy_model(
        self,
        endpoint: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None,
        settings: BatchSettings,
    ) -> str:
        """Create the batch endpoint if it is missing and make `model` (scored by the batch
        scoring script in the inference environment `environment`, a reference; None: the
        working tree's) its default deployment. A deployment of the same model version is
        kept as it is. Returns the deployment's name."""
        ...

    def score(
        self,
        endpoint: str,
        file: InboxFile,
        model: ModelVersion,
        run_id: str,
        settings: BatchSettings,
    ) -> BatchSummary:
        """Run one job of the endpoint's default deployment on the file, follow it to its end
        and write the results under records.batch.results_prefix(file, model), summary.json
        last. Raises BatchScoringFailed past settings.error_threshold refused rows (the
        rejects are kept, the scored rows are not) or when the job fails."""
        ...

    def finished(self, file: InboxFile, model: ModelVersion) -> BatchSummary | None:
        """The summary of a finished job on the same content and model version, if any."""
        ...

    def read_scored(self, since: datetime) -> pd.DataFrame:
        """The rows batch jobs finished since `since` scored: the contract's features plus
        probability, label, model_version and timestamp (empty if none), for drift."""
        ...


class Infrastructure(Protocol):
    """Bicep deployments (ARM on Azure; the local workspaces on a laptop)."""

    def what_if(self, environment: str) -> InfraPlan: ...

    def deploy(self, environment: str) -> InfraPlan: ...


class AuditTrail(Protocol):
    """The append-only record of approvals, promotions, deployments, traffic and rollbacks.

    `append` returns only once the record is durable (fsync'd locally, committed as an append
    block on Azure) and raises AuditWriteFailed otherwise; nothing can rewrite what `read`
    returns (an O_APPEND file locally, a WORM container on Azure)."""

    where: str
    """The store, as a person finds it (a file path, a blob container URL)."""

    def append(self, record: AuditRecord) -> None: ...

    def read(self) -> list[AuditRecord]:
        """Every record, oldest first."""
        ...
