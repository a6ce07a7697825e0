"""Approvals through the Prefect API: the same path the UI's Resume form takes.

Resuming with input makes the server validate it against the paused run's RunInput schema;
invalid input is refused there and the run stays paused.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.flow_runs import resume_flow_run


@dataclass(frozen=True)
class PausedRun:
    id: str
    name: str
    flow_name: str
    state: str
    paused_since: str


def list_paused_runs() -> list[PausedRun]:
    """Flow runs waiting for a person (paused in-process, or suspended on a worker)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused", "Suspended"]))
            )
        )
        flows = {run.flow_id: client.read_flow(run.flow_id).name for run in runs}
    return [
        PausedRun(
            str(run.id),
            run.name,
            flows[run.flow_id],
            run.state.name if run.state and run.state.name else "?",
            run.state.timestamp.isoformat() if run.state else "",
        )
        for run in runs
    ]


def decide(flow_run_id: str, approved: bool, approver: str, reason: str) -> None:
    """Resume a paused release with a decision; raises if the server refuses the input."""
    resume_flow_run(
        UUID(flow_run_id),
        run_input={"approved": approved, "approver": approver, "reason": reason},
    )
