"""Validate readmission training data and write the gate's report; the caller decides what to do.

Runs as an Azure ML command component and as a local subprocess with the same arguments. It
exits 0 whether the data passed or failed, because the verdict lives in report.json for the
orchestrator to read; a non-zero exit means this script itself broke (for example it could not
write its outputs), which is a different problem from bad data.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_checks.validation import DataValidationReport, validate_file


def resolve_csv(data: Path) -> tuple[Path | None, str | None]:
    """Find the CSV to validate: the path itself, or the only .csv in a mounted folder.

    Azure ML may mount the input as a uri_file or a uri_folder, so both must work.
    """
    if not data.is_dir():
        return data, None
    candidates = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, f"folder {data} contains no .csv file; point --data at the training CSV"
    names = ", ".join(str(p.relative_to(data)) for p in candidates[:5])
    return None, (
        f"folder {data} contains {len(candidates)} .csv files ({names}); "
        "point --data at exactly one of them"
    )


def write_outputs(report: DataValidationReport, gx_result: dict[str, Any], folder: Path) -> None:
    """Write report.json, report.md and gx_result.json into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (folder / "report.md").write_text(report.to_markdown())
    (folder / "gx_result.json").write_text(json.dumps(gx_result, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Validate --data, write the three report files to --report, print the one-line summary."""
    parser = argparse.ArgumentParser(description="Validate readmission training data.")
    parser.add_argument("--data", type=Path, required=True, help="CSV file or folder with one CSV")
    parser.add_argument("--report", type=Path, required=True, help="folder for the report files")
    args = parser.parse_args(argv)

    csv_path, problem = resolve_csv(args.data)
    if csv_path is None:
        report = DataValidationReport(
            passed=False,
            data_path=str(args.data),
            row_count=0,
            evaluated=0,
            failures=(),
            warnings=(),
            error=problem,
        )
        gx_result: dict[str, Any] = {}
    else:
        report, gx_result = validate_file(csv_path)
    write_outputs(report, gx_result, args.report)
    print(report.summary())
    print(f"report: {args.report / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
