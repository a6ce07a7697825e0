"""Rollback: prod traffic and the champion alias go back to the last known good model."""

from __future__ import annotations

from prefect import get_run_logger, task

import audit
import backends
from records import aliases
from records.serving import EndpointInfo
from records.workspace import ModelVersion


class NothingToRollBackTo(RuntimeError):
    """There is no earlier champion to return to."""


@task
def find_last_known_good(model_name: str) -> tuple[ModelVersion, ModelVersion]:
    """(current champion, the champion before it)."""
    registry = backends.shared_registry()
    current = registry.get_model(model_name, aliases.CHAMPION)
    previous = registry.get_model(model_name, aliases.PREVIOUS_CHAMPION)
    if current is None or previous is None or previous.version == current.version:
        raise NothingToRollBackTo(
            f"no earlier champion of {model_name} to return to (champion: "
            f"{current.version if current else 'none'}, previous: "
            f"{previous.version if previous else 'none'}); nothing was changed"
        )
    return current, previous


@task
def return_traffic(
    environment: str, endpoint: str, good: ModelVersion, actor: str, reason: str
) -> EndpointInfo:
    """All traffic to the colour that serves `good` (kept deployed by blue/green for this);
    redeploy it to the idle colour first if it is gone."""
    endpoints = backends.endpoints(environment)
    info = endpoints.create_or_update_endpoint(endpoint)
    colour = next((d.name for d in info.deployments if d.model_version == good.version), None)
    if colour is None:
        colour = "blue" if info.serving() == "green" else "green"
        registry = backends.shared_registry()
        endpoints.create_or_update_deployment(endpoint, colour, good, registry.model_path(good))
    info = endpoints.set_traffic(endpoint, {colour: 100}, {})
    audit.record(
        "rollback",
        actor,
        f"{environment}/{endpoint}",
        reason,
        {"traffic": {colour: 100}, "model_version": good.version},
    )
    get_run_logger().info("Prod traffic is on %s (%s v%s)", colour, good.name, good.version)
    return info


@task
def restore_champion(current: ModelVersion, good: ModelVersion, actor: str, reason: str) -> None:
    registry = backends.shared_registry()
    registry.set_model_alias(good.name, aliases.CHAMPION, good.version)
    registry.set_model_alias(good.name, aliases.PREVIOUS_CHAMPION, good.version)
    audit.record(
        "rollback",
        actor,
        f"{registry.name}/{good.name}",
        reason,
        {"champion": good.version, "was": current.version},
    )
