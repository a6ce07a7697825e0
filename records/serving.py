"""What serving reports: endpoints, their deployments, each deployment's health over a window,
and the columns of the rows a deployment's data collector captured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment (a colour, e.g. "blue") of an online endpoint and the model it serves."""

    name: str
    model_name: str
    model_version: str
    state: str  # "Succeeded" once loaded and smoke-tested


@dataclass(frozen=True)
class EndpointInfo:
    """An online endpoint: where to call it, its deployments, and how traffic is split."""

    name: str
    scoring_uri: str
    deployments: tuple[DeploymentInfo, ...]
    traffic: Mapping[str, int]
    mirror_traffic: Mapping[str, int]

    def serving(self) -> str | None:
        """The deployment with the most live traffic (ties: the first), or None."""
        live = [(pct, name) for name, pct in self.traffic.items() if pct > 0]
        return max(live)[1] if live else None


@dataclass(frozen=True)
class DeploymentHealth:
    """What one deployment served over a window: requests (live and mirrored copies alike),
    errors (5xx from the deployment or its container), and the p95 latency of the answers that
    were not errors (None: there were none)."""

    deployment: str
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class ServingMetrics:
    """An endpoint's metrics over a window, per deployment, and how much of the window they
    already cover.

    Azure Monitor aggregates per time grain and publishes each grain minutes after it ends, so
    an answer read right after the traffic may cover only part of the window: `covered_until`
    says up to when the figures are complete (None: nothing yet). `start`/`end` are the window
    the figures are for, widened to whole grains where the backend aggregates by grain. A
    deployment that served nothing in the window is absent from `deployments`.
    """

    endpoint: str
    start: datetime
    end: datetime
    covered_until: datetime | None
    deployments: Mapping[str, DeploymentHealth]

    @property
    def coverage(self) -> float:
        """The share of the window the figures cover, 0..1."""
        if self.covered_until is None or self.covered_until <= self.start:
            return 0.0
        span = (self.end - self.start).total_seconds()
        if span <= 0 or self.covered_until >= self.end:
            return 1.0
        return (self.covered_until - self.start).total_seconds() / span

    def of(self, deployment: str) -> DeploymentHealth:
        return self.deployments.get(deployment) or DeploymentHealth(deployment, 0, 0, None)


class DeploymentFailed(RuntimeError):
    """A deployment did not load or did not pass its smoke test; it never receives traffic."""


class Capture:
    """The columns the collected production rows carry besides the request's input fields:
    the scoring script's answer for the row (`probability`, `label`), which deployment and
    model version answered, whether it was a mirrored copy, when, and the request's
    x-request-id (canaries' start with `canary-`). Both backends read collected data back
    into these columns (backends/collected_data.py); the drift monitor reads them."""

    PROBABILITY = "probability"
    LABEL = "label"
    DEPLOYMENT = "deployment"
    MODEL_VERSION = "model_version"
    MIRRORED = "mirrored"
    TIMESTAMP = "timestamp"
    REQUEST_ID = "request_id"


CAPTURE_COLUMNS = (
    Capture.PROBABILITY,
    Capture.LABEL,
    Capture.DEPLOYMENT,
    Capture.MODEL_VERSION,
    Capture.MIRRORED,
    Capture.TIMESTAMP,
    Capture.REQUEST_ID,
)
"""What `read_capture` adds to each row's input fields, in this order."""
