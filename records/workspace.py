"""What a workspace holds and returns: data assets, pipeline runs, model versions, and where a
store keeps the pipeline's assets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class AssetReferences:
    """Where a store keeps a set of assets: component and environment name -> reference."""

    store: str
    components: Mapping[str, str]
    environments: Mapping[str, str]
    digest: str
    inference_environment: str
    """The reference online (and batch) deployments run in."""
