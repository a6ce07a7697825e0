"""The audit trail: every approval, rejection, promotion, deployment, traffic change, rollback.

Each record says who, when, what, why and which flow run. Where it lives is the backend's
business (`backends.audit_trail()`): an append-only JSON-lines file on a laptop, append blobs in
an immutable (WORM) container on Azure. A record that cannot be written raises
AuditWriteFailed, so a step whose record is its permission (an approval) never goes ahead
unrecorded.
"""

from __future__ import annotations

from typing import Any

import backends
from records.audit import AuditRecord, AuditWriteFailed

__all__ = [
    "AuditRecord",
    "AuditWriteFailed",
    "current_flow_run_id",
    "read_audit_log",
    "record",
]


def current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def record(
    action: str,
    actor: str,
    subject: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    """Append one record; the flow run id is taken from the running flow when there is one.
    Raises AuditWriteFailed (naming the store and the reason) when it cannot be written."""
    entry = AuditRecord(action, actor, subject, reason, current_flow_run_id(), details or {})
    backends.audit_trail().append(entry)
    return entry


def read_audit_log() -> list[AuditRecord]:
    """Every record, oldest first, from the configured backend's store."""
    return backends.audit_trail().read()
