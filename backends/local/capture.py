"""Read what an endpoint captured: the inputs and outputs of every scored row, per deployment."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd


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
