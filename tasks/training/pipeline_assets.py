"""Pipeline assets: which component and environment versions an environment runs, and their
promotion from dev to the shared registry once dev's pipeline passed and a person approved.

Dev registers the working tree's versions and runs from them; every other environment runs the
shared registry's versions of the same content and is refused a version the registry lacks. So
a release's test retraining runs exactly the code dev validated.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

import audit
import backends
from backends.pipeline_assets import AssetsNotPromoted, PipelineAssets, working_tree_assets
from backends.topology import load_topology
from records import lineage_tags
from records.workspace import AssetReferences, ModelVersion
from tasks.release.approval import PromotionApproval


class AssetsNotValidated(RuntimeError):
    """A promotion was asked for assets no passed dev pipeline ran."""


@task(retries=2, retry_delay_seconds=5)
def resolve_pipeline_assets(environment: str) -> AssetReferences:
    """The component and environment versions `environment` runs: dev registers the working
    tree's (once per content); the others get the shared registry's references for the same
    content, or AssetsNotPromoted naming the changed component and what to run."""
    assets = working_tree_assets()
    if load_topology().environment(environment).registers_pipeline_assets:
        references = backends.workspace(environment).register_pipeline_assets(assets)
    else:
        references = backends.shared_registry().pipeline_asset_references(assets)
    create_table_artifact(
        key=f"pipeline-assets-{environment}",
        table=[
            {"kind": "component", "name": name, "reference": reference}
            for name, reference in references.components.items()
        ]
        + [
            {"kind": "environment", "name": name, "reference": reference}
            for name, reference in references.environments.items()
        ],
        description=f"What {environment} runs (asset set {references.digest}, {references.store})",
    )
    get_run_logger().info(
        "%s runs asset set %s from %s", environment, references.digest, references.store
    )
    return references


@task
def pipeline_assets_to_promote(model: ModelVersion) -> PipelineAssets | None:
    """The working tree's assets if the shared registry lacks any of them, else None (nothing
    to ask anyone). They must be what `model`'s passed pipeline ran."""
    assets = working_tree_assets()
    validated = model.tags.get(lineage_tags.PIPELINE_ASSETS)
    if validated != assets.digest:
        raise AssetsNotValidated(
            f"{model.name} v{model.version} was trained with asset set {validated}, but the "
            f"working tree now makes {assets.digest}: the code changed during the run. Run "
            "train-dev again so that dev validates what would be promoted"
        )
    registry = backends.shared_registry()
    try:
        registry.pipeline_asset_references(assets)
    except AssetsNotPromoted:
        return assets
    get_run_logger().info("The shared registry holds asset set %s already", assets.digest)
    return None


def pipeline_assets_pack(assets: PipelineAssets, model: ModelVersion, tracking_url: str) -> str:
    """Markdown for the approval form: what would be promoted and the run that validated it."""
    registry = load_topology().shared_registry.name
    return (
        f"## Promote the pipeline's components and environments to {registry}?\n\n"
        f"Test and prod run only the shared registry's versions. These passed dev's pipeline: "
        f"{model.name} v{model.version} was trained and gated with them (AUC "
        f"{model.tags.get(lineage_tags.metric_tag('auc'), '?')}).\n\n"
        f"| kind | name | version |\n|---|---|---|\n{assets.listing()}\n\n"
        f"Asset set `{assets.digest}`, "
        f"commit {model.tags.get(lineage_tags.GIT_COMMIT, '')[:12]}\n\n"
        f"Pipeline run: {tracking_url}\n\n"
        "Set **approved**, your name as **approver** and a **reason**, then submit."
    )


@task(retries=2, retry_delay_seconds=5)
def promote_pipeline_assets(assets: PipelineAssets, approval: PromotionApproval) -> AssetReferences:
    """Publish the approved versions to the shared registry (idempotent: a re-run after a
    crash adds only what is missing) and record who approved them."""
    registry = backends.shared_registry()
    references = registry.publish_pipeline_assets(assets)
    audit.record(
        "assets-promoted",
        approval.approver,
        f"{registry.name}/pipeline-assets/{assets.digest}",
        approval.reason,
        {"components": dict(references.components), "environments": dict(references.environments)},
    )
    get_run_logger().info("Promoted asset set %s to %s", assets.digest, registry.name)
    return references
