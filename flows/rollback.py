"""rollback: prod back on the last known good model, traffic and champion alias both."""

from __future__ import annotations

from prefect import flow

from backends.base import ModelVersion
from tasks.rollback import find_last_known_good, restore_champion, return_traffic
from tasks.settings import load_release_settings, load_training_settings


@flow(name="rollback", log_prints=True)
def rollback(reason: str, actor: str = "operator", environment: str = "prod") -> ModelVersion:
    """Return `environment`'s endpoint traffic and the `champion` alias to the model before."""
    model_name = load_training_settings().model_name
    endpoint = load_release_settings().prod_endpoint
    current, good = find_last_known_good(model_name)
    return_traffic(environment, endpoint, good, actor, reason)
    restore_champion(current, good, actor, reason)
    return good
