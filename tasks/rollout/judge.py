"""The verdict on one baked rollout step: fixed limits, and limits relative to the old deployment
over the same window (which tell a bad model from a bad minute). Pure: no I/O, so each rule is
testable on its own and reads as the runbook states it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from records.serving import DeploymentHealth
from settings import Guardrails, RolloutStep


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reasons: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "healthy" if self.healthy else "; ".join(self.reasons)


def judge(
    step: RolloutStep,
    new: DeploymentHealth,
    old: DeploymentHealth | None,
    limits: Guardrails,
) -> Verdict:
    """Every limit the new deployment broke in the window (none: healthy)."""
    reasons = []
    max_error = step.max_error_rate if step.max_error_rate is not None else limits.max_error_rate
    max_p95 = step.max_p95_ms if step.max_p95_ms is not None else limits.max_p95_ms
    if new.error_rate > max_error:
        reasons.append(f"error rate {new.error_rate:.2%} > {max_error:.2%}")
    if new.p95_ms is not None and new.p95_ms > max_p95:
        reasons.append(f"p95 {new.p95_ms:.1f} ms > {max_p95:.0f} ms")
    if old is not None and old.requests >= limits.min_baseline_requests:
        allowed_error = old.error_rate + limits.error_rate_margin
        if new.error_rate > allowed_error:
            reasons.append(
                f"error rate {new.error_rate:.2%} > old {old.error_rate:.2%} + "
                f"{limits.error_rate_margin:.2%}"
            )
        if new.p95_ms is not None and old.p95_ms is not None:
            allowed_p95 = old.p95_ms * (1 + limits.p95_increase) + limits.p95_slack_ms
            if new.p95_ms > allowed_p95:
                reasons.append(
                    f"p95 {new.p95_ms:.1f} ms > old {old.p95_ms:.1f} ms x "
                    f"{1 + limits.p95_increase:.2f} + {limits.p95_slack_ms:.0f} ms"
                )
    return Verdict(not reasons, tuple(reasons))


@dataclass(frozen=True)
class StepReport:
    """One row of the rollout's table: what the step saw and what it decided."""

    number: int
    step: RolloutStep
    weights: str
    start: datetime
    end: datetime
    coverage: float
    new: DeploymentHealth
    old: DeploymentHealth | None
    canaries_on_new: int
    verdict: Verdict
    notes: tuple[str, ...] = field(default_factory=tuple)

    def row(self) -> dict[str, Any]:
        mirrored = self.new.requests if self.step.mirror is not None else 0
        live = 0 if self.step.mirror is not None else self.new.requests - self.canaries_on_new
        return {
            "step": self.number,
            "traffic": self.step.label,
            "weights": self.weights,
            "window": f"{self.start:%H:%M:%S}-{self.end:%H:%M:%S} "
            f"({(self.end - self.start).total_seconds():.0f} s, "
            f"{self.coverage:.0%} covered)",
            "new requests (live/mirrored/canary)": f"{self.new.requests} "
            f"({max(live, 0)}/{mirrored}/{self.canaries_on_new})",
            "new error rate": round(self.new.error_rate, 4),
            "new p95 ms": _ms(self.new.p95_ms),
            "old requests": self.old.requests if self.old else 0,
            "old error rate": round(self.old.error_rate, 4) if self.old else None,
            "old p95 ms": _ms(self.old.p95_ms) if self.old else None,
            "verdict": "; ".join((str(self.verdict), *self.notes)),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
