"""Where a model came from: the code commit it was trained with (its `git_commit` tag)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD's sha, with "+dirty" when the tree has changes; outside a git checkout (the flows'
    container image has no .git) the commit the image was built from (MLOPS_GIT_COMMIT, set
    by the Dockerfile's GIT_COMMIT build argument), else "unknown"."""
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
        return os.environ.get("MLOPS_GIT_COMMIT") or "unknown"
    return f"{sha}+dirty" if dirty else sha
