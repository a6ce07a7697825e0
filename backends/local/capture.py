"""Data capture of a local endpoint: every scored row's inputs and outputs, written per
deployment and UTC day as JSON lines (`capture/<deployment>/<date>.jsonl`), and read back for
drift monitoring."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from backends.local.endpoint_state import DeploymentSpec
from backends.local.request_schema import (
    FeatureBatch,
)

log = logging.getLogger("endpoint_server")
CAPTURE_DIR = "capture"


@dataclass(frozen=True)
class CapturedRequest:
    deployment: DeploymentSpec
    request_id: str
    received: float
    batch: FeatureBatch
    probabilities: np.ndarray
    labels: np.ndarray
    mirrored: bool


class CaptureWriter:
    """Model inputs and outputs, one JSON line per row, per deployment and UTC day.

    Requests only append to a list; a background thread turns them into lines once a second
    (or sooner when many rows wait) and on shutdown, so capture costs scoring almost nothing.
    A crash loses at most the last second.
    """

    def __init__(
        self, directory: Path, flush_seconds: float = 1.0, flush_rows: int = 5_000
    ) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._pending: list[CapturedRequest] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def add(self, captured: CapturedRequest) -> None:
        with self._lock:
            self._pending.append(captured)
            self._pending_rows += captured.batch.n_rows
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a full disk must not take scoring down; say so in the log
                log.exception("data capture flush failed; rows were dropped")

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        files: dict[Path, list[bytes]] = {}
        for captured in pending:
            moment = datetime.fromtimestamp(captured.received, UTC)
            path = self.directory / captured.deployment.name / f"{moment:%Y-%m-%d}.jsonl"
            lines = files.setdefault(path, [])
            common = {
                "timestamp": moment.isoformat(timespec="milliseconds"),
                "request_id": captured.request_id,
                "deployment": captured.deployment.name,
                "model_name": captured.deployment.model_name,
                "model_version": captured.deployment.model_version,
                "mirrored": captured.mirrored,
            }
            head = orjson.dumps(common)[:-1] + b","  # the request's fields, encoded once
            outputs = zip(captured.probabilities.tolist(), captured.labels.tolist(), strict=True)
            for row, (inputs, (probability, label)) in enumerate(
                zip(captured.batch.rows(), outputs, strict=True)
            ):
                line = {"row": row, "inputs": inputs, "probability": probability, "label": label}
                lines.append(head + orjson.dumps(line)[1:])
        with self._write_lock:
            for path, lines in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as handle:
                    handle.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def read_capture(state_dir: Path, since: datetime) -> pd.DataFrame:
    """Rows scored at or after `since`, live and mirrored, one row per scored input row.

    Columns: the raw feature fields, `probability`, `label`, `deployment`, `model_version`,
    `mirrored`, `timestamp`.
    """
    records = []
    for path in sorted((state_dir / "capture").glob("*/*.jsonl")):
        if path.stem < since.strftime("%Y-%m-%d"):  # one file per day: skip whole old days
            continue
        with path.open() as handle:
            for line in handle:
                if not line.strip():
                    continue
                entry = json.loads(line)
                if datetime.fromisoformat(entry["timestamp"]) < since:
                    continue
                records.append(
                    {
                        **entry["inputs"],
                        "probability": entry["probability"],
                        "label": entry["label"],
                        "deployment": entry["deployment"],
                        "model_version": entry["model_version"],
                        "mirrored": entry["mirrored"],
                        "timestamp": entry["timestamp"],
                    }
                )
    return pd.DataFrame.from_records(records)
