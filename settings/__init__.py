"""Run settings: config/*.yaml, typed, the only place their values live.

Each file is one pydantic-settings model: its YAML under config/ is the settings source, and
an environment variable overrides any value for one process, named `MLOPS_<FILE>__<FIELD>`
with `__` between nested fields (MLOPS_TRAINING__GATE__MIN_AUC=0.75,
MLOPS_RELEASE__ROLLOUT__TIMING__BAKE_SECONDS__LOCAL=2). No field has a default that repeats
the YAML, so the file is the one place to change a value. A typo in a threshold fails at load,
naming the file and the field, not mid-run.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from backends.topology import REPO_ROOT
from backends.traffic_rules import MAX_MIRROR_PERCENT


def config_dir() -> Path:
    """config/ in the repo; MLOPS_CONFIG_DIR points a run at another set of settings."""
    return Path(os.environ.get("MLOPS_CONFIG_DIR", REPO_ROOT / "config"))


PIPELINES_DIR = REPO_ROOT / "components" / "pipelines"


class SettingsError(ValueError):
    """A settings file (or an MLOPS_* override of it) that does not validate."""


class Section(BaseModel):
    """A nested part of a settings file: frozen, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_reading: ContextVar[Path | None] = ContextVar("settings_file", default=None)


class FileSettings(BaseSettings):
    """One config/ YAML file plus its MLOPS_<FILE>__* environment overrides (these win)."""

    file_name: ClassVar[str]

    @classmethod
    def file(cls) -> Path:
        return _reading.get() or config_dir() / cls.file_name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, cls.file())


def _settings_config(file_name: str) -> SettingsConfigDict:
    prefix = f"MLOPS_{Path(file_name).stem.upper()}__"
    return SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix=prefix, env_nested_delimiter="__"
    )


S = TypeVar("S", bound=FileSettings)


def load_settings(kind: type[S], path: Path | None = None, **fixed: object) -> S:
    """The settings of `kind` from `path` (default: its file under config_dir()) and the
    environment; `fixed` values come from another file, which owns them."""
    file = path or config_dir() / kind.file_name
    if not file.is_file():
        raise FileNotFoundError(f"settings file {file} is missing ({kind.__name__})")
    token = _reading.set(file)
    try:
        return kind(**fixed)
    except ValidationError as error:
        prefix = kind.model_config.get("env_prefix", "")
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}"
            + (f" (got {e['input']!r})" if e["type"] != "missing" else "")
            for e in error.errors()
        )
        raise SettingsError(
            f"{file}: {error.error_count()} invalid setting(s) (from the file or an "
            f"{prefix}* environment override):\n{problems}"
        ) from None
    finally:
        _reading.reset(token)


# --- config/training.yaml --------------------------------------------------------------------


class PipelineSettings(Section):
    test_size: float
    seed: int
    learning_rate: float
    max_iter: int


class GateSettings(Section):
    """The quality gate's thresholds: the training pipeline's evaluate step gets them as its
    (required) inputs, so these are the only copy."""

    min_auc: float
    min_f1: float
    max_brier: float
    champion_min_delta: float


class FairnessSettings(Section):
    """The fairness gate's limits (components/src/fairness.py): the evaluate step gets them as
    its (required) inputs, like the quality gate's."""

    max_recall_gap: float
    max_equalized_odds_difference: float
    max_gap_widening: float
    min_group_size: int
    bootstrap_resamples: int
    bootstrap_seed: int


class DemoDataSettings(Section):
    rows: int
    seed: int


class TrainingSettings(FileSettings):
    file_name: ClassVar[str] = "training.yaml"
    model_config = _settings_config(file_name)

    data_asset: str
    model_name: str
    pipeline: PipelineSettings
    gate: GateSettings
    fairness: FairnessSettings
    demo_data: DemoDataSettings


def load_training_settings(path: Path | None = None) -> TrainingSettings:
    return load_settings(TrainingSettings, path)


class TrainingRunSettings(BaseModel):
    """What a person may change for one run, from the run form in the Prefect UI (Prefect turns
    this flow parameter into form fields, with these descriptions) or `parameters=` in code.
    Empty fields keep config/training.yaml's value, so the file stays the one place of the
    defaults; what a run changed is logged and kept in the run's parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Gradient boosting's learning rate (pipeline.learning_rate)",
    )
    max_iter: int | None = Field(
        default=None, ge=10, le=5000, description="Boosting iterations (pipeline.max_iter)"
    )
    min_auc: float | None = Field(
        default=None,
        ge=0.5,
        le=1,
        description="Quality gate: the lowest test AUC that may register",
    )
    min_f1: float | None = Field(
        default=None, ge=0, le=1, description="Quality gate: the lowest test F1"
    )
    max_brier: float | None = Field(
        default=None, gt=0, le=1, description="Quality gate: the highest Brier score (calibration)"
    )
    champion_min_delta: float | None = Field(
        default=None,
        ge=-0.1,
        le=0.1,
        description="Candidate AUC must be at least the champion's plus this (a retrain: > 0)",
    )

    def changed(self) -> dict[str, float | int]:
        """The fields this run sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def applied_to(self, settings: TrainingSettings) -> TrainingSettings:
        """`settings` with this run's values in place of the file's."""
        changed = self.changed()
        pipeline = {k: v for k, v in changed.items() if k in PipelineSettings.model_fields}
        gate = {k: v for k, v in changed.items() if k in GateSettings.model_fields}
        return settings.model_copy(
            update=dict(
                pipeline=settings.pipeline.model_copy(update=pipeline),
                gate=settings.gate.model_copy(update=gate),
            )
        )


# --- config/release.yaml ---------------------------------------------------------------------


class ApprovalSettings(Section):
    timeout_seconds: int
    poll_interval_seconds: int


class IntegrationSettings(Section):
    p95_budget_ms: float
    latency_requests: int


class PerBackend(Section):
    """A duration or rate that differs by backend: Azure Monitor aggregates per minute and
    publishes minutes late, so a bake on Azure lasts minutes; the laptop's counters are exact
    and immediate, so the demo bakes for seconds."""

    local: float
    azure: float

    def on(self, backend: str) -> float:
        return float(getattr(self, backend))


class RolloutStep(Section):
    """Either mirror a share of traffic to the new deployment, or send it a share of live
    traffic, then bake: hold the weights and judge what the new deployment served meanwhile.

    A step may bake longer than the default, and tighten the absolute limits (e.g. a stricter
    p95 once most traffic has moved).
    """

    mirror: int | None = Field(default=None, gt=0, le=MAX_MIRROR_PERCENT)  # Azure's cap
    traffic: int | None = Field(default=None, gt=0, le=100)
    bake_seconds: PerBackend | None = None
    max_error_rate: float | None = None
    max_p95_ms: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RolloutStep:
        if (self.mirror is None) == (self.traffic is None):
            raise ValueError("a rollout step is either {mirror: N} or {traffic: N}")
        return self

    @property
    def share(self) -> float:
        """The fraction of the endpoint's requests the new deployment sees in this step."""
        return (self.mirror or self.traffic or 0) / 100

    @property
    def label(self) -> str:
        return f"mirror {self.mirror}%" if self.mirror is not None else f"{self.traffic}% live"


class Guardrails(Section):
    """What a baked step must show. Absolute limits, and limits relative to the live (old)
    deployment over the same window, which tell a bad model from a bad minute."""

    max_error_rate: float
    max_p95_ms: float
    error_rate_margin: float
    """The new error rate may exceed the old one's by at most this (absolute)."""
    p95_increase: float
    """The new p95 may exceed the old one's by at most this fraction (plus p95_slack_ms)."""
    p95_slack_ms: float
    """Absolute slack on the relative p95 limit, so a 4 ms vs 6 ms difference is not a verdict."""
    min_baseline_requests: int
    """Fewer old-deployment requests than this in the window: no relative comparison."""


class RolloutTiming(Section):
    """How long to bake, wait and poll, per backend."""

    bake_seconds: PerBackend
    max_bake_seconds: PerBackend
    """A step with too few requests to judge bakes on up to this long."""
    metrics_deadline_seconds: PerBackend
    """After the bake, how long to wait for the metrics to cover the whole window."""
    poll_seconds: PerBackend
    """How often a bake checks for an abort, a cancellation or a pre-emption."""
    canaries_per_second: PerBackend
    """The most canary requests per second the rollout sends through the endpoint's normal
    route; it sends fewer when that is enough for min_requests at the step's share."""
    endpoint_wait_seconds: PerBackend
    """How long a release waits for another's change to the endpoint before it gives up."""


class ShadowSettings(Section):
    """The shadow comparison of the mirror step (tasks/rollout/shadow.py): the candidate's
    answers to mirrored copies against the live deployment's answers to the same requests,
    joined on the collected data's correlation id. Beyond these bounds the rollout stops
    before any live traffic moves."""

    max_label_disagreement: float = Field(ge=0, le=1)
    """The share of paired rows whose labels differ."""
    max_mean_probability_difference: float = Field(ge=0, le=1)
    """The mean absolute difference of the two probabilities over the pairs."""
    min_pairs: int = Field(ge=1)
    """Fewer pairs than this: treated as `too_few_requests` says (fail, or judge on them)."""
    divergent_rows: int = Field(default=10, ge=0)
    """How many of the most divergent pairs the report lists."""


class RolloutSettings(Section):
    timing: RolloutTiming
    min_requests: int = Field(ge=1)
    """Requests the new deployment must have served in a step's window to judge it."""
    too_few_requests: Literal["fail", "judge"]
    """After the longest bake, too few requests: fail the step, or judge on what there is."""
    guardrails: Guardrails
    shadow: ShadowSettings
    steps: tuple[RolloutStep, ...]


class ReleaseSettings(FileSettings):
    file_name: ClassVar[str] = "release.yaml"
    model_config = _settings_config(file_name)

    test_endpoint: str
    prod_environment: str
    """The environment whose endpoint `prod_endpoint` is prod; drift monitoring watches it."""
    prod_endpoint: str
    approval: ApprovalSettings
    integration: IntegrationSettings
    rollout: RolloutSettings


def load_release_settings(path: Path | None = None) -> ReleaseSettings:
    return load_settings(ReleaseSettings, path)


# --- config/monitoring.yaml ------------------------------------------------------------------


class ThresholdSettings(Section):
    numeric: float
    categorical: float
    prediction: float


class MonitoringSettings(FileSettings):
    """Drift monitoring; the endpoint it watches is release.yaml's prod endpoint (the loader
    fills `endpoint_environment` and `endpoint` from there, so monitoring.yaml cannot disagree)."""

    file_name: ClassVar[str] = "monitoring.yaml"
    model_config = _settings_config(file_name)

    endpoint_environment: str
    endpoint: str
    window_hours: float
    min_rows: int
    reference_sample_rows: int
    thresholds: ThresholdSettings
    event: str


def load_monitoring_settings(path: Path | None = None) -> MonitoringSettings:
    release = load_release_settings(path.parent / ReleaseSettings.file_name if path else None)
    return load_settings(
        MonitoringSettings,
        path,
        endpoint_environment=release.prod_environment,
        endpoint=release.prod_endpoint,
    )


# --- config/retrain.yaml ---------------------------------------------------------------------


class RetrainSettings(FileSettings):
    file_name: ClassVar[str] = "retrain.yaml"
    model_config = _settings_config(file_name)

    min_auc_gain: float
    recent_data: str


def load_retrain_settings(path: Path | None = None) -> RetrainSettings:
    return load_settings(RetrainSettings, path)


# --- config/batch.yaml -----------------------------------------------------------------------


class LocalBatchSettings(Section):
    mini_batch_rows: int = Field(gt=0)
    workers: int = Field(ge=0)
    """0: one per core this process may use."""


class AzureBatchSettings(Section):
    instance_count: int = Field(gt=0)
    max_concurrency_per_instance: int = Field(gt=0)
    mini_batch_size: int = Field(gt=0)
    max_retries: int = Field(ge=0)
    timeout_seconds: int = Field(gt=0)
    job_timeout_seconds: int = Field(gt=0)


class BatchSettings(FileSettings):
    """Batch scoring of an environment's inbox by the champion (batch-inbox, batch-score)."""

    file_name: ClassVar[str] = "batch.yaml"
    model_config = _settings_config(file_name)

    environment: str
    endpoint: str
    inbox: str
    results: str
    datastore: str
    event: str
    max_bad_row_share: float = Field(ge=0, le=1)
    error_threshold: int = Field(ge=-1)
    local: LocalBatchSettings
    azure: AzureBatchSettings


def load_batch_settings(path: Path | None = None) -> BatchSettings:
    return load_settings(BatchSettings, path)
