"""Events (drift alarms, batch announcements) as the Prefect server saw them, for tests that
share one server: only events that occurred since a test started count, so another test's
event is never taken for ours."""

from __future__ import annotations

import os
import time
from datetime import datetime

import httpx

from settings import load_monitoring_settings

EVENT = load_monitoring_settings().event


def drift_events(since: datetime, model: str | None = None) -> list[dict]:
    """`mlops.model.drift-detected` events since `since` (of `model`, when given)."""
    return prefect_events(EVENT, since, f"mlops.model.{model}" if model is not None else None)


def prefect_events(name: str, since: datetime, resource_id: str | None = None) -> list[dict]:
    """Events called `name` since `since` (of the resource `resource_id`, when given)."""
    event_filter: dict = {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}}
    if resource_id is not None:
        event_filter["resource"] = {"id": [resource_id]}
    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/events/filter",
        json={"filter": event_filter, "limit": 50},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["events"]


def wait_for_events(
    since: datetime, count: int, model: str | None = None, timeout: float = 30
) -> list[dict]:
    """Drift alarms: wait until `count` are there (or the timeout passes)."""
    resource = f"mlops.model.{model}" if model is not None else None
    return wait_for_prefect_events(EVENT, since, count, resource, timeout)


def wait_for_prefect_events(
    name: str, since: datetime, count: int, resource_id: str | None = None, timeout: float = 30
) -> list[dict]:
    """Events arrive asynchronously: wait until `count` are there (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = prefect_events(name, since, resource_id)
        if len(events) >= count:
            return events
        time.sleep(0.5)
    return prefect_events(name, since, resource_id)
