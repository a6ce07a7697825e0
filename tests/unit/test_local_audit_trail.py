"""The audit trail on a laptop: the append-only JSONL file under the local root, as before."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import backends
from audit import read_audit_log, record
from backends.local.audit import LocalAuditTrail
from records.audit import AuditRecord, AuditWriteFailed


def test_records_are_json_lines_in_the_local_roots_audit_file_read_back_in_order(
    mlops_root: Path,
) -> None:
    written = [
        record("approved", "ivan", "mlr-readmission-shared/readmission", "evidence reviewed"),
        record("traffic", "release-flow", "prod/readm", "step 1", {"traffic": {"green": 10}}),
    ]

    path = mlops_root / "audit" / "audit.jsonl"
    assert backends.audit_trail().where == str(path)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["approved", "traffic"]
    assert read_audit_log() == written
    assert written[1].details == {"traffic": {"green": 10}}


def test_no_file_yet_reads_as_an_empty_trail(mlops_root: Path) -> None:
    assert read_audit_log() == []


def test_concurrent_writers_never_interleave_records(tmp_path: Path) -> None:
    trail = LocalAuditTrail(tmp_path / "audit" / "audit.jsonl")
    reason = "x" * 3000  # long lines: each must still land whole

    def write(writer: int) -> None:
        for n in range(40):
            trail.append(AuditRecord("traffic", f"writer-{writer}", f"r{n}", reason))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    records = trail.read()  # every line parses
    assert len(records) == 240
    for writer in range(6):
        mine = [r.subject for r in records if r.actor == f"writer-{writer}"]
        assert mine == [f"r{n}" for n in range(40)]  # each writer's records in its order


def test_a_record_that_cannot_be_written_raises_naming_the_file_and_the_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "audit").write_text("a file where the audit folder should be")
    trail = LocalAuditTrail(tmp_path / "audit" / "audit.jsonl")

    with pytest.raises(AuditWriteFailed) as failed:
        trail.append(AuditRecord("approved", "ivan", "release-1", "ok"))

    message = str(failed.value)
    assert str(tmp_path / "audit" / "audit.jsonl") in message
    assert "'approved' record for release-1" in message and "the step was not taken" in message
