"""What an infrastructure what-if or deployment reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedChange:
    """One resource in a what-if: what it is and what a deployment would do to it."""

    resource: str
    kind: str
    action: str  # "create", "modify", "no change"
    detail: str = ""


@dataclass(frozen=True)
class InfraPlan:
    environment: str
    parameter_file: str
    changes: tuple[PlannedChange, ...]

    def has_changes(self) -> bool:
        return any(c.action != "no change" for c in self.changes)
