"""Split the validated raw data into a stratified train set and a held-out test set.

A plain script: it runs as an Azure ML command component and, locally, as a subprocess of
the component runner; it imports only the data contract (`data_checks`) and libraries.
The test set is written once here so the candidate and the champion are always scored on
exactly the same rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import pandas as pd
from sklearn.model_selection import train_test_split

from data_checks.readmission_schema import ALL_COLUMNS, LABEL


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or parquet file, or the single data file inside a folder (AML mounts folders)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in {".csv", ".parquet"})
        if len(files) != 1:
            raise SystemExit(f"expected exactly one .csv or .parquet file in {path}, found {files}")
        path = files[0]
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw_data", type=Path, required=True)
    parser.add_argument("--test_size", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--train_data", type=Path, required=True)
    parser.add_argument("--test_data", type=Path, required=True)
    args = parser.parse_args()

    frame = read_table(args.raw_data)
    unknown = [c for c in frame.columns if c not in ALL_COLUMNS]
    if unknown:  # the data gate warned about these; the model never sees them
        print(f"dropping columns outside the schema: {unknown}")
        frame = frame[list(ALL_COLUMNS)]
    train, test = train_test_split(
        frame, test_size=args.test_size, random_state=args.seed, stratify=frame[LABEL]
    )
    for out, part in ((args.train_data, train), (args.test_data, test)):
        out.mkdir(parents=True, exist_ok=True)
        part.to_parquet(out / "data.parquet", index=False)

    stats = {
        "rows_total": len(frame),
        "rows_train": len(train),
        "rows_test": len(test),
        "positive_rate_train": float(train[LABEL].mean()),
        "positive_rate_test": float(test[LABEL].mean()),
    }
    with mlflow.start_run():
        mlflow.log_params({"test_size": args.test_size, "seed": args.seed})
        mlflow.log_metrics(stats)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
