"""What batch scoring takes and returns: a file in an environment's inbox, where its results
go, and the summary of one scoring job. Both backends and the flows share these, so the local
folder and the Azure datastore hold the same layout under the same names."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Protocol

SUMMARY_FILE = "summary.json"
"""Written last in a results folder: its presence says the job finished (exactly once)."""
SCORED_DIR = "scored"
REJECTS_DIR = "rejects"


@dataclass(frozen=True)
class InboxFile:
    """A file dropped in an environment's inbox, named by its content.

    `name` is its path under the inbox (posix); `uri` is where the backend reads it (a local
    path, or an `azureml://datastores/...` URI); `sha256` keys the scoring, so the same
    content dropped twice, or under another name, is scored once per model version."""

    name: str
    uri: str
    sha256: str
    size: int
    modified: datetime

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem


class Versioned(Protocol):
    """A model version (records.workspace.ModelVersion), as far as results are named by it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...


def results_prefix(file: InboxFile, model: Versioned) -> str:
    """Where one content's results for one model version live, under the environment's
    results folder: `<sha256[:16]>/<model>-v<version>` (posix; the same on both backends).
    Keyed on the content alone, so the same rows dropped again under another name find their
    results; the files inside keep the input's name (`scored/<stem>.parquet`)."""
    return f"{file.sha256[:16]}/{model.name}-v{model.version}"


@dataclass(frozen=True)
class BatchSummary:
    """What one scoring job did, for the summary artifact, the caller's checks and the
    exactly-once check (its JSON is the results folder's `summary.json`)."""

    input: str
    scored: str
    """The scored rows: the input's columns plus probability, label, model_name,
    model_version, run_id (Parquet)."""
    rejects: str
    """The refused rows as read, plus row, reasons and rules (Parquet)."""
    rows: int
    rows_scored: int
    rows_refused: int
    refused_by_rule: Mapping[str, int]
    """Refused rows per contract rule (a row breaking two rules counts under both)."""
    label_rate: float | None
    """Share of scored rows labelled 1; None when no row was scored."""
    seconds: float
    model_name: str
    model_version: str
    run_id: str
    mini_batches: int
    workers: int
    sha256: str = ""
    """The input's content hash (the exactly-once key, with the model version)."""
    finished_at: str = ""
    """ISO time the results were complete (UTC)."""
    job: str = ""
    """Where the job ran: the local pool, or the Azure ML batch job's name."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BatchSummary:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class BatchScoringFailed(RuntimeError):
    """The job stopped: more refused rows than the error threshold, or a mini-batch failed.
    The counts are the rows read up to then; the rejects file keeps the refused rows."""

    def __init__(
        self, message: str, rows_read: int, rows_refused: int, refused_by_rule: Mapping[str, int]
    ) -> None:
        super().__init__(message)
        self.rows_read = rows_read
        self.rows_refused = rows_refused
        self.refused_by_rule = dict(refused_by_rule)
