"""What every backend provides, as Protocols, and the small records that cross the layers.

Flows and tasks only ever see these types, so the local and the azure backends are swapped by
configuration, never branched on in orchestration code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from backends.pipeline_assets import AssetReferences, PipelineAssets


@dataclass(frozen=True)
class DataAsset:
    """A versioned data asset. The version is bumped only when the content hash changes."""

    name: str
    version: str
    path: str
    content_hash: str


@dataclass(frozen=True)
class StepRun:
    """One component run inside a pipeline run."""

    name: str
    run_id: str
    status: str
    log_path: str
    seconds: float


@dataclass(frozen=True)
class PipelineRun:
    """A finished pipeline run: its MLflow parent run id, steps, and named outputs (local paths)."""

    run_id: str
    display_name: str
    status: str
    steps: tuple[StepRun, ...]
    outputs: Mapping[str, str]
    tracking_url: str
    components: Mapping[str, str] = field(default_factory=dict)
    """step name -> the component reference it ran (empty: straight from the working tree)."""

    def step(self, name: str) -> StepRun:
        return next(s for s in self.steps if s.name == name)


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version with its lineage tags and the aliases that point at it."""

    name: str
    version: str
    source: str
    run_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class PipelineFailed(RuntimeError):
    """A pipeline step exited non-zero; the message names the step and where its log is."""


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


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment (a colour, e.g. "blue") of an online endpoint and the model it serves."""

    name: str
    model_name: str
    model_version: str
    state: str  # "Succeeded" once loaded and smoke-tested


@dataclass(frozen=True)
class EndpointInfo:
    """An online endpoint: where to call it, its deployments, and how traffic is split."""

    name: str
    scoring_uri: str
    deployments: tuple[DeploymentInfo, ...]
    traffic: Mapping[str, int]
    mirror_traffic: Mapping[str, int]

    def serving(self) -> str | None:
        """The deployment with the most live traffic (ties: the first), or None."""
        live = [(pct, name) for name, pct in self.traffic.items() if pct > 0]
        return max(live)[1] if live else None


@dataclass(frozen=True)
class DeploymentHealth:
    """What one deployment served over a window: requests (live and mirrored copies alike),
    errors (5xx from the deployment or its container), and the p95 latency of the answers that
    were not errors (None: there were none)."""

    deployment: str
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class ServingMetrics:
    """An endpoint's metrics over a window, per deployment, and how much of the window they
    already cover.

    Azure Monitor aggregates per time grain and publishes each grain minutes after it ends, so
    an answer read right after the traffic may cover only part of the window: `covered_until`
    says up to when the figures are complete (None: nothing yet). `start`/`end` are the window
    the figures are for, widened to whole grains where the backend aggregates by grain. A
    deployment that served nothing in the window is absent from `deployments`.
    """

    endpoint: str
    start: datetime
    end: datetime
    covered_until: datetime | None
    deployments: Mapping[str, DeploymentHealth]

    @property
    def coverage(self) -> float:
        """The share of the window the figures cover, 0..1."""
        if self.covered_until is None or self.covered_until <= self.start:
            return 0.0
        span = (self.end - self.start).total_seconds()
        if span <= 0 or self.covered_until >= self.end:
            return 1.0
        return (self.covered_until - self.start).total_seconds() / span

    def of(self, deployment: str) -> DeploymentHealth:
        return self.deployments.get(deployment) or DeploymentHealth(deployment, 0, 0, None)


class DeploymentFailed(RuntimeError):
    """A deployment did not load or did not pass its smoke test; it never receives traffic."""


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


@dataclass(frozen=True)
class PlannedChange:
    """One resource in a what-if: what it is and what a deployment would do to it."""

    resource: str
    kind: str
    action: str  # "create", "modify", "no change"
    detail: str = ""


@dataclass(frozen=True)
class InfraPlan:
    environment: str
    parameter_file: str
    changes: tuple[PlannedChange, ...]

    def has_changes(self) -> bool:
        return any(c.action != "no change" for c in self.changes)


class Infrastructure(Protocol):
    """Bicep deployments (ARM on Azure; the local workspaces on a laptop)."""

    def what_if(self, environment: str) -> InfraPlan: ...

    def deploy(self, environment: str) -> InfraPlan: ...


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the audit trail: who did what to which subject, why, when, in which run."""

    action: str  # approved, rejected, approval-timed-out, promoted, deployed, traffic, rollback
    actor: str
    subject: str
    reason: str
    flow_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class AuditWriteFailed(RuntimeError):
    """A record could not be written, so the step it records must not happen: the message
    names the store and the reason."""


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
