"""What every online deployment runs, for both backends: the scoring script's code snapshot, the
inference environment, the deployment settings and the model's own settings.

`components/serving/online-deployment.yml` is an Azure ML managed online deployment YAML; the
azure backend sends it (with the name, endpoint, model and environment filled in) and the local
backend runs the very same script, in Azure ML's own inference server, in a virtual environment
built from the same `environment/conda.yml`, with the same environment variables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml
from filelock import FileLock

from backends.pipeline_assets import INFERENCE_ENVIRONMENT_FILE, environment_asset
from records import lineage_tags
from records.serving import DeploymentFailed
from records.workspace import ModelVersion

if TYPE_CHECKING:
    from azure.ai.ml.entities import ManagedOnlineDeployment

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO_ROOT / "components" / "serving"
DEPLOYMENT_FILE = SERVING_DIR / "online-deployment.yml"
ENVIRONMENT_FILE = INFERENCE_ENVIRONMENT_FILE
CONDA_FILE = SERVING_DIR / "environment" / "conda.yml"
SCORING_SCRIPT = "score.py"
CONTRACT_PACKAGE = REPO_ROOT / "data_checks"
"""Copied into the snapshot beside the script, as `additional_includes` does for components
(online deployments have no such setting)."""
DEFAULT_THRESHOLD = 0.5
VENV_ROOT = Path(os.environ.get("MLOPS_INFERENCE_VENVS", REPO_ROOT / ".venvs"))
Setting = TypeVar("Setting")


def deployment_template() -> ManagedOnlineDeployment:
    """The deployment YAML, parsed by azure-ai-ml (offline: nothing is sent)."""
    from azure.ai.ml import load_online_deployment
    from azure.ai.ml.entities import ManagedOnlineDeployment

    deployment = load_online_deployment(str(DEPLOYMENT_FILE))
    if not isinstance(deployment, ManagedOnlineDeployment):
        raise DeploymentFailed(
            f"{DEPLOYMENT_FILE.relative_to(REPO_ROOT)} loads as a {type(deployment).__name__}; "
            "give it the managedOnlineDeployment $schema"
        )
    return deployment


def deployment_setting(value: Setting | None, setting: str) -> Setting:
    """A setting of the deployment YAML that the local backend needs to run a deployment
    (azure-ai-ml types them all optional, since Azure ML has defaults for the missing ones)."""
    if value is None:
        raise DeploymentFailed(
            f"{DEPLOYMENT_FILE.relative_to(REPO_ROOT)} has no {setting}; set it there"
        )
    return value


def environment_version() -> str:
    """The same image and conda spec always make the same version (and the same local venv)."""
    return environment_asset(ENVIRONMENT_FILE).version


def model_settings(model: ModelVersion) -> dict[str, str]:
    """Environment variables that tell the scoring script which model it serves and the
    threshold its labels use (the model's own, chosen at evaluation; one rule everywhere)."""
    raw = model.tags.get(lineage_tags.TEST_THRESHOLD, str(DEFAULT_THRESHOLD))
    try:
        threshold = float(raw)
    except ValueError:
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise DeploymentFailed(
            f"model {model.name} v{model.version} has {lineage_tags.TEST_THRESHOLD}={raw!r}; "
            "tag it with a number in [0, 1]"
        )
    return {
        "MODEL_NAME": model.name,
        "MODEL_VERSION": str(model.version),
        "MODEL_THRESHOLD": repr(threshold),
    }


def deployment_variables(model: ModelVersion) -> dict[str, str]:
    """Everything a deployment's container gets: the YAML's variables and the model's."""
    return {**dict(deployment_template().environment_variables or {}), **model_settings(model)}


def _snapshot_files() -> Iterator[tuple[Path, Path]]:
    """(source file, path inside the snapshot), in a stable order."""
    configuration = deployment_setting(
        deployment_template().code_configuration, "code_configuration"
    )
    code = (SERVING_DIR / str(configuration.code)).resolve()
    for root, prefix in ((code, Path()), (CONTRACT_PACKAGE, Path(CONTRACT_PACKAGE.name))):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path, prefix / path.relative_to(root)


def code_snapshot(into: Path) -> Path:
    """The scoring script's folder with the data contract beside it, under `into/<content
    hash>/`: what Azure ML uploads as the deployment's code and the local server runs."""
    files = list(_snapshot_files())
    digest = hashlib.sha256()
    for source, relative in files:
        digest.update(str(relative).encode() + b"\0" + source.read_bytes() + b"\0")
    target = into / digest.hexdigest()[:16]
    if (target / SCORING_SCRIPT).is_file():
        return target
    partial = into / f".{target.name}.{uuid.uuid4().hex}.partial"  # one per caller, any thread
    shutil.rmtree(partial, ignore_errors=True)
    for source, relative in files:
        (partial / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, partial / relative)
    try:
        partial.rename(target)
    except OSError:  # another process made the same snapshot first: same content
        shutil.rmtree(partial, ignore_errors=True)
    return target


def pip_requirements(conda_file: Path | str = CONDA_FILE) -> list[str]:
    """The pinned pip packages of a conda environment file."""
    spec = yaml.safe_load(Path(conda_file).read_text())
    for dependency in spec.get("dependencies", []):
        if isinstance(dependency, Mapping) and "pip" in dependency:
            return [str(p) for p in dependency["pip"]]
    raise ValueError(f"{conda_file} lists no pip packages")


def inference_venv(conda_file: Path | str = CONDA_FILE) -> Path:
    """A virtual environment with the conda file's pip packages, built once per package list
    (about 30 s) and reused by every deployment, test and benchmark after that."""
    packages = pip_requirements(conda_file)
    # keyed on the packages, not the file's bytes: azure-ai-ml rewrites a conda file it sends
    # (comments and `name:` dropped), and the same packages must give the same venv
    digest = hashlib.sha256("\n".join([sys.version.split()[0], *packages]).encode())
    venv = VENV_ROOT / f"inference-{digest.hexdigest()[:16]}"
    stamp = venv / ".installed"
    if stamp.is_file():
        return venv
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    with FileLock(VENV_ROOT / f".{venv.name}.lock"):  # one builder at a time, across processes
        if stamp.is_file():  # built by another process while we waited
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        python = os.environ.get("MLOPS_INFERENCE_PYTHON") or sys.executable
        _run([python, "-m", "venv", str(venv)], "create the inference venv")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--upgrade", "pip"], "upgrade pip in the inference venv")
        _run([*pip, *packages], f"install {conda_file} into {venv}")
        stamp.write_text(str(conda_file) + "\n")
    return venv


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"could not {what} (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
