"""Stopping a rollout from outside it, and clearing up one that a crash abandoned.

`stop_rollout` is what `mlops rollout abort`, a rollback and a cancelled release run do: all
traffic goes back to the deployment that served before the rollout, at once, with an audit
record; the stop is written first, so the rollout (which checks for it every poll and after
every traffic change) re-applies the same traffic if its own change raced this one, then ends.
It does not wait for the endpoint's lease: a stop must never queue behind what it stops.
"""

from __future__ import annotations

from typing import Literal

from prefect import get_run_logger, task
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

import audit
import backends
from records.workspace import ModelVersion
from tasks.rollout.record import RolloutRecord, StopRequest, read_record, request_stop, write_record


def stop_rollout(
    environment: str,
    endpoint: str,
    by: Literal["abort", "rollback", "cancel"],
    actor: str,
    reason: str,
) -> RolloutRecord | None:
    """Stop the running rollout on the endpoint, if there is one (None: there was none)."""
    record = read_record(environment, endpoint)
    if record is None or record.status != "running":
        return None
    stop = StopRequest(by=by, actor=actor, reason=reason, traffic=record.previous_traffic)
    request_stop(environment, endpoint, stop)
    backends.endpoints(environment).set_traffic(endpoint, stop.traffic, {})
    audit.record(
        "rollback" if by == "rollback" else "rollout-aborted",
        actor,
        f"{environment}/{endpoint}",
        reason,
        {
            "traffic": stop.traffic,
            "stopped": record.model,
            "at_step": record.step + 1,
            "flow_run": record.flow_run_id,
        },
    )
    write_record(record.ended("stopped"))  # the rollout may be gone (crashed): say it here too
    return record


def stop_rollout_of_cancelled_run(flow: object, flow_run: FlowRun, state: State) -> None:
    """A flow's on_cancellation hook: when a worker cancels a release (the UI's Cancel), it may
    kill the process before the rollout notices; the hook (which the runner calls after the
    kill) stops the rollout this run was driving, so traffic never stays half-shifted."""
    from settings import load_release_settings

    settings = load_release_settings()
    prod, endpoint = settings.prod_environment, settings.prod_endpoint
    record = read_record(prod, endpoint)
    if record is not None and str(flow_run.id) in (record.flow_run_id, record.root_flow_run_id):
        stop_rollout(prod, endpoint, "cancel", "prefect", "the flow run was cancelled")


@task
def settle_abandoned_rollout(environment: str, endpoint: str, model: ModelVersion) -> None:
    """Before deploying `model`: a rollout of another model that a crash left running is
    abandoned (its traffic goes back to where it began), so the colours are what they seem.
    A rollout of this same model is left for shift_traffic to resume."""
    record = read_record(environment, endpoint)
    if record is None or record.status != "running":
        return
    if record.model == f"{model.name}:{model.version}":
        return
    get_run_logger().warning(
        "A rollout of %s on %s was left running (run %s, step %d); putting its traffic back "
        "to %s before rolling out %s v%s",
        record.model,
        endpoint,
        record.flow_run_id,
        record.step + 1,
        record.previous_traffic,
        model.name,
        model.version,
    )
    stop_rollout(
        environment,
        endpoint,
        "abort",
        "release-flow",
        f"abandoned by a crash; superseded by {model.name} v{model.version}",
    )
