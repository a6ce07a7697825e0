"""The model card and the evidence pack's patient groups, rendered from a real fairness.json.

tests/fixtures/model_card/fairness.json is what components/src/fairness.py's `subgroup_report`
wrote for made-up candidate and champion scores on 10,000 synthetic rows (min_group_size 700,
so SelfPay's 661 rows are too small to judge). The flows that write and promote cards are in
tests/integration (test_train_dev.py, test_release.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import backends
from data_checks.validation import DataValidationReport
from mlops_cli.main import app
from records import lineage_tags
from records.audit import AuditRecord
from records.workspace import ModelVersion
from reports.model_card import (
    CARD_DIR,
    CARD_FILE,
    NOT_DECIDED,
    CardApproval,
    CodeLineage,
    Evaluation,
    TrainingData,
    render_model_card,
    with_approval,
)
from tasks.release.approval import evidence_pack
from tasks.release.integration_tests import CheckResult, IntegrationReport
from tasks.training.model_card import PublishedCard
from tasks.training.pipeline import GateResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_card"
FAIRNESS = json.loads((FIXTURES / "fairness.json").read_text())
ATTRIBUTES = {
    "gender": ("F", "M"),
    "age_band": ("18-44", "45-64", "65-79", "80+"),
    "payer_code": ("Medicaid", "Medicare", "Private", "SelfPay"),
    "admission_type": ("Elective", "Emergency", "Urgent"),
}
METRICS = {
    "candidate": {
        "auc": 0.88,
        "f1": 0.61,
        "precision": 0.52,
        "recall": 0.75,
        "accuracy": 0.82,
        "brier": 0.11,
        "threshold": 0.5,
    },
    "champion": {
        "auc": 0.86,
        "f1": 0.58,
        "precision": 0.50,
        "recall": 0.71,
        "accuracy": 0.80,
        "brier": 0.12,
        "threshold": 0.5,
    },
    "test_rows": 10_000,
}
GATE = {
    "passed": True,
    "failures": [],
    "thresholds": {"min_auc": 0.7, "min_f1": 0.3, "max_brier": 0.2, "max_recall_gap": 0.1},
    "compared_with_champion": True,
}
DATA = TrainingData("readmissions", "3", "ab" * 32, 50_000, 40_000, 10_000, 0.1899, 0.1899)
CODE = CodeLineage(
    workspace="mlw-readmission-dev",
    pipeline_run_id="run-123",
    train_run_id="train-456",
    git_commit="0123456789abcdef",
    pipeline_assets="digest-789",
    pipeline_assets_from="mlw-readmission-dev",
    tracking_url="sqlite:///mlflow.db",
)


def card_text(fairness: dict | None = FAIRNESS, importance: dict | None = None) -> str:
    return render_model_card(
        "readmission",
        DATA,
        CODE,
        Evaluation(METRICS, GATE, fairness, importance, has_picture=importance is not None),
    )


def pack(tmp_path: Path, card: PublishedCard | None) -> str:
    (tmp_path / "fairness.json").write_text(json.dumps(FAIRNESS))
    gate = GateResult(True, (), METRICS["candidate"], METRICS["champion"], str(tmp_path))
    report = DataValidationReport(True, "data.csv", 50_000, 41, (), (), None)
    integration = IntegrationReport(True, (CheckResult("shape", True, "ok"),), 12.0, 200)
    candidate = ModelVersion("readmission", "4", "src", "run", {lineage_tags.DATA_ASSET: "x"})
    return evidence_pack(candidate, gate, report, integration, {"run": "http://x"}, card)


def test_the_evidence_pack_lists_every_group_candidate_vs_champion(tmp_path: Path) -> None:
    card = PublishedCard(
        "readmission v4 in workspace mlw-test (test)",
        f"{CARD_DIR}/{CARD_FILE}",
        "http://ui/artifacts/artifact/abc",
        "mlops card readmission 4 --environment test",
    )
    text = pack(tmp_path, card)

    for attribute, groups in ATTRIBUTES.items():
        assert f"#### {attribute}\n" in text
        for group in groups:
            assert f"| {group} |" in text
    medicaid = next(
        g
        for g in FAIRNESS["models"]["candidate"]["attributes"]["payer_code"]["groups"]
        if g["group"] == "Medicaid"
    )
    old = next(
        g
        for g in FAIRNESS["models"]["champion"]["attributes"]["payer_code"]["groups"]
        if g["group"] == "Medicaid"
    )
    low, high = medicaid["recall_ci95"]
    assert (
        f"| Medicaid | {medicaid['n']} | judged | {medicaid['recall']:.3f} [{low:.3f}, "
        f"{high:.3f}] | {old['recall']:.3f} | {medicaid['recall'] - old['recall']:+.3f} |"
    ) in text
    widening = FAIRNESS["widening"]["payer_code"]["equalized_odds_difference"]["widening"]
    assert "| equalized-odds difference | " in text and f"{widening['value']:.3f}" in text
    assert "Not judged: payer_code=SelfPay (too small to judge: 661 rows" in text
    assert "Fairness gate: **passed**" in text
    # The card comes first, so the reviewer reads it before the figures.
    assert text.index("http://ui/artifacts/artifact/abc") < text.index("#### gender")
    assert "mlops card readmission 4 --environment test" in text


def test_the_evidence_pack_says_when_there_are_no_group_figures(tmp_path: Path) -> None:
    gate = GateResult(True, (), METRICS["candidate"], None, str(tmp_path))
    report = DataValidationReport(True, "data.csv", 10, 41, (), (), None)
    integration = IntegrationReport(True, (), 1.0, 1)
    candidate = ModelVersion("readmission", "1", "src", "run")
    text = evidence_pack(candidate, gate, report, integration, {}, None)
    assert "wrote no fairness.json: no per-group figures" in text
    assert "No model card was published" in text


def test_the_model_card_names_data_lineage_metrics_groups_and_gates() -> None:
    text = card_text(importance={"age": 0.12, "num_prior_admissions": 0.05})

    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## 1. Intended use and users",
        "## 2. Out-of-scope uses",
        "## 3. Training data lineage",
        "## 4. Code lineage",
        "## 5. Metrics",
        "## 6. Gates",
        "## 7. Explanations",
        "## 8. Known limitations",
        "## 9. Approval",
    ]
    assert f"| readmissions | 3 | `{'ab' * 32}` | 50000 | 40000 | 10000 | 0.1899 | 0.1899 |" in text
    assert "run-123" in text and "0123456789abcdef" in text and "digest-789" in text
    assert "| auc | 0.8800 | 0.8600 |" in text
    for groups in ATTRIBUTES.values():
        for group in groups:
            assert f"| {group} |" in text
    eighty = FAIRNESS["models"]["candidate"]["attributes"]["age_band"]["groups"][3]
    low, high = eighty["recall_ci95"]
    assert f"| {eighty['recall']:.3f} [{low:.3f}, {high:.3f}] |" in text
    assert "Fairness gate: **passed**" in text
    assert "| age | 0.1200 |" in text and "![Permutation feature importance]" in text
    assert NOT_DECIDED in text


def test_a_card_without_fairness_or_importance_says_so() -> None:
    text = card_text(fairness=None, importance=None)
    assert "No per-group evaluation was recorded for this model" in text
    assert "Fairness gate: not run for this model" in text
    assert "recorded no global feature importance" in text


def test_the_approval_replaces_the_undecided_section() -> None:
    approval = CardApproval("alice", "fair and better", "2026-01-02T03:04:05+00:00", "r1", "v7")
    text = with_approval(card_text(), approval)
    assert NOT_DECIDED not in text
    assert text.count("## 9. Approval") == 1
    assert "**alice** at 2026-01-02T03:04:05+00:00: fair and better" in text
    assert with_approval(card_text(), None) == card_text()


def test_mlops_card_prints_the_registry_card_with_its_approval(
    mlops_root: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    (model_dir / CARD_DIR).mkdir(parents=True)
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / CARD_DIR / CARD_FILE).write_text(card_text())
    dev = backends.workspace("dev")
    registered = dev.register_model(
        "readmission", str(model_dir), "", {lineage_tags.PIPELINE_RUN_ID: "run-123"}, "test"
    )
    backends.audit_trail().append(
        AuditRecord("approved", "alice", "readmission/v1 (test)", "fair", "release-run-1")
    )
    promoted = backends.shared_registry().promote(
        registered,
        dev.model_path(registered),
        {
            lineage_tags.SOURCE_WORKSPACE: dev.name,
            lineage_tags.APPROVED_BY: "alice",
            lineage_tags.APPROVAL_REASON: "fair",
            lineage_tags.RELEASE_FLOW_RUN_ID: "release-run-1",
        },
        "approved",
    )
    registry_name = backends.shared_registry().name

    printed = CliRunner().invoke(app, ["card", "readmission", promoted.version])
    assert printed.exit_code == 0, printed.output
    assert f"readmission v{promoted.version} in the shared registry {registry_name}" in (
        printed.output
    )
    assert "| readmissions | 3 |" in printed.output
    assert "Approved for production by **alice** at " in printed.output
    assert NOT_DECIDED not in printed.output

    in_dev = CliRunner().invoke(app, ["card", "readmission", "1", "--environment", "dev"])
    assert in_dev.exit_code == 0 and NOT_DECIDED in in_dev.output
    missing = CliRunner().invoke(app, ["card", "readmission", "9"])
    assert missing.exit_code == 1 and "not in the shared registry" in missing.output
