"""Score the candidate (and the champion, when there is one) on the same test set and gate it.

Writes metrics.json, gate.json and roc_pr.png to the `evaluation` output. The gate is a decision
the orchestrator enforces: thresholds on the candidate's own metrics, and, when a champion
exists, a comparison with it on exactly these rows. Scoring the champion here, not reading
its old metrics, is what makes the comparison fair.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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
    predicted = probabilities[None, :] >= grid[:, None]
    positive = labels.to_numpy().astype(bool)[None, :]
    true_pos = (predicted & positive).sum(axis=1)
    wrong = (predicted != positive).sum(axis=1)
    f1s = np.divide(2 * true_pos, 2 * true_pos + wrong, out=np.zeros(len(grid)), where=true_pos > 0)
    return float(grid[int(np.argmax(f1s))])


def metrics_for(labels: pd.Series, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = (probabilities >= threshold).astype(int)
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


def plot_feature_importance(
    model: Any, features: pd.DataFrame, labels: pd.Series, path: Path
) -> dict[str, float]:
    """Permutation importance (AUC drop) on up to 3,000 test rows: model-agnostic and honest
    about what the Pipeline, preprocessing included, actually relies on."""
    sample = features.sample(n=min(3_000, len(features)), random_state=0)
    result = permutation_importance(
        model, sample, labels.loc[sample.index], scoring="roc_auc", n_repeats=3, random_state=0
    )
    importance = dict(zip(sample.columns, result.importances_mean.tolist(), strict=True))
    ordered = sorted(importance.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.barh([name for name, _ in ordered], [value for _, value in ordered], color="#3b7dd8")
    ax.set_xlabel("AUC drop when the feature is shuffled")
    ax.set_title("Feature importance (permutation)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return importance


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--test_data", type=Path, required=True)
    parser.add_argument("--champion_model", type=Path, default=None)
    parser.add_argument("--min_auc", type=float, required=True)
    parser.add_argument("--min_f1", type=float, required=True)
    parser.add_argument("--max_brier", type=float, required=True)
    parser.add_argument("--champion_min_delta", type=float, required=True)
    parser.add_argument("--evaluation", type=Path, required=True)
    args = parser.parse_args()

    test = pd.read_parquet(args.test_data / "data.parquet")
    features, labels = test.drop(columns=[LABEL]), test[LABEL]
    candidate_model = load(args.model)
    candidate_p = score(candidate_model, features)
    candidate = metrics_for(labels, candidate_p, choose_threshold(labels, candidate_p))
    curves = {"candidate": candidate_p}
    champion = None
    if args.champion_model is not None:
        champion_p = score(load(args.champion_model), features)
        champion = metrics_for(labels, champion_p, choose_threshold(labels, champion_p))
        curves["champion"] = champion_p
    result = gate(
        candidate, champion, args.min_auc, args.min_f1, args.max_brier, args.champion_min_delta
    )

    out = args.evaluation
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"candidate": candidate, "champion": champion, "test_rows": len(test)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "gate.json").write_text(json.dumps(result, indent=2))
    plot_curves(labels, curves, out / "roc_pr.png")
    plot_calibration(labels, curves, out / "calibration.png")
    importance = plot_feature_importance(
        candidate_model, features, labels, out / "feature_importance.png"
    )
    (out / "feature_importance.json").write_text(json.dumps(importance, indent=2))
    with mlflow.start_run():
        mlflow.log_metrics({f"test_{k}": v for k, v in candidate.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test_{k}": v for k, v in champion.items()})
        mlflow.log_metric("gate_passed", int(result["passed"]))
        for picture in ("roc_pr.png", "calibration.png", "feature_importance.png"):
            mlflow.log_artifact(str(out / picture))
        mlflow.log_dict(result, "gate.json")
    print(json.dumps({"candidate": candidate, "gate": result}))


if __name__ == "__main__":
    main()
