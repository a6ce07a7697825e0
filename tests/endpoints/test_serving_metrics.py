"""The endpoint server's metrics records on their own, on a clock the test turns: windows,
the published delay, what is kept. (The same, through a real endpoint: test_scoring.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from backends.local.serving_metrics import Figures, Metrics


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answered(
    metrics: Metrics, clock: Clock, at: float, deployment: str, ms: float, error: bool = False
) -> None:
    clock.now = at
    metrics.record(deployment, ms, error)


def test_a_window_counts_the_answers_completed_in_it_per_deployment() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    answered(metrics, clock, 99.0, "blue", 1.0)  # before the window
    for i in range(20):
        answered(metrics, clock, 100.0 + i, "blue", float(i + 1))
    answered(metrics, clock, 105.0, "green", 50.0, error=True)
    answered(metrics, clock, 120.0, "blue", 1.0)  # at its end: not in [100, 120)
    clock.now = 200.0

    window = metrics.window(100.0, 120.0)

    assert window.covered_until == 200.0
    assert set(window.deployments) == {"blue", "green"}
    blue = window.deployments["blue"]
    assert (blue.requests, blue.errors) == (20, 0)
    assert blue.p95_ms == pytest.approx(np.percentile(np.arange(1, 21), 95))
    assert window.deployments["green"] == Figures(1, 1, None)  # no answer that was not an error
    assert metrics.window(100.0, 120.0, deployments=["green"]).deployments.keys() == {"green"}
    assert metrics.window(300.0, 400.0).deployments == {}


def test_with_a_delay_an_answer_shows_only_that_many_seconds_later() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.delay = 60.0
    answered(metrics, clock, 100.0, "blue", 5.0)
    answered(metrics, clock, 130.0, "blue", 5.0)

    clock.now = 159.0
    early = metrics.window(90.0, 140.0)
    clock.now = 170.0
    partly = metrics.window(90.0, 140.0)
    clock.now = 190.0
    later = metrics.window(90.0, 140.0)

    assert early.covered_until == 99.0 and early.deployments == {}
    assert partly.covered_until == 110.0 and partly.deployments["blue"].requests == 1
    assert later.covered_until == 130.0 and later.deployments["blue"].requests == 2


def test_answers_are_kept_for_a_time_and_up_to_a_count_growing_the_buffer_as_needed() -> None:
    clock = Clock()
    metrics = Metrics(keep_seconds=100.0, keep_records=10_000, clock=clock)
    for i in range(12_000):  # past the first capacity and past the bound
        answered(metrics, clock, 1_000.0 + i / 1_000, "blue", float(i))

    kept = metrics.window(0.0, 2_000.0).deployments["blue"]
    assert len(metrics) == 10_000 and kept.requests == 10_000  # the oldest 2,000 went
    assert metrics.window(0.0, 1_002.0).deployments == {}
    assert metrics.window(1_002.0, 1_003.0).deployments["blue"].requests == 1_000

    clock.now = 1_102.5  # kept for 100 s: the first half second of what is left is too old
    assert metrics.window(0.0, 2_000.0).deployments["blue"].requests == 10_000 - 500
