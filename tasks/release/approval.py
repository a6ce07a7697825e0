"""The approval gate: the form a person fills in, the evidence pack it shows, and the record
of the decision, whatever it was.

The form is a Prefect RunInput, so the Prefect UI renders it (the description as markdown, a
switch for `approved`, text boxes for the rest) and the CLI resumes the run through the same
API. Validation lives in the model: an empty approver or reason is refused at resume time and
the run stays paused. Every flow with a gate (train-dev's pipeline assets, release, infra) asks
through `ask_for_approval` or records through `record_decision`, so a decision is in the audit
log before anything is done with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, pause_flow_run, suspend_flow_run, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled, Failed, State
from pydantic import Field, field_validator

import audit
from data_checks.validation import DataValidationReport
from records import lineage_tags
from records.workspace import ModelVersion
from reports.subgroups import candidate_vs_champion
from tasks.release.integration_tests import IntegrationReport
from tasks.training.model_card import FAIRNESS_FILE, PublishedCard
from tasks.training.pipeline import METRICS, GateResult

NOT_BLANK = r"\S"  # JSON-schema pattern: at least one non-space character


class Approval(RunInput):
    """A person's decision: the form the Prefect UI renders and the CLI fills.

    The constraints are in the JSON schema (not only in Python validators) because the Prefect
    server checks resume input against that schema: an empty approver or reason is refused
    at resume time and the run stays paused, instead of crashing the flow after resuming.
    """

    approved: bool = Field(default=False, description="Go ahead?")
    approver: str = Field(min_length=1, pattern=NOT_BLANK, description="Your name")
    reason: str = Field(min_length=1, pattern=NOT_BLANK, description="Why you decided so")

    @field_validator("approver", "reason")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class PromotionApproval(Approval):
    """Approve or reject promoting the candidate to the shared registry and prod."""


class InfraApproval(Approval):
    """Approve or reject applying an infrastructure plan to prod."""


def wait_for_approval(pack: str, timeout: int, poll_interval: int, key: str) -> PromotionApproval:
    """Suspend when this is a deployment's own run (no process is held while a person
    decides; on resume the run restarts from the top, its earlier steps cached or
    idempotent, and this call returns the stored decision); pause otherwise (a laptop run,
    or a subflow, which Prefect cannot suspend). `key` names the decision within the run."""
    form = PromotionApproval.with_initial_data(description=pack)
    if deployment.id is not None and flow_run.parent_flow_run_id is None:
        return suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    return pause_flow_run(
        wait_for_input=form, timeout=timeout, poll_interval=poll_interval, key=key
    )


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


def evidence_pack(
    candidate: ModelVersion,
    gate: GateResult,
    data_report: DataValidationReport,
    integration: IntegrationReport,
    links: dict[str, str],
    card: PublishedCard | None = None,
) -> str:
    """Markdown for the approval form: everything a reviewer needs on one page, the model
    card first (linked, to read before deciding) and the patient groups beside the overall
    metrics (from the evaluation's fairness.json, which scored the champion on the same rows)."""
    champion = gate.champion
    lineage = candidate.tags
    rows = "\n".join(
        f"| {name} | {gate.candidate[name]:.4f} | "
        f"{'' if champion is None else f'{champion[name]:.4f}'} |"
        for name in METRICS
    )
    checks = "\n".join(
        f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in integration.checks
    )
    link_lines = "\n".join(f"- {label}: {url}" for label, url in links.items())
    champion_note = (
        "Champion scored on the same test rows."
        if champion is not None
        else "No champion yet: this would be the first production model."
    )
    card_note = (
        f"Read the model card of {card.where} before deciding: {card.artifact_url} "
        f"(stored with the model as `{card.file}`; `{card.command}` prints it)."
        if card is not None
        else "No model card was published for this candidate."
    )
    fairness = Path(gate.evaluation_dir) / FAIRNESS_FILE
    groups = (
        candidate_vs_champion(json.loads(fairness.read_text()))
        if fairness.exists()
        else f"The evaluation wrote no {FAIRNESS_FILE}: no per-group figures."
    )
    return (
        f"## Promote {candidate.name} v{candidate.version} (test) "
        "to the shared registry and prod?\n\n"
        f"### Model card\n{card_note}\n\n"
        f"### Candidate vs champion\n{champion_note}\n\n"
        f"| metric | candidate | champion |\n|---|---|---|\n{rows}\n\n"
        f"### Patient groups: candidate vs champion\n{groups}\n\n"
        f"### Data gate\n{data_report.summary()}\n\n"
        f"### Integration tests against the test endpoint\n"
        f"p95 latency {integration.p95_ms:.1f} ms over {integration.requests} requests\n\n"
        f"| check | result | detail |\n|---|---|---|\n{checks}\n\n"
        f"### Lineage\n"
        f"data {lineage.get(lineage_tags.DATA_ASSET)}:{lineage.get(lineage_tags.DATA_VERSION)} "
        f"(sha256 {lineage.get(lineage_tags.DATA_SHA256, '')[:12]}), "
        f"commit {lineage.get(lineage_tags.GIT_COMMIT, '')[:12]}\n\n"
        f"### Links\n{link_lines}\n\n"
        "Set **approved**, your name as **approver** and a **reason**, then submit."
    )
