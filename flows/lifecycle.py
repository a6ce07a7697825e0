"""lifecycle: the whole path on one laptop run, train-dev then release."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows.release import release
from flows.train_dev import train_dev


@flow(name="lifecycle", log_prints=True)
def lifecycle(data_path: str | None = None, approval_timeout_seconds: int | None = None) -> State:
    """Train in dev, then release: test, approval, shared registry, prod blue/green."""
    train_dev(data_path)
    return release(data_path, approval_timeout_seconds, return_state=True)
