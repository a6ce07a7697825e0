"""train-dev: validate the data, train in dev, gate, register in dev."""

from __future__ import annotations

from prefect import flow

from backends.base import ModelVersion
from flows.training import train_in_environment


@flow(name="train-dev", log_prints=True)
def train_dev(data_path: str | None = None, environment: str = "dev") -> ModelVersion:
    """Train a candidate on `data_path` (a CSV; the synthetic sample when empty) and register it.

    Bad data stops the run before any training job; a candidate that misses the thresholds
    or the champion ends the run Failed with nothing registered.
    """
    return train_in_environment(environment, data_path, alias="champion").model


if __name__ == "__main__":
    train_dev()
