"""The model card: one markdown page per model version, kept in the model's own folder.

Layout (the sections, in this order; `mlops card`, the `model-card` Prefect artifact and the
evidence pack all show this text):

1. Intended use and users; 2. Out-of-scope uses; 3. Training data lineage (data asset, version,
sha256, rows in total / train / test, readmission rate); 4. Code lineage (pipeline run, train
run, commit, pipeline asset set); 5. Metrics overall (the quality gate's figures, candidate vs
champion) and per patient group with 95% bootstrap intervals (fairness.json); 6. Gates (quality
and fairness, with failures and limits); 7. Explanations (permutation importance as a table and
the picture beside the card, or a sentence saying there is none); 8. Known limitations;
9. Approval: "not decided" until a person decides, then who, when, why and the release run.

Why a documented markdown layout rather than `skops.card.Card`: skops' card is built around a
model object it pickles and a Hugging Face metadata header; ours is an MLflow folder registered
through two backends, and the card must be rendered from files the evaluate step wrote without
loading the model. Markdown in the model folder travels with the model wherever the folder is
copied (registration uploads it, promotion copies it into the shared registry).

The files of a registered version cannot change (Azure ML model versions are immutable), so the
stored card ends with the Approval section as it was at registration; `with_approval` fills it
from the registry version's approval record when the card is shown. Pure: no Prefect, no backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reports.subgroups import fairness_verdict, model_groups, number

CARD_DIR = "model_card"
"""The card's folder inside the MLflow model folder (beside MLmodel)."""
CARD_FILE = "model_card.md"
IMPORTANCE_PICTURE = "feature_importance.png"
APPROVAL_HEADING = "## 9. Approval"
NOT_DECIDED = (
    "Not decided: this version has not been approved for production. A promoted copy in the "
    "shared registry carries the approval (who, when, why)."
)
METRICS = ("auc", "f1", "precision", "recall", "accuracy", "brier", "threshold")

INTENDED_USE = """\
Estimates the probability that an adult inpatient is readmitted within 30 days of discharge,
from the 17 fields of the data contract (data_checks/readmission_schema.py: age, gender,
payer, admission type, discharge disposition, diagnosis group, prior admissions, length of
stay, counts of diagnoses, procedures, medications and lab results, vitals, HbA1c).
Intended users: care-coordination teams deciding which discharged patients get a follow-up
call or visit first; the label (probability at or above the model's threshold) marks
patients to review, not to exclude."""

OUT_OF_SCOPE = """\
- Decisions that deny, delay or reduce care, coverage or payment for a patient.
- Patients under 18, outpatient or emergency-only encounters, or hospitals whose records do
  not follow the data contract: the model never saw them.
- A score without a clinician's review: it ranks risk, it does not diagnose.
- Comparing payers or demographic groups: the figures per group are there to check the model,
  not to describe the groups."""

LIMITATIONS = """\
- Trained and evaluated on the data named above only; a population that drifts away from it
  (age mix, admission mix) is flagged by the drift monitor, not by the model.
- Readmission risk rises with age and differs by admission type, so one threshold flags older
  and emergency patients more often; the fairness gate compares each group with comparable
  patients (same age band and admission type), not with the overall rate.
- Groups with few test rows are reported as too small to judge and are not gated; their
  intervals are wide.
- Readmissions to other hospitals are missing from the records: the labels undercount.
- Probabilities are only as calibrated as the calibration gap per group says."""


@dataclass(frozen=True)
class TrainingData:
    """Where the training rows came from and what they held."""

    asset: str
    version: str
    sha256: str
    rows_total: int
    rows_train: int
    rows_test: int
    label_rate_train: float
    label_rate_test: float


@dataclass(frozen=True)
class CodeLineage:
    """Which run and which code produced the model."""

    workspace: str
    pipeline_run_id: str
    train_run_id: str
    git_commit: str
    pipeline_assets: str
    pipeline_assets_from: str
    tracking_url: str


@dataclass(frozen=True)
class Evaluation:
    """The evaluate step's output: metrics.json, gate.json, fairness.json (None when the
    evaluation predates it), feature_importance.json (None when absent) and whether the
    importance picture was copied beside the card."""

    metrics: Mapping[str, Any]
    gate: Mapping[str, Any]
    fairness: Mapping[str, Any] | None
    importance: Mapping[str, float] | None
    has_picture: bool


@dataclass(frozen=True)
class CardApproval:
    """A person's decision on a version, as the registry and the audit trail hold it."""

    approver: str
    reason: str
    decided_at: str
    release_run: str
    registry_version: str


def render_model_card(
    model_name: str, data: TrainingData, code: CodeLineage, evaluation: Evaluation
) -> str:
    """The card as stored with the model: every section, the approval still undecided."""
    return "\n\n".join(
        (
            f"# Model card: {model_name}",
            f"Trained by pipeline run `{code.pipeline_run_id}` in workspace `{code.workspace}`. "
            "Layout: reports/model_card.py.",
            f"## 1. Intended use and users\n\n{INTENDED_USE}",
            f"## 2. Out-of-scope uses\n\n{OUT_OF_SCOPE}",
            _data_section(data),
            _code_section(code),
            _metrics_section(evaluation),
            _gates_section(evaluation),
            _explanations_section(evaluation),
            f"## 8. Known limitations\n\n{LIMITATIONS}",
            f"{APPROVAL_HEADING}\n\n{NOT_DECIDED}\n",
        )
    )


def with_approval(card: str, approval: CardApproval | None) -> str:
    """The card with its Approval section filled from the decision (unchanged when None)."""
    if approval is None:
        return card
    head, found, _ = card.partition(APPROVAL_HEADING)
    if not found:
        head = card.rstrip() + "\n\n"
    return (
        f"{head}{APPROVAL_HEADING}\n\n"
        f"Approved for production by **{approval.approver}** at {approval.decided_at}: "
        f"{approval.reason}\n\n"
        f"Promoted as `{approval.registry_version}` by release run `{approval.release_run}`.\n"
    )


def titled(card: str, where: str) -> str:
    """The card with the version and the store it was read from above it (the stored card
    cannot name its version: it is written before registration assigns one)."""
    return f"> {where}\n\n{card}"


def _data_section(data: TrainingData) -> str:
    return (
        "## 3. Training data lineage\n\n"
        "| data asset | version | sha256 | rows | train rows | test rows "
        "| readmission rate (train) | readmission rate (test) |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {data.asset} | {data.version} | `{data.sha256}` | {data.rows_total} "
        f"| {data.rows_train} | {data.rows_test} | {data.label_rate_train:.4f} "
        f"| {data.label_rate_test:.4f} |"
    )


def _code_section(code: CodeLineage) -> str:
    return (
        "## 4. Code lineage\n\n"
        f"- pipeline run `{code.pipeline_run_id}`, train step run `{code.train_run_id}` "
        f"({code.tracking_url})\n"
        f"- commit `{code.git_commit}`\n"
        f"- pipeline assets `{code.pipeline_assets}` from `{code.pipeline_assets_from}`"
    )


def _metrics_section(evaluation: Evaluation) -> str:
    metrics = evaluation.metrics
    champion = metrics.get("champion")
    rows = "\n".join(
        f"| {name} | {number(metrics['candidate'][name], 4)} "
        f"| {number(champion[name], 4) if champion else 'n/a'} |"
        for name in METRICS
        if name in metrics["candidate"]
    )
    overall = (
        f"### Overall ({metrics['test_rows']} held-out test rows)\n\n"
        f"| metric | this model | champion on the same rows |\n|---|---|---|\n{rows}"
    )
    if evaluation.fairness is None:
        groups = "No per-group evaluation was recorded for this model (no fairness.json)."
    else:
        groups = model_groups(evaluation.fairness)
    return f"## 5. Metrics\n\n{overall}\n\n### Per patient group\n\n{groups}"


def _gates_section(evaluation: Evaluation) -> str:
    gate = evaluation.gate
    failures = "\n".join(f"- {f}" for f in gate["failures"]) or "- none"
    thresholds = ", ".join(f"{k} {v}" for k, v in gate["thresholds"].items())
    fairness = (
        fairness_verdict(evaluation.fairness)
        if evaluation.fairness is not None
        else "Fairness gate: not run for this model (no fairness.json)."
    )
    return (
        "## 6. Gates\n\n"
        f"Quality and fairness gate: **{'passed' if gate['passed'] else 'FAILED'}** "
        f"(compared with a champion: {gate['compared_with_champion']}).\n\n"
        f"{failures}\n\nThresholds: {thresholds}\n\n{fairness}"
    )


def _explanations_section(evaluation: Evaluation) -> str:
    if evaluation.importance is None:
        return (
            "## 7. Explanations\n\nThe evaluation recorded no global feature importance for "
            "this model."
        )
    ranked = sorted(evaluation.importance.items(), key=lambda item: item[1], reverse=True)
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in ranked)
    picture = (
        f"![Permutation feature importance]({IMPORTANCE_PICTURE})"
        if evaluation.has_picture
        else "The evaluation wrote no importance picture."
    )
    return (
        "## 7. Explanations\n\n"
        "Global: permutation importance on held-out rows (the AUC lost when a feature is "
        "shuffled; the whole pipeline, preprocessing included, is what is measured).\n\n"
        f"| feature | AUC drop |\n|---|---|\n{rows}\n\n{picture} "
        f"(`{IMPORTANCE_PICTURE}` beside this card)"
    )
