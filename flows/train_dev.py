"""train-dev: validate the data, train in dev, gate, register in dev."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from backends.base import ModelVersion
from tasks.data import generate_synthetic_sample, register_data_asset, validate_data
from tasks.registry import register_model
from tasks.settings import load_training_settings
from tasks.training import check_quality_gate, find_champion, run_training_pipeline


@flow(name="train-dev", log_prints=True)
def train_dev(data_path: str | None = None, environment: str = "dev") -> ModelVersion:
    """Train a candidate on `data_path` (a CSV; the synthetic sample when empty) and register it.

    Bad data stops the run before any training job; a candidate that misses the thresholds
    or the champion ends the run Failed with nothing registered.
    """
    settings = load_training_settings()

    # Data stage
    source = (
        Path(data_path)
        if data_path
        else generate_synthetic_sample(settings.demo_data.rows, settings.demo_data.seed)
    )
    validate_data(environment, source)
    asset = register_data_asset(environment, source, settings.data_asset)

    # Training stage
    champion = find_champion(environment, settings.model_name)
    run = run_training_pipeline(environment, asset, champion, settings.pipeline, settings.gate)
    gate = check_quality_gate(run)

    # Registration stage
    return register_model(environment, settings.model_name, run, asset, gate)


if __name__ == "__main__":
    train_dev()
