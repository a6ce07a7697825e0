"""Registration: a gated model enters the workspace registry with its lineage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact

import backends
from records import aliases, lineage_tags
from records.lineage import git_commit
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun
from tasks.training.pipeline import GateResult


class NoChampion(RuntimeError):
    """Nothing is in production yet: nothing to monitor, nothing to roll back to."""


@task
def find_prod_champion(model_name: str) -> ModelVersion:
    """The shared registry's `champion`: the model prod serves."""
    champion = backends.shared_registry().get_model(model_name, aliases.CHAMPION)
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
    alias: str = aliases.CHAMPION,
) -> ModelVersion:
    """Register the gated model and point `alias` at it (dev: its champion; test: candidate).

    Idempotent: the pipeline run id identifies the version, so a re-run after a crash returns
    the version it already made instead of adding a duplicate.
    """
    workspace = backends.workspace(environment)
    tags = {
        lineage_tags.DATA_ASSET: asset.name,
        lineage_tags.DATA_VERSION: asset.version,
        lineage_tags.DATA_SHA256: asset.content_hash,
        lineage_tags.PIPELINE_RUN_ID: run.run_id,
        lineage_tags.TRAIN_RUN_ID: run.step("train").run_id,
        lineage_tags.GIT_COMMIT: git_commit(),
        lineage_tags.PIPELINE_ASSETS: assets.digest,
        lineage_tags.PIPELINE_ASSETS_FROM: assets.store,
        lineage_tags.GATE: "passed",
        **{lineage_tags.metric_tag(name): f"{value:.4f}" for name, value in gate.candidate.items()},
    }
    version = workspace.register_model(
        model_name,
        run.model_folder,
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
