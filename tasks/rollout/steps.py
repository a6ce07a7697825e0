"""The prod rollout: mirror, then live traffic in steps, each baked and judged.

Each step sets the weights, then holds them for its bake time while users' requests (routed by
the weights), mirrored copies and canaries (sent through the normal route, canaries.py) reach
the new deployment. It then waits until the endpoint's metrics cover the whole window
(Azure Monitor publishes late; "no data yet" is neither healthy nor failed), extends a window
with too few requests up to a limit, and judges the new deployment against fixed limits and
against the old deployment over the same window (judge.py). A mirror step that passes is then
judged on what the candidate answered: its answers to the mirrored copies against the live
deployment's answers to the same requests (shadow.py), so a candidate that serves fast and
error-free but says something else is stopped before any live traffic moves.

A failed step puts all traffic back on the old deployment at once. So does a stop: an operator's
`mlops rollout abort`, a rollback, or the run being cancelled in the Prefect UI, noticed within
a poll interval, during a bake or right after any traffic change. Progress is kept in a Prefect
Variable (record.py): a run killed mid-bake and run again resumes at that step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from prefect.transactions import Transaction, get_transaction

import backends
from backends.topology import load_topology
from data_checks.readmission_schema import LABEL
from records.serving import EndpointInfo, ServingMetrics
from records.workspace import ModelVersion
from settings import RolloutSettings, RolloutStep
from tasks.release.serving import set_traffic
from tasks.rollout.canaries import Canaries
from tasks.rollout.judge import StepReport, Verdict, judge
from tasks.rollout.record import (
    RolloutRecord,
    clear_stop,
    read_record,
    read_stop,
    same_traffic,
    write_record,
)
from tasks.rollout.shadow import judge_shadow, read_comparison, record_comparison
from tasks.rollout.stop import stop_rollout

COLLECTED_TIME_GRAIN = timedelta(seconds=1)
"""Collected lines carry their time in whole seconds: a step's rows are read from a second
before its weights were set."""


class RolloutFailed(RuntimeError):
    """A step failed its guardrails (or could not be judged); traffic is back on the old
    deployment."""


class RolloutStopped(RuntimeError):
    """An abort, a rollback or a cancellation stopped the rollout; traffic is where the stopper
    put it (the old deployment)."""


def model_id(model: ModelVersion) -> str:
    return f"{model.name}:{model.version}"


class Rollout:
    """One rollout's state while it runs: the endpoint, its record, its canaries, its table."""

    def __init__(
        self,
        environment: str,
        endpoint: str,
        record: RolloutRecord,
        settings: RolloutSettings,
    ) -> None:
        self.environment = environment
        self.endpoint = endpoint
        self.record = record
        self.settings = settings
        backend = load_topology().backend
        self.timing = {
            name: getattr(settings.timing, name).on(backend)
            for name in type(settings.timing).model_fields
        }
        self.backend = backend
        self.endpoints = backends.endpoints(environment)
        self.logger = get_run_logger()
        self.history: list[StepReport] = []
        self.progress: UUID | None = None
        self.canaries: Canaries | None = None

    # --- stops ----------------------------------------------------------------------------

    def check_stop(self) -> None:
        """Raise RolloutStopped if someone asked for a stop (or the run is being cancelled),
        after making sure traffic is where the stop says."""
        stop = read_stop(self.environment, self.endpoint)
        if stop is None and _run_is_cancelling():  # the same stop an operator's abort makes
            stop_rollout(
                self.environment, self.endpoint, "cancel", "prefect", "the flow run was cancelled"
            )
            stop = read_stop(self.environment, self.endpoint)
        if stop is None:
            return
        current = self.endpoints.get_endpoint(self.endpoint)
        if (
            current is None
            or not same_traffic(current.traffic, stop.traffic)
            or (current.mirror_traffic)
        ):
            self.endpoints.set_traffic(self.endpoint, stop.traffic, {})
        self.record = self.record.ended("stopped")
        write_record(self.record)
        self.publish(f"Rollout {stop.describe()}")
        raise RolloutStopped(
            f"the rollout of {self.record.model} to {self.record.new} was {stop.describe()}; "
            f"traffic is {stop.traffic}"
        )

    def wait(self, until: float, also: Callable[[], None] | None = None) -> None:
        """Sleep until `until` (monotonic), checking for stops every poll."""
        while True:
            self.check_stop()
            if also is not None:
                also()
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.timing["poll_seconds"]))

    # --- steps ------------------------------------------------------------------------------

    def apply(self, step: RolloutStep) -> EndpointInfo:
        old, new = self.record.old, self.record.new
        assert old is not None
        if step.mirror is not None:
            traffic, mirror = {old: 100, new: 0}, {new: step.mirror}
        else:
            traffic, mirror = {old: 100 - int(step.traffic or 0), new: int(step.traffic or 0)}, {}
        self.check_stop()
        info = set_traffic(self.environment, self.endpoint, traffic, mirror, "rollout step")
        self.check_stop()  # a stop that raced the change wins: its traffic is re-applied
        return info

    def canary_rate(self, step: RolloutStep, bake: float) -> float:
        """Enough canaries that the new deployment alone would see min_requests in the bake,
        capped; at least one a second, so every metrics grain of the endpoint has data."""
        needed = 1.25 * self.settings.min_requests / (step.share * bake)
        return max(1.0, min(self.timing["canaries_per_second"], needed))

    def bake(self, number: int, step: RolloutStep, weights: str) -> StepReport:
        bake = (
            step.bake_seconds.on(self.backend) if step.bake_seconds else self.timing["bake_seconds"]
        )
        longest = max(bake, self.timing["max_bake_seconds"])
        assert self.canaries is not None
        self.canaries.set_rate(self.canary_rate(step, bake))
        start = datetime.now(UTC)
        started = time.monotonic()
        until = started + bake
        notes: list[str] = []
        self.logger.info("Step %d (%s): baking %.0f s with %s", number, step.label, bake, weights)
        while True:
            self.wait(until)
            end = start + timedelta(seconds=until - started)
            metrics = self.covered_metrics(start, end)
            if metrics is None:
                verdict = Verdict(
                    False,
                    (
                        f"the metrics did not cover the window within "
                        f"{self.timing['metrics_deadline_seconds']:.0f} s: not judged",
                    ),
                )
                empty = self.endpoints.serving_metrics(self.endpoint, start, end)
                return self.report(number, step, weights, empty, verdict, notes)
            new = metrics.of(self.record.new)
            if new.requests >= self.settings.min_requests:
                break
            if until - started < longest:
                extra = min(bake, longest - (until - started))
                notes.append(f"extended {extra:.0f} s ({new.requests} requests)")
                self.logger.info(
                    "Step %d: %d requests on %s, fewer than %d; baking %.0f s more",
                    number,
                    new.requests,
                    self.record.new,
                    self.settings.min_requests,
                    extra,
                )
                until += extra
                continue
            if self.settings.too_few_requests == "fail":
                verdict = Verdict(
                    False,
                    (
                        f"only {new.requests} requests on {self.record.new} in "
                        f"{until - started:.0f} s (at least {self.settings.min_requests})",
                    ),
                )
                return self.report(number, step, weights, metrics, verdict, notes)
            notes.append(f"judged on {new.requests} requests (fewer than wanted)")
            break
        old = metrics.of(self.record.old) if self.record.old else None
        verdict = judge(step, new, old, self.settings.guardrails)
        return self.report(number, step, weights, metrics, verdict, notes)

    def compare_shadow(self, report: StepReport, since: datetime) -> StepReport:
        """The mirror step's shadow comparison (shadow.py), once its guardrails passed: the
        candidate's answers to the mirrored copies since `since` against the live deployment's
        answers to the same requests. Collected data lands a little after the answers, so it
        waits (canaries still flowing) up to the metrics deadline for enough pairs. Recorded as
        an artifact and in the audit trail; beyond the bounds the step fails, so the rollout
        stops before any live traffic moves."""
        old = self.record.old
        assert old is not None
        limits = self.settings.shadow
        deadline = time.monotonic() + self.timing["metrics_deadline_seconds"]
        while True:
            comparison = read_comparison(
                self.environment, self.endpoint, old, self.record.new, since, limits.divergent_rows
            )
            if comparison.pairs >= limits.min_pairs or time.monotonic() >= deadline:
                break
            self.wait(time.monotonic() + self.timing["poll_seconds"])
        verdict = judge_shadow(comparison, limits, self.settings.too_few_requests)
        record_comparison(
            self.environment,
            self.endpoint,
            comparison,
            verdict,
            limits,
            old,
            self.record.new,
            self.record.model,
        )
        self.logger.info("Step %d: %s (%s)", report.number, comparison.summary(), verdict)
        notes = (*report.notes, comparison.summary())
        if verdict.healthy:
            return replace(report, notes=notes)
        return replace(report, verdict=verdict, notes=notes)

    def covered_metrics(self, start: datetime, end: datetime) -> ServingMetrics | None:
        """The window's metrics once they cover it all; None past the deadline. Canaries keep
        flowing meanwhile (on Azure a later grain with data is how a grain is known complete)."""
        deadline = time.monotonic() + self.timing["metrics_deadline_seconds"]
        waited = False
        while True:
            metrics = self.endpoints.serving_metrics(self.endpoint, start, end)
            if metrics.coverage >= 1.0:
                return metrics
            if time.monotonic() >= deadline:
                return None
            if not waited:
                self.logger.info(
                    "Metrics cover %.0f%% of the window so far; waiting for the rest",
                    100 * metrics.coverage,
                )
                waited = True
            self.wait(time.monotonic() + self.timing["poll_seconds"])

    def report(
        self,
        number: int,
        step: RolloutStep,
        weights: str,
        metrics: ServingMetrics,
        verdict: Verdict,
        notes: list[str],
    ) -> StepReport:
        assert self.canaries is not None
        canaries = self.canaries.answered_by(metrics.start.timestamp(), metrics.end.timestamp())
        return StepReport(
            number=number,
            step=step,
            weights=weights,
            start=metrics.start,
            end=metrics.end,
            coverage=metrics.coverage,
            new=metrics.of(self.record.new),
            old=metrics.of(self.record.old) if self.record.old else None,
            canaries_on_new=canaries.get(self.record.new, 0),
            verdict=verdict,
            notes=tuple(notes),
        )

    # --- progress -------------------------------------------------------------------------

    def publish(self, description: str) -> None:
        steps = len(self.settings.steps)
        done = sum(1 for r in self.history if r.verdict.healthy)
        percent = 100.0 * done / steps
        if self.progress is None:
            created = create_progress_artifact(
                percent, key="rollout-progress", description=description
            )
            if not isinstance(created, UUID):  # a sync caller gets the sync form's id
                raise TypeError(f"create_progress_artifact returned {created!r}, not an id")
            self.progress = created
        else:
            update_progress_artifact(self.progress, percent, description=description)
        if self.history:
            create_table_artifact(
                key="rollout", table=[r.row() for r in self.history], description=description
            )

    def restore(self, reason: str) -> None:
        """All traffic back on the old deployment, at once."""
        set_traffic(
            self.environment, self.endpoint, self.record.previous_traffic, {}, reason, "rollback"
        )
        self.record = self.record.ended("rolled-back")
        write_record(self.record)


def _weights(traffic: Mapping[str, int], mirror: Mapping[str, int]) -> str:
    text = " / ".join(f"{k} {v}%" for k, v in traffic.items())
    return text + "".join(f", mirror {k} {v}%" for k, v in mirror.items() if v)


def _run_is_cancelling() -> bool:
    """This run, or the release it is part of, is being cancelled (the Prefect UI's Cancel)."""
    runs = {flow_run.id, flow_run.root_flow_run_id} - {None}
    with get_client(sync_client=True) as client:
        for run in runs:
            state = client.read_flow_run(UUID(str(run))).state
            if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
                return True
    return False


@task
def shift_traffic(
    environment: str,
    endpoint: str,
    new: str,
    model: ModelVersion,
    canary_rows_dir: str,
    rollout: RolloutSettings,
) -> EndpointInfo:
    """Roll `model` (deployed as `new`) out on `endpoint`, step by baked step; resume a rollout
    of the same model that a crash interrupted. Call it holding the endpoint's lease.

    The traffic before the rollout is also kept on the Prefect transaction, so a failure after
    this task (e.g. crowning the champion) puts it back through the on_rollback hook.
    """
    logger = get_run_logger()
    endpoints = backends.endpoints(environment)
    before = endpoints.get_endpoint(endpoint)
    if before is None:
        raise RolloutFailed(
            f"endpoint {endpoint} does not exist in {environment}: nothing to shift"
        )
    record = read_record(environment, endpoint)
    first = 0
    if (
        record is not None
        and record.status == "running"
        and (record.model, record.new) == (model_id(model), new)
    ):
        first = record.step
        logger.warning(
            "Resuming the rollout of %s on %s at step %d (%s); traffic before it began: %s",
            record.model,
            endpoint,
            first + 1,
            rollout.steps[first].label,
            record.previous_traffic,
        )
    else:
        if before.serving() == new:
            logger.info("%s already serves all traffic on %s", new, endpoint)
            return before
        clear_stop(environment, endpoint)
        record = RolloutRecord(
            environment=environment,
            endpoint=endpoint,
            model=model_id(model),
            new=new,
            old=before.serving(),
            previous_traffic={k: v for k, v in before.traffic.items() if v},
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            root_flow_run_id=str(flow_run.root_flow_run_id) if flow_run.root_flow_run_id else None,
        )
        write_record(record)
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("environment", environment)
        transaction.set("endpoint", endpoint)
        transaction.set("previous_traffic", record.previous_traffic)
    if record.old is None:  # the first deployment ever: nothing to protect
        info = set_traffic(environment, endpoint, {new: 100}, {}, "first deployment")
        write_record(record.ended("done"))
        return info

    run = Rollout(environment, endpoint, record, rollout)
    rows = pd.read_parquet(Path(canary_rows_dir) / "data.parquet").drop(columns=[LABEL])
    run.publish(f"Rolling {record.model} out to {new} on {endpoint}")
    info = before
    try:
        with Canaries(before.scoring_uri, endpoints.get_key(endpoint), rows) as canaries:
            run.canaries = canaries
            for index in range(first, len(rollout.steps)):
                step = rollout.steps[index]
                run.record = run.record.at(index)
                write_record(run.record)
                applied = datetime.now(UTC) - COLLECTED_TIME_GRAIN
                info = run.apply(step)
                report = run.bake(index + 1, step, _weights(info.traffic, info.mirror_traffic))
                if step.mirror is not None and report.verdict.healthy:
                    report = run.compare_shadow(report, applied)
                run.history.append(report)
                logger.info("Rollout step %d (%s): %s", index + 1, step.label, report.row())
                if not report.verdict.healthy:
                    run.restore(f"step {index + 1} ({step.label}) failed: {report.verdict}")
                    run.publish(f"Rolled back at step {index + 1}")
                    raise RolloutFailed(
                        f"{new} failed step {index + 1} ({step.label}): {report.verdict}; "
                        f"traffic is back on {record.old} ({record.previous_traffic})"
                    )
                run.publish(f"Step {index + 1} of {len(rollout.steps)} healthy")
    except (RolloutFailed, RolloutStopped):
        raise
    except Exception:
        if run.record.status == "running":  # an error, not a crash: leave prod as it was
            run.restore("the rollout hit an error")
        raise
    run.record = run.record.ended("done")
    write_record(run.record)
    run.publish(f"{new} took over {endpoint}")
    return info


@shift_traffic.on_rollback
def _return_traffic(transaction: Transaction) -> None:
    """A later step of the release failed: put the traffic back where it was."""
    previous = transaction.get("previous_traffic")
    if previous:
        set_traffic(
            transaction.get("environment"),
            transaction.get("endpoint"),
            previous,
            {},
            "a later step of the release failed",
            "rollback",
        )
