"""Serving stage: endpoints, deployments, and the health-checked blue/green traffic shift."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.exceptions import PrefectSignal
from prefect.transactions import Transaction, get_transaction

import backends
from backends.base import DeploymentInfo, EndpointInfo, ModelVersion
from backends.pipeline_assets import AssetReferences
from tasks import audit
from tasks.integration_tests import split_body
from tasks.settings import RolloutSettings

COLOURS = ("blue", "green")


class RolloutFailed(RuntimeError):
    """A health check failed during the shift; traffic is back on the old colour."""


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
    return _set_traffic(environment, endpoint, {colour: 100}, {})


@task
def endpoint_key(environment: str, name: str) -> str:
    return backends.endpoints(environment).get_key(name)


@task
def delete_endpoint(environment: str, name: str) -> None:
    backends.endpoints(environment).delete_endpoint(name)
    get_run_logger().info("Deleted endpoint %s in %s", name, environment)


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


def _probe(endpoint: EndpointInfo, key: str, colour: str, rows: pd.DataFrame) -> None:
    """Canary requests aimed at the new colour, so its health has numbers behind it."""
    headers = {"Authorization": f"Bearer {key}", "azureml-model-deployment": colour}
    with httpx.Client(timeout=10, headers=headers) as client:
        for i in range(len(rows)):
            # a transport error shows up as missing requests in the server's stats
            with contextlib.suppress(httpx.HTTPError):
                client.post(endpoint.scoring_uri, json=split_body(rows.iloc[[i]]))


def _set_traffic(
    environment: str, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]
) -> EndpointInfo:
    info = backends.endpoints(environment).set_traffic(endpoint, traffic, mirror)
    audit.record(
        "traffic",
        "release-flow",
        f"{environment}/{endpoint}",
        "rollout step",
        {"traffic": dict(traffic), "mirror": dict(mirror)},
    )
    return info


@task
def shift_traffic(
    environment: str,
    endpoint: str,
    new: str,
    probe_rows_dir: str,
    rollout: RolloutSettings,
) -> EndpointInfo:
    """Mirror, then 10 -> 50 -> 100 percent, checking error rate and p95 after every step.

    A failed check returns all traffic to the old colour before raising. The previous traffic
    is also kept on the Prefect transaction, so a failure after this task (e.g. marking the
    champion) rolls traffic back through the on_rollback hook.
    """
    logger = get_run_logger()
    endpoints = backends.endpoints(environment)
    before = endpoints.get_endpoint(endpoint)
    if before is None:
        raise RolloutFailed(
            f"endpoint {endpoint} does not exist in {environment}: nothing to shift"
        )
    old = before.serving()
    if old == new:
        get_run_logger().info("%s already serves all traffic on %s", new, endpoint)
        return before
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("environment", environment)
        transaction.set("endpoint", endpoint)
        transaction.set("previous_traffic", dict(before.traffic))
    key = endpoints.get_key(endpoint)
    rows = pd.read_parquet(Path(probe_rows_dir) / "data.parquet").drop(columns=["readmitted_30d"])
    rows = rows.sample(n=rollout.probe_requests, replace=True, random_state=1)
    history = []
    info = before
    for number, step in enumerate(rollout.steps, start=1):
        if old is None:  # first deployment ever: nothing to protect, go straight to 100
            info = _set_traffic(environment, endpoint, {new: 100}, {})
        elif step.mirror is not None:
            info = _set_traffic(environment, endpoint, {old: 100, new: 0}, {new: step.mirror})
        else:
            share = int(step.traffic or 0)
            info = _set_traffic(environment, endpoint, {old: 100 - share, new: share}, {})
        endpoints.reset_health(endpoint)
        _probe(info, key, new, rows)
        health = endpoints.deployment_health(endpoint, new)
        max_error = (
            step.max_error_rate if step.max_error_rate is not None else rollout.max_error_rate
        )
        max_p95 = step.max_p95_ms if step.max_p95_ms is not None else rollout.max_p95_ms
        ok = health.requests > 0 and health.error_rate <= max_error and health.p95_ms <= max_p95
        label = (
            "first deployment"
            if old is None
            else (f"mirror {step.mirror}%" if step.mirror is not None else f"{step.traffic}% live")
        )
        history.append(
            {
                "step": number,
                "traffic": label,
                "requests": health.requests,
                "error_rate": round(health.error_rate, 4),
                "p95_ms": round(health.p95_ms, 1),
                "healthy": ok,
            }
        )
        logger.info("Rollout step %d (%s): %s", number, label, history[-1])
        if not ok:
            restored = _restore(environment, endpoint, before.traffic, old)
            create_table_artifact(key="rollout", table=history, description="Rollout aborted")
            raise RolloutFailed(
                f"{new} failed its health check at step {number} ({label}): error rate "
                f"{health.error_rate:.2%} (max {max_error:.2%}), p95 {health.p95_ms:.1f} ms "
                f"(max {max_p95:.0f} ms) over {health.requests} requests; traffic is back on "
                f"{restored}"
            )
        if old is None:
            break
    create_table_artifact(key="rollout", table=history, description=f"{new} took over {endpoint}")
    return info


def _restore(environment: str, endpoint: str, traffic: Mapping[str, int], old: str | None) -> str:
    backends.endpoints(environment).set_traffic(endpoint, traffic, {})
    audit.record(
        "rollback",
        "release-flow",
        f"{environment}/{endpoint}",
        "health check failed during rollout",
        {"traffic": dict(traffic)},
    )
    return old or "no deployment"


@shift_traffic.on_rollback
def _return_traffic(transaction: Transaction) -> None:
    """A later step of the release failed: put the traffic back where it was."""
    previous = transaction.get("previous_traffic")
    if previous:
        _restore(transaction.get("environment"), transaction.get("endpoint"), previous, None)
