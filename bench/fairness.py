"""What the subgroup evaluation adds to the evaluate step, against fairlearn's own bootstrap.

The evaluate step (components/src/evaluate_model.py) judges each candidate per patient group
with `fairness.subgroup_report`: fairlearn's `MetricFrame` for the per-group metrics, and the
bootstrap intervals counted per cell with numpy (components/src/fairness.py says why). The peer
is what fairlearn itself offers for intervals: `MetricFrame(n_boot=..., ci_quantiles=...)`, here
with only the three rates the gate reads (recall, false-positive rate, selection rate) for the
candidate, over the same four attributes, rows and number of resamples. Ours computes more (AUC,
precision and calibration per group, the gaps and their intervals, and the champion on the same
rows), so the ratio understates the difference.

The rows are the demo's (`config/training.yaml` `demo_data`: 50,000 patients, seed 7; the
pipeline's 20% test split), the models the training component's `build_model` fit on the rest
(the champion with another seed). Each figure is the median of `--repeats` runs.

Goal: with the champion, still at least `MIN_SPEEDUP` times faster than the peer on the
candidate alone (the step's fairlearn-only bootstrap took minutes per run, which is why the
bootstrap counts cells itself).

Usage: `.venv/bin/python -m bench.fairness [--repeats 3] [--resamples N] [--no-fail]`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.model_selection import train_test_split

from bench.verdict import report_and_exit_code
from data_checks.readmission_schema import LABEL
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions

COMPONENTS = Path(__file__).resolve().parents[1] / "components" / "src"
PEER = "fairlearn MetricFrame(n_boot) (3 rates, candidate only)"
RESULTS = Path(__file__).resolve().parent / "results" / "fairness.json"
MIN_SPEEDUP = 20.0


@dataclass(frozen=True)
class FairnessBenchmark:
    """Every figure the run prints, as written to bench/results/fairness.json."""

    test_rows: int
    resamples: int
    peer_seconds: float
    candidate_seconds: float
    with_champion_seconds: float
    speedup_with_champion: float
    cpu_count: int
    load_average_at_start: float
    failures: tuple[str, ...]


def load_script(name: str) -> ModuleType:
    """Import a component script by name, its folder on the path as on Azure ML (the scripts
    import their siblings: `fairness`, `label_rule`)."""
    if str(COMPONENTS) not in sys.path:
        sys.path.insert(0, str(COMPONENTS))
    return importlib.import_module(name)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (config's default)")
    parser.add_argument("--no-fail", action="store_true", help="report a missed goal, exit 0")
    args = parser.parse_args(argv)
    load_average = os.getloadavg()[0]

    settings = load_training_settings()
    fairness, train_model, evaluate = (
        load_script(name) for name in ("fairness", "train_model", "evaluate_model")
    )
    limits = fairness.FairnessLimits(**settings.fairness.model_dump())
    if args.resamples:
        limits = replace(limits, bootstrap_resamples=args.resamples)

    data = generate_readmissions(settings.demo_data.rows, seed=settings.demo_data.seed)
    train, test = train_test_split(
        data,
        test_size=settings.pipeline.test_size,
        random_state=settings.pipeline.seed,
        stratify=data[LABEL],
    )
    features, labels = test.drop(columns=[LABEL]), test[LABEL]
    scored = []
    for seed in (settings.pipeline.seed, settings.pipeline.seed + 1):
        model = train_model.build_model(train.drop(columns=[LABEL]), seed=seed)
        model.fit(train.drop(columns=[LABEL]), train[LABEL])
        p = model.predict_proba(features)[:, 1]
        scored.append((p, evaluate.choose_threshold(labels, p)))
    candidate, champion = scored

    groups = fairness.patient_groups(features)

    def peer() -> None:
        predicted = fairness.predicted_labels(candidate[0], candidate[1])
        for attribute in fairness.SUBGROUPS:
            MetricFrame(
                metrics={
                    "recall": true_positive_rate,
                    "fpr": false_positive_rate,
                    "selection_rate": selection_rate,
                },
                y_true=labels.to_numpy(),
                y_pred=predicted,
                sensitive_features=groups[attribute].to_numpy(),
                n_boot=limits.bootstrap_resamples,
                ci_quantiles=[0.025, 0.975],
                random_state=limits.bootstrap_seed,
            )

    figures = {
        "ours, candidate": median_seconds(
            lambda: fairness.subgroup_report(features, labels, candidate, None, limits),
            args.repeats,
        ),
        "ours, candidate + champion": median_seconds(
            lambda: fairness.subgroup_report(features, labels, candidate, champion, limits),
            args.repeats,
        ),
    }
    peer_seconds = median_seconds(peer, 1)
    print(
        f"subgroup evaluation of {len(test):,} test rows, 4 attributes, "
        f"{limits.bootstrap_resamples} bootstrap resamples; peer: {PEER}"
    )
    for name, seconds in figures.items():
        print(f"  {name:<30} {seconds:7.2f} s   {peer_seconds / seconds:6.1f}x faster than peer")
    print(f"  {'peer (one run)':<30} {peer_seconds:7.2f} s")
    speedup = peer_seconds / figures["ours, candidate + champion"]
    result = FairnessBenchmark(
        test_rows=len(test),
        resamples=limits.bootstrap_resamples,
        peer_seconds=round(peer_seconds, 3),
        candidate_seconds=round(figures["ours, candidate"], 3),
        with_champion_seconds=round(figures["ours, candidate + champion"], 3),
        speedup_with_champion=round(speedup, 1),
        cpu_count=os.cpu_count() or 1,
        load_average_at_start=load_average,
        failures=(
            ()
            if speedup >= MIN_SPEEDUP
            else (f"with the champion {speedup:.1f}x faster than {PEER}, goal {MIN_SPEEDUP}x",)
        ),
    )
    return report_and_exit_code(result, RESULTS, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
