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


TRAIN_DATA_OUTPUT = "prep.train_data"
"""The training pipeline's train split in `PipelineRun.outputs`: the output `train_data` of the
job `prep` in components/pipelines/train.yml (both backends key a step's output
`<job>.<output>`; tests/unit/test_one_place_for_each_fact.py checks train.yml still has it)."""
TEST_DATA_OUTPUT = "prep.test_data"
"""The training pipeline's test split in `PipelineRun.outputs`: the output `test_data` of the
job `prep` in components/pipelines/train.yml (checked like TRAIN_DATA_OUTPUT)."""
MODEL_OUTPUT = "model"
"""The trained model (an MLflow model folder): train.yml's own output `model` (checked too)."""
EVALUATION_OUTPUT = "evaluation"
"""The evaluate step's folder (metrics, gate, fairness, pictures): train.yml's own output
`evaluation` (checked too)."""


@dataclass(frozen=True)
class PipelineRun:
    """A finished pipeline run: its MLflow parent run id, steps, and named outputs (local paths).

    `outputs` holds the pipeline's own outputs by name (`model`) and every step's as
    `<job>.<output>` (`prep.test_data`), on both backends."""

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

    @property
    def model_folder(self) -> str:
        """The training pipeline's model, an MLflow model folder."""
        return self.outputs[MODEL_OUTPUT]

    @property
    def evaluation_folder(self) -> str:
        """The training pipeline's evaluation: metrics.json, gate.json, fairness.json, pictures."""
        return self.outputs[EVALUATION_OUTPUT]

    @property
    def train_data(self) -> str:
        """The training pipeline's train split (a folder holding data.parquet)."""
        return self.outputs[TRAIN_DATA_OUTPUT]

    @property
    def test_data(self) -> str:
        """The training pipeline's test split (a folder holding data.parquet): the rows the
        gate judged the model on, which the release's endpoint tests and rollout score too."""
        return self.outputs[TEST_DATA_OUTPUT]


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
