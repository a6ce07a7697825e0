"""The local batch pool and the fake's batch jobs run batch_score.py in the project's venv, not
in the inference environment Azure ML builds from conda.yml (the online deployments do run in
that environment here). What makes the answers the same anyway: every package the script and
the model it loads compute with is pinned to the same version in both. A bump in one file and
not the other fails here, naming the package."""

from __future__ import annotations

import re
from pathlib import Path

from backends.serving_package import CONDA_FILE, pip_requirements

REPO = Path(__file__).resolve().parents[2]
COMPUTING = ("scikit-learn", "numpy", "pandas", "pyarrow", "skops", "scipy", "orjson", "joblib")
"""What batch_score.py, model_scoring.py and request_contract.py import, and what the model
(a scikit-learn Pipeline saved with skops) computes with."""


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line.strip())
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_the_batch_script_computes_with_the_same_packages_here_as_on_azure() -> None:
    inference = pins(pip_requirements(CONDA_FILE))
    project = pins((REPO / "requirements.lock").read_text().splitlines())
    differing = {
        name: (inference.get(name), project.get(name))
        for name in COMPUTING
        if inference.get(name) != project.get(name)
    }
    assert differing == {}, f"conda.yml vs requirements.lock: {differing}"
    assert all(inference.get(name) for name in COMPUTING)
