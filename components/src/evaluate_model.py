"""Score the candidate (and the champion, when there is one) on the same test set and gate it.

The gate is a decision the orchestrator enforces: thresholds on the candidate's own metrics,
and, when a champion exists, a comparison with it on exactly these rows; then the fairness gate
(fairness.py): the same metrics per patient group, for both models, with limits on the gaps.
Scoring the champion here, not reading its old metrics, is what makes both comparisons fair.
A failed fairness rule is a gate failure like a low AUC: it is listed in gate.json's
`failures` (prefixed "fairness:"), so the flow that reads gate.json fails the run with the
groups and numbers and registers nothing; the step itself exits 0 either way, so its outputs
(the evidence) come home on both backends.

Writes to the `evaluation` output:

- metrics.json: {"candidate": {auc, f1, precision, recall, accuracy, brier, threshold},
  "champion": the same or null, "test_rows": n}. Registration tags the model with each of the
  candidate's figures as `test_<figure>` (records.lineage_tags.metric_tag, which this script
  cannot import: it runs in the training image), so `threshold` becomes the `test_threshold`
  tag (records.lineage_tags.TEST_THRESHOLD) from which deployments get MODEL_THRESHOLD. The
  keys "candidate" and "champion" name the two models' figures here and in fairness.json (read
  by tasks/training/pipeline.py and reports/), not the aliases of records/aliases.py.
  Labels are `probability >= threshold`: label_rule.py, the snapshot's one copy of the rule.
- gate.json: {"passed", "failures": [quality, then fairness], "thresholds": {quality limits,
  fairness limits}, "compared_with_champion", "fairness": {"passed", "failures", "report":
  "fairness.json"}}
- fairness.json: the subgroup report, below
- roc_pr.png, calibration.png
- feature_importance.png: global explanation for a reviewer, permutation importance of the
  candidate on up to 3,000 test rows: features ranked by the AUC lost when each is shuffled
  (5 shuffles each), with +-1 standard deviation over the shuffles; the model card embeds it.
  (Not SHAP: `shap` is not in the training environment.)
- feature_importance.json: {feature: mean AUC drop}, the numbers of that picture (what the
  model card's table reads); `importance_seconds` in MLflow is what computing them took

fairness.json, schema_version 1 (numbers undefined for a group, such as AUC with one outcome
only or a gap over fewer than two judged groups, are null; every ci95 is [low, high], the
2.5th and 97.5th percentiles of the bootstrap):

    schema_version: 1
    test_rows: int
    seconds: float                 time the subgroup evaluation took in this step
    subgroups: ["gender", "age_band", "payer_code", "admission_type"]
    adjusted_for: ["age_band", "admission_type"]   what "comparable patients" share
    limits: {max_recall_gap, max_equalized_odds_difference, max_gap_widening, min_group_size,
             bootstrap_resamples, bootstrap_seed}
    models:
      candidate, champion (null without one):
        threshold: float           the model's own decision threshold (max F1)
        overall: {n, positives, auc, recall, fpr, precision, selection_rate, mean_predicted,
                  observed_rate, calibration_gap}
        attributes:
          <attribute>:
            risk_factor: bool      age_band, admission_type: what comparable patients share,
                                   so their expected_*, recall_shortfall and adjusted_* are null
            groups: [{group, status: "judged" | "too small to judge" | "one outcome only",
                      n, positives, auc, recall, fpr, precision, selection_rate,
                      mean_predicted, observed_rate, calibration_gap (mean_predicted minus
                      observed_rate), recall_ci95, fpr_ci95, expected_recall, expected_fpr
                      (the rates of comparable patients), recall_shortfall: {value, ci95}
                      (expected_recall minus recall)}]
            gaps: {equal_opportunity_difference, equalized_odds_difference,
                   demographic_parity_ratio, adjusted_equal_opportunity_difference,
                   adjusted_equalized_odds_difference: {value, ci95}}   judged groups only
    widening: null without a champion, else
      {<attribute>: {<gap>: {candidate, champion, widening: {value, ci95}}}}   paired bootstrap
    gate: {passed, failures: [str]}
    not_judged: ["payer_code=SelfPay (too small to judge: 690 rows, 103 readmissions)", ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from fairness import (  # noqa: E402
    REPORT_FILE,
    SUBGROUPS,
    FairnessLimits,
    FairnessVerdict,
    subgroup_report,
)
from label_rule import predicted_labels  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

LABEL = "readmitted_30d"


def load(model_dir: Path) -> Any:
    """The sklearn model inside an MLflow model folder (a local path: no tracking call).

    Loaded once per folder: skops checks the trusted types on every load, ~1.5 s each.
    """
    return mlflow.sklearn.load_model(str(model_dir))


def score(model: Any, features: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities."""
    return model.predict_proba(features)[:, 1]


def choose_threshold(labels: pd.Series, probabilities: np.ndarray) -> float:
    """The decision threshold that maximizes F1, so F1/precision/recall describe a usable label."""
    grid = np.linspace(0.05, 0.95, 91)
    # F1 = 2TP / (2TP + FP + FN) at every threshold at once (0 when undefined, as
    # f1_score(zero_division=0)); 91 f1_score calls cost ~1 s of input validation
    predicted = predicted_labels(probabilities[None, :], grid[:, None]).astype(bool)
    positive = labels.to_numpy().astype(bool)[None, :]
    true_pos = (predicted & positive).sum(axis=1)
    wrong = (predicted != positive).sum(axis=1)
    f1s = np.divide(2 * true_pos, 2 * true_pos + wrong, out=np.zeros(len(grid)), where=true_pos > 0)
    return float(grid[int(np.argmax(f1s))])


def metrics_for(labels: pd.Series, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = predicted_labels(probabilities, threshold)
    return {
        "auc": float(roc_auc_score(labels, probabilities)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "brier": float(brier_score_loss(labels, probabilities)),
        "threshold": threshold,
    }


def plot_curves(labels: pd.Series, curves: dict[str, np.ndarray], path: Path) -> None:
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, probabilities in curves.items():
        RocCurveDisplay.from_predictions(labels, probabilities, name=name, ax=roc_ax)
        PrecisionRecallDisplay.from_predictions(labels, probabilities, name=name, ax=pr_ax)
    roc_ax.set_title("ROC")
    pr_ax.set_title("Precision-recall")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(labels: pd.Series, curves: dict[str, np.ndarray], path: Path) -> None:
    """Reliability diagram: the endpoint returns probabilities, so they must mean what they say."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, probabilities in curves.items():
        CalibrationDisplay.from_predictions(labels, probabilities, n_bins=10, name=name, ax=ax)
    ax.set_title("Calibration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


IMPORTANCE_ROWS = 3_000
IMPORTANCE_REPEATS = 5


def plot_feature_importance(
    model: Any, features: pd.DataFrame, labels: pd.Series, path: Path
) -> dict[str, float]:
    """Permutation importance (AUC drop) on up to 3,000 test rows, drawn for a reviewer: the
    features ranked by the AUC the candidate loses when that feature's values are shuffled
    across patients, each bar with its spread over the shuffles (+-1 standard deviation), so a
    difference smaller than the spread reads as no difference. Model-agnostic and honest about
    what the Pipeline, preprocessing included, actually relies on; `shap` is not in the
    training environment. Returns {feature: mean AUC drop}, what feature_importance.json holds
    and the model card reads."""
    sample = features.sample(n=min(IMPORTANCE_ROWS, len(features)), random_state=0)
    result = permutation_importance(
        model,
        sample,
        labels.loc[sample.index],
        scoring="roc_auc",
        n_repeats=IMPORTANCE_REPEATS,
        random_state=0,
    )
    means = dict(zip(sample.columns, result.importances_mean.tolist(), strict=True))
    spreads = dict(zip(sample.columns, result.importances_std.tolist(), strict=True))
    ordered = sorted(means, key=means.__getitem__)  # largest at the top of the chart
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.barh(
        ordered,
        [means[name] for name in ordered],
        xerr=[spreads[name] for name in ordered],
        color="#3b7dd8",
        ecolor="#333333",
        capsize=2,
    )
    ax.axvline(0, color="#888888", linewidth=0.8)
    ax.set_xlabel("AUC lost when the feature is shuffled (bar: mean, line: +-1 sd)")
    ax.set_title(
        f"What the candidate relies on: permutation importance\n"
        f"{len(sample):,} test rows, {IMPORTANCE_REPEATS} shuffles per feature",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return means


def gate(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    min_auc: float,
    min_f1: float,
    max_brier: float,
    champion_min_delta: float,
) -> dict:
    """Every failed condition is listed with its numbers, so a failed gate explains itself."""
    failures: list[str] = []
    if candidate["auc"] < min_auc:
        failures.append(f"AUC {candidate['auc']:.4f} is below the minimum {min_auc:.4f}")
    if candidate["f1"] < min_f1:
        failures.append(f"F1 {candidate['f1']:.4f} is below the minimum {min_f1:.4f}")
    if candidate["brier"] > max_brier:
        failures.append(f"Brier {candidate['brier']:.4f} is above the maximum {max_brier:.4f}")
    if champion is not None:
        needed = champion["auc"] + champion_min_delta
        if candidate["auc"] < needed:
            failures.append(
                f"AUC {candidate['auc']:.4f} does not reach the champion's "
                f"{champion['auc']:.4f} {champion_min_delta:+.4f} = {needed:.4f} "
                "on the same test set"
            )
    return {
        "passed": not failures,
        "failures": failures,
        "thresholds": {
            "min_auc": min_auc,
            "min_f1": min_f1,
            "max_brier": max_brier,
            "champion_min_delta": champion_min_delta,
        },
        "compared_with_champion": champion is not None,
    }


def with_fairness(result: dict, verdict: FairnessVerdict, limits: FairnessLimits) -> dict:
    """The quality gate's verdict with the fairness gate's failures and limits added: one
    verdict, so whatever enforces the quality gate enforces this one too."""
    return {
        **result,
        "passed": result["passed"] and verdict.passed,
        "failures": [*result["failures"], *verdict.failures],
        "thresholds": {
            **result["thresholds"],
            "max_recall_gap": limits.max_recall_gap,
            "max_equalized_odds_difference": limits.max_equalized_odds_difference,
            "max_gap_widening": limits.max_gap_widening,
            "min_group_size": limits.min_group_size,
        },
        "fairness": {
            "passed": verdict.passed,
            "failures": list(verdict.failures),
            "report": REPORT_FILE,
        },
    }


def fairness_metrics(report: dict) -> dict[str, float]:
    """The candidate's gaps per attribute as MLflow metrics (undefined gaps left out)."""
    attributes = report["models"]["candidate"]["attributes"]
    return {
        f"fairness_{attribute}_{gap}": estimate["value"]
        for attribute in SUBGROUPS
        for gap, estimate in attributes[attribute]["gaps"].items()
        if estimate["value"] is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--test_data", type=Path, required=True)
    parser.add_argument("--champion_model", type=Path, default=None)
    parser.add_argument("--min_auc", type=float, required=True)
    parser.add_argument("--min_f1", type=float, required=True)
    parser.add_argument("--max_brier", type=float, required=True)
    parser.add_argument("--champion_min_delta", type=float, required=True)
    parser.add_argument("--max_recall_gap", type=float, required=True)
    parser.add_argument("--max_equalized_odds_difference", type=float, required=True)
    parser.add_argument("--max_gap_widening", type=float, required=True)
    parser.add_argument("--min_group_size", type=int, required=True)
    parser.add_argument("--bootstrap_resamples", type=int, required=True)
    parser.add_argument("--bootstrap_seed", type=int, required=True)
    parser.add_argument("--evaluation", type=Path, required=True)
    args = parser.parse_args()
    limits = FairnessLimits(
        max_recall_gap=args.max_recall_gap,
        max_equalized_odds_difference=args.max_equalized_odds_difference,
        max_gap_widening=args.max_gap_widening,
        min_group_size=args.min_group_size,
        bootstrap_resamples=args.bootstrap_resamples,
        bootstrap_seed=args.bootstrap_seed,
    )

    test = pd.read_parquet(args.test_data / "data.parquet")
    features, labels = test.drop(columns=[LABEL]), test[LABEL]
    candidate_model = load(args.model)
    candidate_p = score(candidate_model, features)
    candidate = metrics_for(labels, candidate_p, choose_threshold(labels, candidate_p))
    curves = {"candidate": candidate_p}
    champion, champion_scored = None, None
    if args.champion_model is not None:
        champion_p = score(load(args.champion_model), features)
        champion = metrics_for(labels, champion_p, choose_threshold(labels, champion_p))
        curves["champion"] = champion_p
        champion_scored = (champion_p, champion["threshold"])
    result = gate(
        candidate, champion, args.min_auc, args.min_f1, args.max_brier, args.champion_min_delta
    )
    started = time.perf_counter()
    report, fairness = subgroup_report(
        features,
        labels,
        (candidate_p, candidate["threshold"]),
        champion_scored,
        limits,
    )
    report["seconds"] = round(time.perf_counter() - started, 3)
    result = with_fairness(result, fairness, limits)

    out = args.evaluation
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"candidate": candidate, "champion": champion, "test_rows": len(test)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "gate.json").write_text(json.dumps(result, indent=2))
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, allow_nan=False))
    plot_curves(labels, curves, out / "roc_pr.png")
    plot_calibration(labels, curves, out / "calibration.png")
    started = time.perf_counter()
    importance = plot_feature_importance(
        candidate_model, features, labels, out / "feature_importance.png"
    )
    importance_seconds = round(time.perf_counter() - started, 3)
    (out / "feature_importance.json").write_text(json.dumps(importance, indent=2))
    with mlflow.start_run():
        mlflow.log_metrics({f"test_{k}": v for k, v in candidate.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test_{k}": v for k, v in champion.items()})
        mlflow.log_metric("gate_passed", int(result["passed"]))
        mlflow.log_metric("importance_seconds", importance_seconds)
        mlflow.log_metrics(
            {
                **fairness_metrics(report),
                "fairness_gate_passed": int(fairness.passed),
                "fairness_seconds": report["seconds"],
            }
        )
        for picture in ("roc_pr.png", "calibration.png", "feature_importance.png"):
            mlflow.log_artifact(str(out / picture))
        mlflow.log_dict(result, "gate.json")
        mlflow.log_dict(report, REPORT_FILE)
    print(json.dumps({"candidate": candidate, "gate": result}))
    if not fairness.passed:  # loud in the step's log too; the flow fails the run on gate.json
        print(
            f"FAIRNESS GATE FAILED ({len(fairness.failures)} rule(s)); full report: "
            f"{out / REPORT_FILE}\n" + "\n".join(f"- {f}" for f in fairness.failures),
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
