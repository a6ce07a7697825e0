"""Promotion: an approved model enters the shared registry; prod's champion alias moves last."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.transactions import Transaction, get_transaction

import audit
import backends
from records import aliases, lineage_tags
from records.workspace import ModelVersion
from tasks.release.approval import PromotionApproval


@task(retries=2, retry_delay_seconds=5)
def promote_to_shared_registry(
    environment: str, model: ModelVersion, approval: PromotionApproval
) -> ModelVersion:
    """Copy the approved version with its lineage and the approval record; mark it challenger.

    Idempotent: the source (workspace, name, version) identifies the promoted version, so a
    re-run after a crash returns it instead of making a duplicate.
    """
    workspace = backends.workspace(environment)
    registry = backends.shared_registry()
    promoted = registry.promote(
        model,
        workspace.model_path(model),
        {
            lineage_tags.SOURCE_WORKSPACE: workspace.name,
            lineage_tags.APPROVED_BY: approval.approver,
            lineage_tags.APPROVAL_REASON: approval.reason,
            lineage_tags.RELEASE_FLOW_RUN_ID: audit.current_flow_run_id() or "",
        },
        description=f"Approved by {approval.approver}: {approval.reason}",
    )
    registry.set_model_alias(promoted.name, aliases.CHALLENGER, promoted.version)
    audit.record(
        "promoted",
        approval.approver,
        f"{registry.name}/{promoted.name}/v{promoted.version}",
        approval.reason,
        {"from": f"{workspace.name}/{model.name}/v{model.version}"},
    )
    get_run_logger().info(
        "Promoted %s v%s (%s) to %s as v%s",
        model.name,
        model.version,
        workspace.name,
        registry.name,
        promoted.version,
    )
    return promoted


@task
def crown_champion(model: ModelVersion) -> ModelVersion | None:
    """Prod serves `model` now: it becomes champion, the old champion the last known good."""
    registry = backends.shared_registry()
    previous = registry.get_model(model.name, aliases.CHAMPION)
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("previous_champion", previous)
    if previous is not None and previous.version != model.version:
        registry.set_model_alias(model.name, aliases.PREVIOUS_CHAMPION, previous.version)
    registry.set_model_alias(model.name, aliases.CHAMPION, model.version)
    audit.record(
        "champion",
        "release-flow",
        f"{registry.name}/{model.name}/v{model.version}",
        "serving 100% of prod traffic after a healthy rollout",
        {"previous": previous.version if previous else None},
    )
    return previous


@crown_champion.on_rollback
def _restore_champion(transaction: Transaction) -> None:
    previous = transaction.get("previous_champion")
    if previous is not None:
        backends.shared_registry().set_model_alias(
            previous.name, aliases.CHAMPION, previous.version
        )
