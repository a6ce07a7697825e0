"""lifecycle: the whole path on one laptop run, train-dev, release, then a day's batch."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows.batch import batch_score, watch_inbox
from flows.release import release
from flows.train_dev import train_dev
from settings import load_batch_settings
from tasks.batch import drop_sample_discharges


@flow(name="lifecycle", log_prints=True)
def lifecycle(
    data_path: str | None = None,
    approval_timeout_seconds: int | None = None,
    batch_rows: int = 5_000,
) -> State:
    """Train in dev, then release: test, approval, shared registry, prod blue/green. Once the
    champion serves prod, a day's discharges (`batch_rows` synthetic rows; 0: none) land in the
    inbox and are scored in batch, as batch-inbox and the batch-score runs its events start
    would do on a worker."""
    train_dev(data_path)
    state = release(data_path, approval_timeout_seconds, return_state=True)
    if state.is_completed() and batch_rows:
        environment = load_batch_settings().environment
        drop_sample_discharges(environment, batch_rows, seed=7)
        for name in watch_inbox(environment):
            batch_score(name, environment)
    return state
