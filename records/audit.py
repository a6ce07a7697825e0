"""One entry of the audit trail, and the error that stops a step whose record was not written."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the audit trail: who did what to which subject, why, when, in which run."""

    action: str  # approved, rejected, approval-timed-out, promoted, deployed, traffic, rollback
    actor: str
    subject: str
    reason: str
    flow_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class AuditWriteFailed(RuntimeError):
    """A record could not be written, so the step it records must not happen: the message
    names the store and the reason."""
