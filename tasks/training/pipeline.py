"""Training stage: find the champion, run the training pipeline, enforce the quality gate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

import backends
from backends.topology import load_topology
from records import aliases
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun
from reports.pictures import publish_image
from settings import PIPELINES_DIR, FairnessSettings, GateSettings, PipelineSettings

METRICS = ("auc", "f1", "precision", "recall", "accuracy", "brier")


@dataclass(frozen=True)
class GateResult:
    """The evaluate step's verdict with the numbers behind it."""

    passed: bool
    failures: tuple[str, ...]
    candidate: dict[str, float]
    champion: dict[str, float] | None
    evaluation_dir: str


class QualityGateFailed(RuntimeError):
    """The candidate did not meet the thresholds or did not match the champion."""


@dataclass(frozen=True)
class Champion:
    """The model a candidate must match: prod's (shared registry) once there is one."""

    model: ModelVersion
    model_dir: str
    registry: str


@task(retries=2, retry_delay_seconds=5)
def find_champion(environment: str, model_name: str) -> Champion | None:
    """The shared registry's champion, else the environment's own (before any release)."""
    logger = get_run_logger()
    for registry, where in (
        (backends.shared_registry(), "shared registry"),
        (backends.workspace(environment), environment),
    ):
        champion = registry.get_model(model_name, aliases.CHAMPION)
        if champion is not None:
            logger.info("Champion: %s v%s from the %s", model_name, champion.version, where)
            return Champion(champion, str(registry.model_path(champion)), where)
    logger.info("No champion for %s yet: thresholds only", model_name)
    return None


def _training_cache_key(context: object, parameters: dict) -> str:
    """Same data, settings, champion and local root -> the same pipeline run.

    A release re-run after a crash (or a suspended run restarting from the top) reuses the
    finished training instead of training a second, different candidate.
    """
    champion = parameters["champion"]
    parts = (
        str(load_topology().local_root),
        parameters["environment"],
        parameters["asset"].content_hash,
        champion.model.version if champion else "-",
        champion.registry if champion else "-",
        parameters["pipeline"].model_dump_json(),
        parameters["gate"].model_dump_json(),
        parameters["fairness"].model_dump_json(),
        parameters["assets"].digest,  # changed code trains anew
        parameters["assets"].store,
    )
    return "train-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


@task(
    cache_key_fn=_training_cache_key,
    persist_result=True,
    cache_expiration=timedelta(days=7),
)
def run_training_pipeline(
    environment: str,
    asset: DataAsset,
    champion: Champion | None,
    pipeline: PipelineSettings,
    gate: GateSettings,
    fairness: FairnessSettings,
    assets: AssetReferences,
) -> PipelineRun:
    """prep -> train -> evaluate as one pipeline job in the environment's workspace, each step
    the component version `assets` names; the gate and fairness limits are its inputs."""
    workspace = backends.workspace(environment)
    inputs = {
        "raw_data": asset.path,
        **pipeline.model_dump(),
        **gate.model_dump(),
        **fairness.model_dump(),
    }
    if champion is not None:
        inputs["champion_model"] = champion.model_dir
    run = workspace.run_pipeline(
        PIPELINES_DIR / "train.yml",
        inputs,
        run_name=f"train on {asset.name}:{asset.version}",
        assets=assets,
    )
    for step in run.steps:
        get_run_logger().info(
            "Step %s finished in %.1f s (log: %s)", step.name, step.seconds, step.log_path
        )
    return run


@task
def check_quality_gate(run: PipelineRun) -> GateResult:
    """Publish the metrics and the verdict; a failed gate ends the flow Failed, loudly."""
    evaluation = Path(run.evaluation_folder)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    verdict = json.loads((evaluation / "gate.json").read_text())
    result = GateResult(
        passed=verdict["passed"],
        failures=tuple(verdict["failures"]),
        candidate=metrics["candidate"],
        champion=metrics["champion"],
        evaluation_dir=str(evaluation),
    )
    create_table_artifact(
        key="model-metrics",
        table=[
            {
                "metric": name,
                "candidate": round(result.candidate[name], 4),
                "champion": round(result.champion[name], 4) if result.champion else None,
            }
            for name in METRICS
        ],
        description=f"Test-set metrics ({metrics['test_rows']} rows), candidate vs champion",
    )
    thresholds = "\n".join(f"| {k} | {v} |" for k, v in verdict["thresholds"].items())
    failures = "\n".join(f"- {f}" for f in result.failures) or "- none"
    create_markdown_artifact(
        key="quality-gate",
        markdown=(
            f"# Quality gate: {'PASSED' if result.passed else 'FAILED'}\n\n"
            f"Failures:\n{failures}\n\n| threshold | value |\n|---|---|\n{thresholds}\n\n"
            f"Compared with champion: {verdict['compared_with_champion']}\n\n"
            f"ROC/PR plot: `{evaluation / 'roc_pr.png'}`\n\n"
            f"MLflow pipeline run `{run.run_id}` in `{run.tracking_url}`\n"
        ),
        description="Thresholds and the champion comparison",
    )
    for picture, description in (
        ("roc_pr.png", "ROC and precision-recall, candidate vs champion"),
        ("calibration.png", "Calibration, candidate vs champion"),
        ("feature_importance.png", "Permutation feature importance of the candidate"),
    ):
        if (evaluation / picture).exists():
            publish_image(
                evaluation / picture, picture.removesuffix(".png").replace("_", "-"), description
            )
    if not result.passed:
        raise QualityGateFailed(
            "quality gate failed, nothing registered: " + "; ".join(result.failures)
        )
    return result
