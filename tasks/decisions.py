"""Recording the human decision on a release, whatever it was."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks import audit
from tasks.approval import PromotionApproval


@task
def publish_evidence_pack(markdown: str) -> None:
    create_markdown_artifact(
        key="evidence-pack", markdown=markdown, description="What the approver sees"
    )


@task
def record_decision(subject: str, approval: PromotionApproval) -> None:
    """`subject`: what was decided on, as the audit log names it."""
    action = "approved" if approval.approved else "rejected"
    audit.record(action, approval.approver, subject, approval.reason)
    get_run_logger().info("%s %s by %s: %s", subject, action, approval.approver, approval.reason)


@task
def record_timeout(subject: str, timeout_seconds: int, unchanged: str) -> str:
    """Record that nobody decided on `subject` in time; `unchanged` says what stays as it
    was. Returns the message the flow ends with."""
    message = (
        f"No approval decision within {timeout_seconds} s for {subject}: nothing was "
        f"promoted and {unchanged} is unchanged."
    )
    audit.record("approval-timed-out", "approval-gate", subject, message)
    return message
