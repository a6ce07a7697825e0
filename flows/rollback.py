"""rollback: prod back on the last known good model, traffic and champion alias both."""

from __future__ import annotations

from prefect import flow, task

from records.workspace import ModelVersion
from settings import load_release_settings, load_training_settings
from tasks.release.endpoint_lease import endpoint_lease
from tasks.rollback import (
    find_last_known_good,
    restore_champion,
    return_traffic,
)
from tasks.rollout.stop import stop_rollout
from tasks.training.registry import find_prod_champion


@task
def stop_running_rollout(environment: str, endpoint: str, actor: str, reason: str) -> str | None:
    """A rollout in progress is the change to undo: stop it (traffic back on the deployment
    that served before it, at once); the model it was rolling out was never crowned."""
    stopped = stop_rollout(environment, endpoint, "rollback", actor, reason)
    return stopped.model if stopped else None


@flow(name="rollback", log_prints=True)
def rollback(reason: str, actor: str = "operator", environment: str | None = None) -> ModelVersion:
    """Return the prod endpoint (release.yaml's prod_endpoint in `environment`, by default its
    prod_environment) to the last known good model.

    During a rollout, that is the model serving before it: the rollout is stopped without
    waiting for it (it notices and ends) and the champion alias stays. Otherwise traffic and
    the `champion` alias go back to the champion before the current one, holding the endpoint
    so no release changes it meanwhile.
    """
    model_name = load_training_settings().model_name
    settings = load_release_settings()
    endpoint = settings.prod_endpoint
    environment = environment or settings.prod_environment
    if stop_running_rollout(environment, endpoint, actor, reason):
        return find_prod_champion(model_name)
    wait = settings.rollout.timing.endpoint_wait_seconds
    with endpoint_lease(environment, endpoint, wait, f"rolling back ({reason})"):
        current, good = find_last_known_good(model_name)
        return_traffic(environment, endpoint, good, actor, reason)
        restore_champion(current, good, actor, reason)
    return good
