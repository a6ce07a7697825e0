"""Per-deployment request counts, errors and latency over a recent window: what the rollout's
health checks read (the local stand-in for Azure Monitor's endpoint metrics). Every answer the
endpoint passes on is counted; an error is a 5xx from the deployment, a timeout, or a
deployment that could not be reached.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import numpy as np

METRICS_WINDOW_SECONDS = 60.0
METRICS_WINDOW_REQUESTS = 2_000


class Metrics:
    """Per-deployment requests, errors and latency (of the answers that are not errors) over
    a recent window.

    Touched only from the event loop (scoring and the async metrics routes), so no lock.
    """

    def __init__(self) -> None:
        self._recent: dict[str, deque[tuple[float, float, bool]]] = {}
        self._totals: dict[str, list[int]] = {}

    def record(self, deployment: str, latency_ms: float, error: bool) -> None:
        recent = self._recent.get(deployment)
        if recent is None:
            recent = self._recent[deployment] = deque(maxlen=METRICS_WINDOW_REQUESTS)
            self._totals[deployment] = [0, 0]
        recent.append((time.monotonic(), latency_ms, error))
        totals = self._totals[deployment]
        totals[0] += 1
        totals[1] += error

    def reset(self) -> None:
        self._recent.clear()
        self._totals.clear()

    def snapshot(self, deployments: Sequence[str]) -> dict[str, dict[str, float | int]]:
        since = time.monotonic() - METRICS_WINDOW_SECONDS
        report = {}
        for name in deployments:
            window = [r for r in self._recent.get(name, ()) if r[0] >= since]
            latencies = [r[1] for r in window if not r[2]]
            report[name] = {
                "requests": len(window),
                "errors": sum(r[2] for r in window),
                "p95_ms": float(np.percentile(latencies, 95)) if latencies else 0.0,
                "total_requests": self._totals.get(name, [0, 0])[0],
                "total_errors": self._totals.get(name, [0, 0])[1],
            }
        return report
