"""Run settings from config/*.yaml, typed, so a typo in a threshold fails at load, not mid-run."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from backends.topology import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "config"
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
        yaml.safe_load((path or CONFIG_DIR / "training.yaml").read_text())
    )
