"""The rollout's verdict rules and the metrics' coverage, without an endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from records.serving import DeploymentHealth, ServingMetrics
from settings import Guardrails, RolloutStep
from tasks.rollout.judge import judge

LIMITS = Guardrails(
    max_error_rate=0.01,
    max_p95_ms=250,
    error_rate_margin=0.01,
    p95_increase=0.5,
    p95_slack_ms=25,
    min_baseline_requests=20,
)
LIVE = RolloutStep(traffic=10)


def health(requests: int, errors: int = 0, p95: float | None = 20.0) -> DeploymentHealth:
    return DeploymentHealth("d", requests, errors, p95)


def test_a_deployment_as_good_as_the_old_one_is_healthy() -> None:
    assert judge(LIVE, health(100), health(900), LIMITS).healthy


def test_fixed_limits_apply_whatever_the_old_one_does() -> None:
    verdict = judge(LIVE, health(100, errors=5, p95=300), health(900, errors=45, p95=290), LIMITS)
    assert not verdict.healthy
    assert any("error rate 5.00% > 1.00%" in r for r in verdict.reasons)
    assert any("p95 300.0 ms > 250 ms" in r for r in verdict.reasons)


def test_slower_than_the_old_one_beyond_the_margin_fails_within_it_passes() -> None:
    old = health(900, p95=40.0)  # allowed: 40 * 1.5 + 25 = 85 ms
    assert judge(LIVE, health(100, p95=84.0), old, LIMITS).healthy
    verdict = judge(LIVE, health(100, p95=86.0), old, LIMITS)
    assert not verdict.healthy and "> old 40.0 ms x 1.50 + 25 ms" in verdict.reasons[0]


def test_more_errors_than_the_old_one_beyond_the_margin_fails() -> None:
    limits = LIMITS.model_copy(update={"max_error_rate": 0.5})
    assert judge(LIVE, health(100, errors=1), health(900, errors=9), limits).healthy
    verdict = judge(LIVE, health(100, errors=3), health(900, errors=9), limits)
    assert not verdict.healthy and "> old 1.00% + 1.00%" in verdict.reasons[0]


def test_no_relative_verdict_without_a_baseline() -> None:
    assert judge(LIVE, health(100, p95=200.0), health(5, p95=10.0), LIMITS).healthy
    assert judge(LIVE, health(100, p95=200.0), None, LIMITS).healthy


def test_a_step_may_tighten_the_fixed_limits() -> None:
    strict = RolloutStep(traffic=50, max_p95_ms=10)
    assert not judge(strict, health(100, p95=20.0), health(900), LIMITS).healthy


def test_a_step_is_either_mirror_or_traffic() -> None:
    with pytest.raises(ValueError, match="either"):
        RolloutStep(mirror=20, traffic=10)
    with pytest.raises(ValueError):
        RolloutStep(mirror=60)  # Azure caps mirror traffic at 50%


def test_coverage_is_the_share_of_the_window_the_metrics_reach() -> None:
    start = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    end = start + timedelta(minutes=10)

    def covered(until: datetime | None) -> float:
        return ServingMetrics("e", start, end, until, {}).coverage

    assert covered(None) == 0.0
    assert covered(start - timedelta(minutes=1)) == 0.0
    assert covered(start + timedelta(minutes=4)) == pytest.approx(0.4)
    assert covered(end + timedelta(minutes=1)) == 1.0
    assert ServingMetrics("e", start, end, end, {}).of("blue").requests == 0
