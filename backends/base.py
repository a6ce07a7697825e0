"""What every backend provides, as Protocols, and the small records that cross the layers.

Flows and tasks only ever see these types, so the local and the azure backends are swapped by
configuration, never branched on in orchestration code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


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

    def run_pipeline(
        self, pipeline: Path, inputs: Mapping[str, Any], run_name: str | None = None
    ) -> PipelineRun: ...

    def register_model(
        self, name: str, model_dir: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> ModelVersion: ...

    def get_model(self, name: str, alias: str) -> ModelVersion | None: ...

    def set_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def list_model_versions(self, name: str) -> list[ModelVersion]: ...

    def model_path(self, model: ModelVersion) -> Path: ...

    def tracking_ui_command(self) -> str: ...
