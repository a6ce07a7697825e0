"""Recording the human decision on a release, whatever it was."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.states import Cancelled, Failed, State

from tasks import audit
from tasks.approval import Approval, PromotionApproval, wait_for_approval


def ask_for_approval(
    subject: str, pack: str, key: str, timeout: int, poll_interval: int, unchanged: str
) -> PromotionApproval | State:
    """The approval gate, one rule for every flow that has one: show the evidence pack, wait
    for a person, record the decision. Returns the approval when approved; otherwise the
    state the flow ends in (Failed on timeout, Cancelled on rejection), whose message says
    that nothing was promoted and that `unchanged` is as it was."""
    publish_evidence_pack(pack)
    try:
        approval = wait_for_approval(pack, timeout, poll_interval, key)
    except FlowPauseTimeout:
        return Failed(message=record_timeout(subject, timeout, unchanged))
    record_decision(subject, approval)
    if not approval.approved:
        return Cancelled(
            message=f"Rejected by {approval.approver}: {approval.reason}. Nothing was "
            f"promoted; {unchanged} is unchanged."
        )
    return approval


@task
def publish_evidence_pack(markdown: str) -> None:
    create_markdown_artifact(
        key="evidence-pack", markdown=markdown, description="What the approver sees"
    )


@task
def record_decision(subject: str, approval: Approval) -> None:
    """`subject`: what was decided on, as the audit log names it. Called before anything is
    done with the decision: a decision that cannot be recorded (AuditWriteFailed) fails the
    step, so an unrecorded approval promotes nothing."""
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
