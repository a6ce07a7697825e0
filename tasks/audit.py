"""The audit trail: every approval, rejection, promotion, deployment, traffic change, rollback.

An append-only JSON-lines file (one `write` per record, O_APPEND, fsync), so concurrent writers
never interleave and a crash never rewrites history. Each record says who, when, what, why and
which flow run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.topology import load_topology


@dataclass(frozen=True)
class AuditRecord:
    action: str  # approved, rejected, approval-timed-out, promoted, deployed, traffic, rollback
    actor: str
    subject: str
    reason: str
    flow_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def audit_log_path() -> Path:
    return load_topology().local_root / "audit" / "audit.jsonl"


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
    """Append one record; the flow run id is taken from the running flow when there is one."""
    entry = AuditRecord(action, actor, subject, reason, current_flow_run_id(), details or {})
    path = audit_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(entry), default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def read_audit_log() -> list[AuditRecord]:
    path = audit_log_path()
    if not path.exists():
        return []
    return [AuditRecord(**json.loads(line)) for line in path.read_text().splitlines() if line]
