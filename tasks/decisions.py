"""Recording the human decision on a release, whatever it was."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from backends.base import ModelVersion
from tasks import audit
from tasks.approval import PromotionApproval


@task
def publish_evidence_pack(markdown: str) -> None:
    create_markdown_artifact(
        key="evidence-pack", markdown=markdown, description="What the approver sees"
    )


@task
def record_decision(candidate: ModelVersion, approval: PromotionApproval) -> None:
    action = "approved" if approval.approved else "rejected"
    audit.record(
        action,
        approval.approver,
        f"{candidate.name}/v{candidate.version} (test)",
        approval.reason,
    )
    get_run_logger().info("Release %s by %s: %s", action, approval.approver, approval.reason)


@task
def record_timeout(candidate: ModelVersion, timeout_seconds: int) -> str:
    message = (
        f"No approval decision within {timeout_seconds} s for {candidate.name} "
        f"v{candidate.version}: nothing was promoted and prod is unchanged."
    )
    audit.record(
        "approval-timed-out", "release-flow", f"{candidate.name}/v{candidate.version}", message
    )
    return message
