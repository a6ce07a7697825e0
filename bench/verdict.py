"""What every benchmark does at the end: save the figures, name each missed goal, exit code."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


def report_and_exit_code(result: Any, results_path: Path, no_fail: bool) -> int:
    """`result` is a dataclass with `failures`, `load_average_at_start` and `cpu_count`."""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"wrote {results_path}")
    for failure in result.failures:
        print(f"MISSED {failure}")
    if result.failures and result.load_average_at_start > 0.5 * result.cpu_count:
        print("       the CPUs were shared when this ran: rerun on a quiet machine before acting")
    if not result.failures:
        print("all goals met")
    return 1 if result.failures and not no_fail else 0
