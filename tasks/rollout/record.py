"""Where a rollout stands, and who asked it to stop: two Prefect Variables per endpoint.

The rollout writes its position (model, deployments, traffic before it began, current step)
after every change, so a run that crashes mid-bake and is run again resumes at that step. A
stop (an operator's `mlops rollout abort`, a rollback, a cancelled run) is written to a second
Variable that only stoppers write and only a new rollout clears, so a progress write can never
overwrite a stop. Both are readable in the Prefect UI (Variables).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from prefect.variables import Variable
from pydantic import BaseModel, ConfigDict, Field

Status = Literal["running", "done", "rolled-back", "stopped"]


class RolloutRecord(BaseModel):
    """One rollout of `model` to the `new` deployment of an endpoint."""

    model_config = ConfigDict(frozen=True)
    environment: str
    endpoint: str
    model: str  # "name:version"
    new: str
    old: str | None
    previous_traffic: dict[str, int]
    step: int = 0  # 0-based index into the rollout's steps
    status: Status = "running"
    flow_run_id: str | None = None
    root_flow_run_id: str | None = None  # the release the rollout is part of
    updated: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    def at(self, step: int) -> RolloutRecord:
        return self.model_copy(update={"step": step, "updated": datetime.now(UTC).isoformat()})

    def ended(self, status: Status) -> RolloutRecord:
        return self.model_copy(update={"status": status, "updated": datetime.now(UTC).isoformat()})


class StopRequest(BaseModel):
    """Someone wants the running rollout stopped, with traffic at `traffic`."""

    model_config = ConfigDict(frozen=True)
    by: Literal["abort", "rollback", "cancel"]
    actor: str
    reason: str
    traffic: dict[str, int]
    at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    def describe(self) -> str:
        what = {"abort": "aborted", "rollback": "pre-empted by a rollback", "cancel": "cancelled"}
        return f"{what[self.by]} by {self.actor} ({self.reason})"


def _name(kind: str, environment: str, endpoint: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", f"{kind}-{environment}-{endpoint}".lower())


def read_record(environment: str, endpoint: str) -> RolloutRecord | None:
    raw = Variable.get(_name("rollout", environment, endpoint), default=None)
    return RolloutRecord.model_validate(raw) if raw else None


def write_record(record: RolloutRecord) -> None:
    Variable.set(
        _name("rollout", record.environment, record.endpoint),
        record.model_dump(mode="json"),
        overwrite=True,
    )


def read_stop(environment: str, endpoint: str) -> StopRequest | None:
    raw = Variable.get(_name("rollout-stop", environment, endpoint), default=None)
    return StopRequest.model_validate(raw) if raw else None


def request_stop(environment: str, endpoint: str, stop: StopRequest) -> None:
    Variable.set(
        _name("rollout-stop", environment, endpoint), stop.model_dump(mode="json"), overwrite=True
    )


def clear_stop(environment: str, endpoint: str) -> None:
    """A new rollout begins with no stop pending (called by the lease holder only)."""
    Variable.set(_name("rollout-stop", environment, endpoint), {}, overwrite=True)


def same_traffic(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Equal splits, ignoring deployments at 0%."""
    return {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}
