"""Run settings from config/*.yaml, typed, so a typo in a threshold fails at load, not mid-run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.topology import REPO_ROOT


def config_dir() -> Path:
    """config/ in the repo; MLOPS_CONFIG_DIR points a run at another set of settings."""
    return Path(os.environ.get("MLOPS_CONFIG_DIR", REPO_ROOT / "config"))


PIPELINES_DIR = REPO_ROOT / "components" / "pipelines"


class PipelineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    test_size: float = 0.2
    seed: int = 42
    learning_rate: float = 0.1
    max_iter: int = 300


class GateSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    min_auc: float = 0.70
    min_f1: float = 0.30
    max_brier: float = 0.20
    champion_min_delta: float = -0.005


class DemoDataSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rows: int = 50_000
    seed: int = 7


class TrainingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    data_asset: str
    model_name: str
    pipeline: PipelineSettings
    gate: GateSettings
    demo_data: DemoDataSettings


def load_training_settings(path: Path | None = None) -> TrainingSettings:
    return TrainingSettings.model_validate(
        yaml.safe_load((path or config_dir() / "training.yaml").read_text())
    )


class ApprovalSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timeout_seconds: int = 86_400
    poll_interval_seconds: int = 2


class IntegrationSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    p95_budget_ms: float = 150
    latency_requests: int = 200


class PerBackend(BaseModel):
    """A duration or rate that differs by backend: Azure Monitor aggregates per minute and
    publishes minutes late, so a bake on Azure lasts minutes; the laptop's counters are exact
    and immediate, so the demo bakes for seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    local: float
    azure: float

    def on(self, backend: str) -> float:
        return float(getattr(self, backend))


class RolloutStep(BaseModel):
    """Either mirror a share of traffic to the new deployment, or send it a share of live
    traffic, then bake: hold the weights and judge what the new deployment served meanwhile.

    A step may bake longer than the default, and tighten the absolute limits (e.g. a stricter
    p95 once most traffic has moved).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    mirror: int | None = Field(default=None, gt=0, le=50)
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


class Guardrails(BaseModel):
    """What a baked step must show. Absolute limits, and limits relative to the live (old)
    deployment over the same window, which tell a bad model from a bad minute."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_error_rate: float = 0.01
    max_p95_ms: float = 250
    error_rate_margin: float = 0.01
    """The new error rate may exceed the old one's by at most this (absolute)."""
    p95_increase: float = 0.5
    """The new p95 may exceed the old one's by at most this fraction (plus p95_slack_ms)."""
    p95_slack_ms: float = 25
    """Absolute slack on the relative p95 limit, so a 4 ms vs 6 ms difference is not a verdict."""
    min_baseline_requests: int = 20
    """Fewer old-deployment requests than this in the window: no relative comparison."""


class RolloutTiming(BaseModel):
    """How long to bake, wait and poll, per backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")
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


class RolloutSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    timing: RolloutTiming
    min_requests: int = Field(default=20, ge=1)
    """Requests the new deployment must have served in a step's window to judge it."""
    too_few_requests: Literal["fail", "judge"] = "fail"
    """After the longest bake, too few requests: fail the step, or judge on what there is."""
    guardrails: Guardrails = Guardrails()
    steps: tuple[RolloutStep, ...]


class ReleaseSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    test_endpoint: str
    prod_endpoint: str
    approval: ApprovalSettings
    integration: IntegrationSettings
    rollout: RolloutSettings


def load_release_settings(path: Path | None = None) -> ReleaseSettings:
    return ReleaseSettings.model_validate(
        yaml.safe_load((path or config_dir() / "release.yaml").read_text())
    )


class ThresholdSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    numeric: float = 0.1
    categorical: float = 0.1
    prediction: float = 0.1


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    endpoint_environment: str = "prod"
    window_hours: float = 24
    min_rows: int = 200
    reference_sample_rows: int = 200_000
    thresholds: ThresholdSettings = ThresholdSettings()
    event: str = "mlops.model.drift-detected"


def load_monitoring_settings(path: Path | None = None) -> MonitoringSettings:
    return MonitoringSettings.model_validate(
        yaml.safe_load((path or config_dir() / "monitoring.yaml").read_text())
    )


class RetrainSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    min_auc_gain: float = 0.0
    recent_data: str = "incoming/recent.csv"


def load_retrain_settings(path: Path | None = None) -> RetrainSettings:
    return RetrainSettings.model_validate(
        yaml.safe_load((path or config_dir() / "retrain.yaml").read_text())
    )
