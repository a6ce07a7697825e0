"""Registration: a gated model enters the workspace registry with its lineage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact

import backends
from backends.base import DataAsset, ModelVersion, PipelineRun
from backends.pipeline_assets import AssetReferences
from tasks.lineage import PIPELINE_ASSETS_TAG, git_commit
from tasks.training import GateResult


class NoChampion(RuntimeError):
    """Nothing is in production yet: nothing to monitor, nothing to roll back to."""


@task
def find_prod_champion(model_name: str) -> ModelVersion:
    """The shared registry's `champion`: the model prod serves."""
    champion = backends.shared_registry().get_model(model_name, "champion")
    if champion is None:
        raise NoChampion(f"{model_name} has no champion in the shared registry: release first")
    return champion


@task(retries=2, retry_delay_seconds=5)
def register_model(
    environment: str,
    model_name: str,
    run: PipelineRun,
    asset: DataAsset,
    gate: GateResult,
    assets: AssetReferences,
    alias: str = "champion",
) -> ModelVersion:
    """Register the gated model and point `alias` at it (dev: its champion; test: candidate).

    Idempotent: the pipeline run id identifies the version, so a re-run after a crash returns
    the version it already made instead of adding a duplicate.
    """
    workspace = backends.workspace(environment)
    tags = {
        "data_asset": asset.name,
        "data_version": asset.version,
        "data_sha256": asset.content_hash,
        "pipeline_run_id": run.run_id,
        "train_run_id": run.step("train").run_id,
        "git_commit": git_commit(),
        PIPELINE_ASSETS_TAG: assets.digest,
        "pipeline_assets_from": assets.store,
        "gate": "passed",
        **{f"test_{name}": f"{value:.4f}" for name, value in gate.candidate.items()},
    }
    version = workspace.register_model(
        model_name,
        run.outputs["model"],
        run.step("train").run_id,
        tags,
        description=f"Trained on {asset.name}:{asset.version}; gate passed",
    )
    workspace.set_model_alias(model_name, alias, version.version)
    create_link_artifact(
        key="registered-model",
        link=run.tracking_url,
        link_text=f"{model_name} v{version.version} in {workspace.name}",
        description=f"Open with: `{workspace.tracking_ui_command()}`",
    )
    get_run_logger().info(
        "Registered %s version %s in %s (AUC %.4f)",
        model_name,
        version.version,
        workspace.name,
        gate.candidate["auc"],
    )
    return version
