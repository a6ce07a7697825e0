"""Where a model came from: the code commit it was trained with."""

from __future__ import annotations

import subprocess

from backends.topology import REPO_ROOT

PIPELINE_ASSETS_TAG = "pipeline_assets"
"""The model tag naming the asset set (components + environments) its pipeline ran."""


def git_commit() -> str:
    """HEAD's sha, with "+dirty" when the tree has changes; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha
