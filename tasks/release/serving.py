"""Serving: endpoints, deployments and their traffic (the prod rollout: tasks/rollout/steps.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prefect import get_run_logger, task
from prefect.exceptions import PrefectSignal
from prefect.runtime import flow_run

import audit
import backends
from records.serving import DeploymentInfo, EndpointInfo
from records.workspace import AssetReferences, ModelVersion

COLOURS = ("blue", "green")


@task(retries=2, retry_delay_seconds=3)
def ensure_endpoint(environment: str, name: str) -> EndpointInfo:
    """Create the endpoint if needed (idempotent), restarting it cleanly after a crash."""
    return backends.endpoints(environment).create_or_update_endpoint(name)


def colour_for(endpoint: EndpointInfo, model: ModelVersion) -> str:
    """Where `model` goes: the colour already holding it (a re-run after a crash converges
    there), else the colour not serving live traffic, so the old model stays put."""
    for deployment in endpoint.deployments:
        if (deployment.model_name, deployment.model_version) == (model.name, model.version):
            return deployment.name
    serving = endpoint.serving()
    return "blue" if serving in (None, "green") else "green"


@task
def deploy_model(
    environment: str,
    endpoint: str,
    colour: str,
    model: ModelVersion,
    from_registry: str,
    assets: AssetReferences,
) -> DeploymentInfo:
    """Load and smoke-test the model as `colour` in the inference environment `assets` names
    (test and prod: the shared registry's); a failure leaves traffic untouched.

    `from_registry` is "shared" or the name of the environment whose registry holds `model`.
    """
    registry = (
        backends.shared_registry()
        if from_registry == "shared"
        else backends.workspace(from_registry)
    )
    deployment = backends.endpoints(environment).create_or_update_deployment(
        endpoint, colour, model, registry.model_path(model), assets.inference_environment
    )
    audit.record(
        "deployed",
        "release-flow",
        f"{environment}/{endpoint}/{colour}",
        f"{model.name} v{model.version} loaded and smoke-tested",
        {
            "model": model.name,
            "version": model.version,
            "environment": assets.inference_environment,
        },
    )
    return deployment


@task
def route_all_traffic(environment: str, endpoint: str, colour: str) -> EndpointInfo:
    """Point all live traffic at one deployment (test endpoints have nothing to protect)."""
    return set_traffic(environment, endpoint, {colour: 100}, {}, "test endpoint")


@task
def endpoint_key(environment: str, name: str) -> str:
    return backends.endpoints(environment).get_key(name)


@task
def delete_endpoint(environment: str, name: str) -> None:
    backends.endpoints(environment).delete_endpoint(name)
    get_run_logger().info("Deleted endpoint %s in %s", name, environment)


def test_endpoint_name(prefix: str, run_id: object = None) -> str:
    """The release run's own test endpoint (this run's unless `run_id` says), so two releases
    never share one: one run's integration tests never score another's model, and one run's
    clean-up never deletes the endpoint another is testing. Stable across a pause and resume
    (same flow run); 26 characters with the default prefix (Azure allows 32)."""
    run = run_id or flow_run.root_flow_run_id or flow_run.id
    return f"{prefix}-{str(run).replace('-', '')[:8]}" if run else prefix


@contextlib.contextmanager
def test_endpoint_lifetime(environment: str, name: str, keep: bool = False) -> Iterator[None]:
    """The test endpoint is deleted when the block ends, however it ends (integration tests
    failed, approval rejected or timed out, a deploy error), unless the run asks to keep it: on
    Azure it is a billed instance. A suspension (Prefect's Pause signal, raised while a
    deployed release waits for a person) is not an end: the resumed run uses the endpoint again.
    """
    try:
        yield
    except PrefectSignal:
        raise
    except BaseException:
        if not keep:
            delete_endpoint(environment, name)
        raise
    if not keep:
        delete_endpoint(environment, name)
    else:
        get_run_logger().info("Keeping endpoint %s in %s as the run asked", name, environment)


def set_traffic(
    environment: str,
    endpoint: str,
    traffic: Mapping[str, int],
    mirror: Mapping[str, int],
    reason: str,
    action: str = "traffic",
) -> EndpointInfo:
    """Replace the endpoint's whole routing and record it in the audit trail."""
    info = backends.endpoints(environment).set_traffic(endpoint, traffic, mirror)
    audit.record(
        action,
        "release-flow",
        f"{environment}/{endpoint}",
        reason,
        {"traffic": dict(traffic), "mirror": dict(mirror)},
    )
    return info
