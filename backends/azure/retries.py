"""How long to wait and how often to retry: throttling, transient faults, long-running operations.

Retries of single requests are azure-core's `RetryPolicy` (inside every client the SDK builds):
it retries 408/429/500/502/503/504 and honours `Retry-After`. We only configure it. Long-running
operations (endpoints, deployments, registry imports) and pipeline jobs are waited on with a
deadline here, so a stuck operation ends as an error that says what to look at, never as a
hang. A write that Azure refuses (409) because another operation on the same resource still
runs is retried here once that operation has ended (`retry_while_busy`), within the same
deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core.exceptions import HttpResponseError
from azure.core.polling import LROPoller

from backends.azure.errors import (
    ResourceBusy,
    operation_in_progress,
    service_code,
    service_message,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetrySettings:
    """Passed to every client as azure-core `RetryPolicy` settings (and transport timeouts)."""

    total: int = 10
    status: int = 8  # 429/5xx answers retried per request (azure-core's default is 3)
    backoff_factor: float = 0.8
    backoff_max: float = 60.0
    connection_timeout: float = 30.0
    read_timeout: float = 300.0

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "retry_total": self.total,
            "retry_status": self.status,
            "retry_backoff_factor": self.backoff_factor,
            "retry_backoff_max": self.backoff_max,
            "connection_timeout": self.connection_timeout,
            "read_timeout": self.read_timeout,
        }


@dataclass(frozen=True)
class Deadlines:
    """Upper bounds for operations that take minutes on Azure (seconds on the fake)."""

    lro_seconds: float = 1800.0  # a managed deployment typically provisions in 5-15 minutes
    job_seconds: float = 4 * 3600.0
    job_poll_seconds: float = 15.0
    busy_poll_seconds: float = 10.0  # how often to read a resource another operation holds


class OperationTimedOut(TimeoutError):
    """An Azure operation did not finish before its deadline; it may still be running."""


def wait_for(poller: LROPoller[T], seconds: float, what: str, where: str) -> T:
    """The poller's result, or OperationTimedOut naming the operation and where to look."""
    poller.wait(timeout=seconds)  # result(timeout) would read a half-finished resource
    if not poller.done():
        raise OperationTimedOut(
            f"{what} did not finish within {seconds:g} s (status: {poller.status()}); it may "
            f"still be running: check {where} in Azure ML studio, then re-run (the step is "
            "idempotent) or raise the deadline in backends.azure.retries.Deadlines"
        )
    return poller.result()


def poll_until(
    read_status: Callable[[], str],
    terminal: set[str],
    seconds: float,
    every: float,
    what: str,
    where: str,
) -> str:
    """Poll `read_status` until it returns a terminal status or the deadline passes."""
    deadline = time.monotonic() + seconds
    while True:
        status = read_status()
        if status in terminal:
            return status
        if time.monotonic() >= deadline:
            raise OperationTimedOut(
                f"{what} is still {status} after {seconds:g} s; it keeps running on Azure: "
                f"follow it at {where}, cancel it there if it is stuck, then re-run"
            )
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))


SETTLED_STATES = frozenset({"Succeeded", "Failed", "Canceled", "NotFound"})
"""provisioningStates in which no operation runs on a resource (NotFound: it is gone)."""


def retry_while_busy(
    write: Callable[[], T],
    holder: Callable[[], tuple[str, str]],
    seconds: float,
    every: float,
    what: str,
) -> T:
    """`write()`; while Azure refuses it because another operation on the resource is still
    running (errors.operation_in_progress: a flow that crashed mid-update, another run), wait
    for that operation, reading `holder()` (the resource the write touches that is busy, and its
    provisioningState) every `every` s until it settles, then write again. Any other error is
    raised as it is. After `seconds` of refusals: ResourceBusy, naming what runs and what to
    do."""
    deadline = time.monotonic() + seconds
    refusals = 0
    while True:
        try:
            return write()
        except HttpResponseError as error:
            if not operation_in_progress(error):
                raise
            refusals += 1
            refused = error
        waited = False
        while True:
            resource, state = holder()
            if waited and state in SETTLED_STATES:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                code = service_code(refused)
                raise ResourceBusy(
                    f"{what}: Azure refused it {refusals} time(s) over {seconds:g} s because "
                    f"another operation on {resource} is still running (it is {state}; Azure "
                    f"answered 409 {code}: {service_message(refused).rstrip('.')}). Another "
                    "run, or one that stopped mid-update, started it: follow it in Azure ML "
                    "studio, wait for it to end or cancel it there, then re-run (the step is "
                    "idempotent), or raise lro_seconds in backends.azure.retries.Deadlines",
                    409,
                    code,
                ) from refused
            time.sleep(min(every, remaining))
            waited = True
