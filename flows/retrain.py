"""retrain: on a schedule or on drift, train a challenger; it is proposed only if it wins."""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import deployment

from flows.release import release
from flows.train_dev import train_dev
from settings import TrainingRunSettings, load_retrain_settings
from tasks.data import find_recent_data


@flow(name="retrain", log_prints=True)
def retrain(trigger: str = "schedule", data_path: str | None = None) -> str:
    """Train in dev on recent data, then release it against the champion with a margin.

    From a deployment, the release is started as its own deployment run, so its approval
    suspends (no process held); on a laptop it runs inline and pauses.
    """
    settings = load_retrain_settings()
    print(f"Retraining, triggered by: {trigger}")
    data = data_path or find_recent_data(settings.recent_data)
    train_dev(data)
    run_settings = TrainingRunSettings(champion_min_delta=settings.min_auc_gain)
    if deployment.id is not None:
        run = run_deployment(
            "release/release",
            parameters={"data_path": data, "run_settings": run_settings},
            timeout=0,
            as_subflow=False,
        )
        assert isinstance(run, FlowRun)  # called from a sync flow: the sync form
        return f"release run {run.id} started; it waits for approval"
    state = release(data_path=data, run_settings=run_settings, return_state=True)
    return f"release ended {state.name}: {state.message}"
