"""Run settings from config/*.yaml, typed, so a typo in a threshold fails at load, not mid-run."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

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


class RolloutStep(BaseModel):
    """Either mirror a share of traffic to the new colour, or send it a share of live traffic.

    A step may tighten the health budgets (e.g. a stricter p95 once most traffic has moved).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    mirror: int | None = None
    traffic: int | None = None
    max_error_rate: float | None = None
    max_p95_ms: float | None = None


class RolloutSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    probe_requests: int = 60
    max_error_rate: float = 0.01
    max_p95_ms: float = 250
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
