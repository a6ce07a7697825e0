"""The audit trail on a laptop: an append-only JSON-lines file under the local root.

One `write` per record on a descriptor opened with O_APPEND, then fsync: concurrent writers
never interleave (each line lands whole at the end of the file), and a record is on disk
before the step it records goes on. Nothing here ever rewrites or truncates the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from backends.topology import Topology
from records.audit import AuditRecord, AuditWriteFailed


class LocalAuditTrail:
    """`<local_root>/audit/audit.jsonl`, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def append(self, record: AuditRecord) -> None:
        line = (json.dumps(asdict(record), default=str) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise AuditWriteFailed(
                f"could not append the {record.action!r} record for {record.subject} to the "
                f"audit log {self.path}: {error.strerror or error}; the step was not taken. "
                "Free disk space or fix the file's permissions, then re-run"
            ) from error

    def read(self) -> list[AuditRecord]:
        if not self.path.exists():
            return []
        return [
            AuditRecord(**json.loads(line)) for line in self.path.read_text().splitlines() if line
        ]


def open_audit_trail(topology: Topology) -> LocalAuditTrail:
    return LocalAuditTrail(topology.local_root / "audit" / "audit.jsonl")
