"""Per-deployment requests, errors and latency over any window: what the rollout's health
checks read (the local stand-in for Azure Monitor's endpoint metrics).

Every answer the endpoint passes on is recorded with the wall-clock time it completed: live
requests on the deployment that answered them, mirrored copies on the mirror deployment. An
error is a 5xx from the deployment, a timeout, or a deployment that could not be reached; the
p95 latency is over the answers that were not errors.

Records are kept for `KEEP_SECONDS` and at most `KEEP_RECORDS` of them (the oldest go first),
in memory: a window reaching further back, or across a restart of the endpoint server, is
answered with what is left. A metrics delay of D seconds rehearses Azure Monitor's ingestion
latency: what was answered at t becomes visible only at t + D, and the figures say they are
complete up to now - D.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

KEEP_SECONDS = 2 * 3600.0
KEEP_RECORDS = 500_000
_FIRST_CAPACITY = 4_096


@dataclass(frozen=True)
class Figures:
    """One deployment's figures over a window."""

    requests: int
    errors: int
    p95_ms: float | None  # None: no answer that was not an error

    def as_json(self) -> dict[str, float | int | None]:
        return {"requests": self.requests, "errors": self.errors, "p95_ms": self.p95_ms}


@dataclass(frozen=True)
class Window:
    """The figures of [start, end) per deployment that served anything in it (published
    records only), and up to when they are complete (epoch seconds)."""

    start: float
    end: float
    covered_until: float
    deployments: dict[str, Figures]


class Metrics:
    """Time-stamped records of every answer, in a ring buffer of numpy columns that grows up to
    `keep_records` (so an idle endpoint holds little, and a query is a few vectorised passes).

    Touched only from the event loop (scoring and the async metrics routes), so no lock.
    """

    def __init__(
        self,
        keep_seconds: float = KEEP_SECONDS,
        keep_records: int = KEEP_RECORDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.keep_records = keep_records
        self.clock = clock
        self.delay = 0.0
        """Seconds before a record is visible: Azure Monitor's ingestion latency, rehearsed."""
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        capacity = min(_FIRST_CAPACITY, keep_records)
        self._at = np.zeros(capacity, np.float64)
        self._latency = np.zeros(capacity, np.float64)
        self._error = np.zeros(capacity, np.bool_)
        self._who = np.zeros(capacity, np.int32)
        self._next = 0  # where the next record goes
        self._count = 0  # records held

    def __len__(self) -> int:
        return self._count

    def record(self, deployment: str, latency_ms: float, error: bool) -> None:
        """An answer completed now."""
        who = self._ids.get(deployment)
        if who is None:
            who = self._ids[deployment] = len(self._names)
            self._names.append(deployment)
        if self._count == len(self._at) < self.keep_records:
            self._grow()
        i = self._next
        self._at[i] = self.clock()
        self._latency[i] = latency_ms
        self._error[i] = error
        self._who[i] = who
        self._next = (i + 1) % len(self._at)
        self._count = min(self._count + 1, len(self._at))

    def _grow(self) -> None:
        """Full and below the bound: a larger buffer, the records oldest first from 0."""
        capacity = min(2 * len(self._at), self.keep_records)
        order = np.r_[self._next : len(self._at), 0 : self._next]
        for column in ("_at", "_latency", "_error", "_who"):
            old = getattr(self, column)
            new = np.zeros(capacity, old.dtype)
            new[: self._count] = old[order]
            setattr(self, column, new)
        self._next = self._count

    def window(
        self, start: float, end: float, deployments: Collection[str] | None = None
    ) -> Window:
        """Requests, errors and p95 latency per deployment of the answers completed in
        [start, end) (epoch seconds) that are already visible, for `deployments` (None: all).
        A deployment that served nothing visible in the window is left out."""
        now = self.clock()
        covered_until = now - self.delay
        held = slice(0, self._count)
        at = self._at[held]
        visible = (
            (at >= start) & (at < end) & (at <= covered_until) & (at >= now - self.keep_seconds)
        )
        who = self._who[held][visible]
        errors = self._error[held][visible]
        latency = self._latency[held][visible]
        report: dict[str, Figures] = {}
        for index in np.unique(who):
            name = self._names[index]
            if deployments is not None and name not in deployments:
                continue
            mine = who == index
            failed = errors[mine]
            answered = latency[mine][~failed]
            report[name] = Figures(
                requests=int(mine.sum()),
                errors=int(failed.sum()),
                p95_ms=float(np.percentile(answered, 95)) if len(answered) else None,
            )
        return Window(start, end, covered_until, dict(sorted(report.items())))
