"""The training runbook shared by every environment: data gate -> pipeline -> gate -> register."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from data_checks.validation import DataValidationReport
from records import aliases
from records.workspace import AssetReferences, ModelVersion, PipelineRun
from settings import TrainingRunSettings, load_training_settings
from tasks.data import generate_synthetic_sample, register_data_asset, validate_data
from tasks.training.model_card import PublishedCard, publish_model_card, write_model_card
from tasks.training.pipeline import (
    GateResult,
    check_quality_gate,
    find_champion,
    run_training_pipeline,
)
from tasks.training.pipeline_assets import resolve_pipeline_assets
from tasks.training.registry import register_model


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run leaves behind, for the release's evidence pack."""

    model: ModelVersion
    gate: GateResult
    data_report: DataValidationReport
    pipeline_run: PipelineRun
    assets: AssetReferences
    card: PublishedCard


@flow(name="train-in-environment", log_prints=True)
def train_in_environment(
    environment: str,
    data_path: str | None = None,
    alias: str = aliases.CHAMPION,
    run_settings: TrainingRunSettings | None = None,
) -> TrainingOutcome:
    """Validate, train, gate and register in one environment's workspace.

    `run_settings` changes config/training.yaml's hyperparameters or gate for this run only
    (a retrain sets a positive `champion_min_delta`: it must beat the champion).
    """
    settings = load_training_settings()
    if run_settings is not None and run_settings.changed():
        print(f"This run's settings (config/training.yaml otherwise): {run_settings.changed()}")
        settings = run_settings.applied_to(settings)

    # Pipeline code: dev registers the working tree's; the others run the shared registry's
    assets = resolve_pipeline_assets(environment)

    # Data stage
    source = (
        Path(data_path)
        if data_path
        else generate_synthetic_sample(settings.demo_data.rows, settings.demo_data.seed)
    )
    data_report = validate_data(environment, source, assets)
    asset = register_data_asset(environment, source, settings.data_asset)

    # Training stage
    champion = find_champion(environment, settings.model_name)
    run = run_training_pipeline(
        environment, asset, champion, settings.pipeline, settings.gate, settings.fairness, assets
    )
    gate = check_quality_gate(run)

    # Registration stage: the model card goes into the model's files, then the version
    write_model_card(environment, settings.model_name, run, asset, gate, assets)
    model = register_model(environment, settings.model_name, run, asset, gate, assets, alias)
    card = publish_model_card(model, environment)
    return TrainingOutcome(model, gate, data_report, run, assets, card)
