"""One change to an endpoint at a time: a Prefect global concurrency lease per endpoint.

Two releases (the Monday retrain and a drift retrain, say) must not both deploy the idle colour
of prod, the second overwriting the first's model while the first shifts traffic to it. Every
change to an endpoint (deploy, traffic, rollback) runs inside `endpoint_lease`: a global
concurrency limit of 1 named after the environment and endpoint, held with a lease the holder
renews in the background. If the holder dies, the lease lapses (Prefect's repossessor frees it
within about lease_seconds + 15 s) and the next run gets it.

A second run waits, saying in its log (and, when it gives up, in its final state) who holds the
endpoint and what they are doing; past the configured wait it fails without touching anything.
A rollback does not wait for a rollout: it stops it (tasks/rollout/stop.py).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.variables import Variable

from backends.topology import load_topology
from settings import PerBackend

LEASE_SECONDS = 60  # the shortest lease the Prefect server grants
WAIT_CHUNK_SECONDS = 15.0


class EndpointBusy(RuntimeError):
    """Another run kept the endpoint past our wait; nothing was changed."""


def lease_name(environment: str, endpoint: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", f"endpoint-{environment}-{endpoint}".lower())


def holder_of(environment: str, endpoint: str) -> str:
    """Who holds the endpoint, as the holder wrote it ("nobody" if no one says)."""
    raw = Variable.get(lease_name(environment, endpoint) + "-holder", default=None)
    if not raw:
        return "nobody (a run that died holding it: its lease lapses within about 75 s)"
    return (
        f"flow run {raw['flow_run_name']} ({raw['flow_run_id']}) since {raw['since']}, "
        f"{raw['doing']}"
    )


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


def _free(name: str) -> bool:
    """Whether the endpoint's slot is free now (asked first, so a wait is a quiet sleep, not
    a stream of timed-out acquisitions that Prefect logs as errors)."""
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots < limit.limit


@contextlib.contextmanager
def endpoint_lease(environment: str, endpoint: str, wait: PerBackend, doing: str) -> Iterator[None]:
    """Hold the endpoint for the block; wait up to `wait` (this backend's value) for it, logging
    who holds it, then raise EndpointBusy (the block never ran, so nothing was touched)."""
    wait_seconds = wait.on(load_topology().backend)
    logger = get_run_logger()
    name = lease_name(environment, endpoint)
    _ensure_limit(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None
    started = time.monotonic()
    held = contextlib.ExitStack()
    while True:
        waited = time.monotonic() - started
        if _free(name):
            try:
                held.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        timeout_seconds=WAIT_CHUNK_SECONDS,
                        lease_duration=LEASE_SECONDS,
                        strict=True,
                        holder=holder,
                    )
                )
                break
            except TimeoutError:  # another run took it first
                waited = time.monotonic() - started
        who = holder_of(environment, endpoint)
        if waited >= wait_seconds:
            raise EndpointBusy(
                f"{environment}/{endpoint} is being changed by {who}; waited {waited:.0f} s "
                f"(the limit is {wait_seconds:.0f} s) and changed nothing"
            )
        logger.warning(
            "Waiting for %s/%s (%.0f s so far): it is being changed by %s",
            environment,
            endpoint,
            waited,
            who,
        )
        time.sleep(min(WAIT_CHUNK_SECONDS, max(0.5, wait_seconds - waited)))
    with held:
        if time.monotonic() - started > 1:
            logger.info("Got %s/%s after %.0f s", environment, endpoint, time.monotonic() - started)
        Variable.set(
            name + "-holder",
            {
                "flow_run_id": str(flow_run.id),
                "flow_run_name": flow_run.name or "?",
                "doing": doing,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            overwrite=True,
        )
        try:
            yield
        finally:
            Variable.set(name + "-holder", {}, overwrite=True)
