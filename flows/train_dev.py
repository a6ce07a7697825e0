"""train-dev: validate the data, train in dev, gate, register in dev; then promote the
pipeline's components and environments to the shared registry once a person approved."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows.training import train_in_environment
from records import aliases
from records.workspace import ModelVersion
from settings import TrainingRunSettings, load_release_settings
from tasks.release.approval import ask_for_approval
from tasks.training.pipeline_assets import (
    pipeline_assets_pack,
    pipeline_assets_to_promote,
    promote_pipeline_assets,
)


@flow(name="train-dev", log_prints=True)
def train_dev(
    data_path: str | None = None,
    environment: str = "dev",
    approval_timeout_seconds: int | None = None,
    run_settings: TrainingRunSettings | None = None,
) -> ModelVersion | State:
    """Train a candidate on `data_path` (a CSV; the synthetic sample when empty) and register it.

    Bad data stops the run before any training job; a candidate that misses the thresholds
    or the champion ends the run Failed with nothing registered. When the pipeline ran
    components or environments the shared registry does not hold yet, the run then waits for
    a person to approve promoting them (test and prod run only the registry's versions); a
    rejected or timed-out approval promotes nothing and leaves the model in dev.
    """
    trained = train_in_environment(environment, data_path, aliases.CHAMPION, run_settings)
    model = trained.model

    # Pipeline assets: what this run validated goes to the shared registry once approved
    pending = pipeline_assets_to_promote(model)
    if pending is None:
        return model
    approval_settings = load_release_settings().approval
    timeout = approval_timeout_seconds or approval_settings.timeout_seconds
    decision = ask_for_approval(
        f"pipeline assets {pending.digest} ({environment})",
        pipeline_assets_pack(pending, model, trained.pipeline_run.tracking_url),
        "pipeline-assets-approval",
        timeout,
        approval_settings.poll_interval_seconds,
        unchanged=f"the shared registry ({model.name} v{model.version} stays in {environment})",
    )
    if isinstance(decision, State):
        return decision
    promote_pipeline_assets(pending, decision)
    return model


if __name__ == "__main__":
    train_dev()
