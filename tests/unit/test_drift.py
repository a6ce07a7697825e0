"""Drift statistics: what the drift monitor flags, what it leaves alone, and when it abstains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitoring.drift import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    PSI_EPSILON,
    DriftReport,
    DriftThresholds,
    categorical_psi,
    compute_drift,
    normalized_wasserstein,
    numeric_psi,
    plot_drift,
)
from synthetic_data.readmissions import PopulationShift, generate_readmissions

OLDER = PopulationShift(age_offset=15)
ELECTIVE_HEAVY = PopulationShift(
    admission_type_weights={"Emergency": 0.3, "Urgent": 0.2, "Elective": 0.5}
)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_readmissions(20_000, seed=11)


@pytest.fixture(scope="module")
def same_population() -> pd.DataFrame:
    return generate_readmissions(5_000, seed=12)


@pytest.fixture(scope="module")
def older_population() -> pd.DataFrame:
    return generate_readmissions(5_000, seed=12, shift=OLDER)


def feature(report: DriftReport, name: str):
    return next(f for f in report.features if f.feature == name)


def test_identical_population_does_not_drift(reference, same_population) -> None:
    report = compute_drift(reference, same_population)

    assert report.status == "no_drift"
    assert not report.drifted
    assert report.drifted_features == ()
    assert [f.feature for f in report.features] == list(NUMERIC_FEATURES + CATEGORICAL_FEATURES)
    assert all(f.value < 0.05 and f.psi < 0.02 for f in report.features)
    assert "No feature crossed its threshold" in report.message


def test_older_population_drifts_on_age_and_leaves_age_free_categories_alone(
    reference, older_population
) -> None:
    report = compute_drift(reference, older_population)

    assert report.status == "drift"
    assert "age" in report.drifted_features
    assert max(report.features, key=lambda f: f.value).feature == "age"
    assert feature(report, "age").metric == "normalized_wasserstein"
    # The generator gives these no dependence on age, so they must stay put...
    for name in ("gender", "admission_type", "primary_diagnosis_group"):
        assert not feature(report, name).drifted, name
    # ...while payer_code follows age across 65 (Medicare), a real, correlated shift.
    assert "payer_code" in report.drifted_features
    assert report.message.startswith(f"{len(report.drifted_features)} of 17 features drifted")


def test_different_admission_mix_drifts_admission_type_by_jensen_shannon(reference) -> None:
    current = generate_readmissions(5_000, seed=13, shift=ELECTIVE_HEAVY)

    report = compute_drift(reference, current)

    admission = feature(report, "admission_type")
    assert admission.kind == "categorical"
    assert admission.metric == "jensen_shannon"
    assert admission.drifted and admission.value > 0.2
    assert not feature(report, "age").drifted
    assert not feature(report, "gender").drifted


def test_concept_drift_is_invisible_to_feature_drift(reference) -> None:
    """Only the label's risk moves: the inputs look the same, so only performance monitoring
    can see this; the drift report must not pretend otherwise."""
    current = generate_readmissions(5_000, seed=14, shift=PopulationShift(risk_log_odds_offset=1))

    assert compute_drift(reference, current).status == "no_drift"


def test_too_few_current_rows_is_not_enough_data_not_a_false_alarm(
    reference, older_population
) -> None:
    report = compute_drift(reference, older_population.head(150), min_rows=200)

    assert report.status == "not_enough_data"
    assert not report.drifted
    assert report.features == () and report.drifted_features == ()
    assert report.current_rows == 150
    assert "150 rows" in report.message and "200" in report.message


def test_an_empty_capture_without_columns_is_not_enough_data(reference) -> None:
    report = compute_drift(reference, pd.DataFrame())

    assert report.status == "not_enough_data"


def test_min_rows_is_configurable(reference, older_population) -> None:
    window = older_population.head(150)

    assert compute_drift(reference, window, min_rows=100).status == "drift"
    assert compute_drift(reference, window, min_rows=151).status == "not_enough_data"


def test_prediction_drift_is_detected_when_probabilities_shift(reference, same_population):
    rng = np.random.default_rng(0)
    reference_scores = rng.beta(2.0, 8.0, 20_000)

    stable = compute_drift(
        reference,
        same_population,
        reference_predictions=reference_scores,
        current_predictions=rng.beta(2.0, 8.0, 5_000),
    )
    shifted = compute_drift(
        reference,
        same_population,
        reference_predictions=reference_scores,
        current_predictions=rng.beta(3.0, 6.0, 5_000),
    )

    assert feature(stable, "prediction").kind == "prediction"
    assert not feature(stable, "prediction").drifted
    assert stable.status == "no_drift"
    assert feature(shifted, "prediction").drifted
    assert feature(shifted, "prediction").psi > 0.1
    assert shifted.status == "drift"
    assert shifted.drifted_features == ("prediction",)
    assert "Predictions drifted" in shifted.message


def test_prediction_drift_needs_predictions_on_both_sides(reference, same_population) -> None:
    report = compute_drift(
        reference, same_population, current_predictions=np.full(len(same_population), 0.2)
    )

    assert all(f.kind != "prediction" for f in report.features)
    assert "no reference predictions" in report.message


def test_thresholds_are_configurable_per_kind_and_per_feature(reference, older_population):
    lenient_on_age = DriftThresholds(per_feature={"age": 2.0})
    strict = DriftThresholds(numeric=0.0, categorical=0.0)

    relaxed = compute_drift(reference, older_population, thresholds=lenient_on_age)
    everything = compute_drift(reference, older_population, thresholds=strict)

    assert feature(relaxed, "age").threshold == 2.0
    assert "age" not in relaxed.drifted_features
    assert feature(relaxed, "bmi").threshold == 0.1
    assert "bmi" in everything.drifted_features  # any nonzero distance crosses 0
    assert set(everything.drifted_features) == {
        f.feature for f in everything.features if f.value > 0
    }


def test_unknown_or_invalid_thresholds_are_refused_with_the_valid_names(reference):
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['agee'\].*'age'"):
        compute_drift(reference, reference, thresholds=DriftThresholds(per_feature={"agee": 1}))
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        DriftThresholds(numeric=-0.1)
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        DriftThresholds(per_feature={"age": math.nan})


def test_a_window_missing_a_feature_says_which(reference, same_population) -> None:
    with pytest.raises(ValueError, match=r"current window lacks feature column\(s\) \['bmi'\]"):
        compute_drift(reference, same_population.drop(columns=["bmi"]))


def test_categorical_psi_matches_a_hand_computed_example() -> None:
    reference = pd.Series(["A"] * 50 + ["B"] * 30 + ["C"] * 20)
    current = pd.Series(["A"] * 30 + ["B"] * 30 + ["C"] * 40)

    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0.0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert categorical_psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2408, abs=1e-4)


def test_numeric_psi_matches_a_hand_computed_example() -> None:
    # Deciles of 1..10 are 1.9, 2.8, ..., 9.1: one reference value per bin, 10% each.
    # The current window puts half its mass in the first bin and half in the last; the
    # eight empty bins count as PSI_EPSILON.
    reference = np.arange(1.0, 11.0)
    current = np.array([1.0] * 5 + [10.0] * 5)

    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (PSI_EPSILON - 0.1) * math.log(
        PSI_EPSILON / 0.1
    )
    assert numeric_psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert numeric_psi(reference, reference) == 0.0


def test_numeric_psi_bins_are_the_reference_deciles() -> None:
    rng = np.random.default_rng(1)
    reference, current = rng.normal(0, 1, 10_001), rng.normal(0.3, 1.2, 3_000)

    edges = np.quantile(reference, np.arange(1, 10) / 10)
    ref_share = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=10) / 10_001
    cur_share = np.bincount(np.searchsorted(edges, current, side="left"), minlength=10) / 3_000
    expected = float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))

    assert numeric_psi(reference, current) == pytest.approx(expected, rel=1e-9)


def test_normalized_wasserstein_is_scipys_distance_over_the_reference_std() -> None:
    rng = np.random.default_rng(2)
    continuous = rng.lognormal(1.0, 0.5, 7_000), rng.lognormal(1.1, 0.5, 3_000)
    discrete = rng.poisson(4.0, 7_000).astype(float), rng.poisson(4.5, 3_000).astype(float)

    for reference, current in (continuous, discrete):
        expected = stats.wasserstein_distance(reference, current) / np.std(reference)
        assert normalized_wasserstein(reference, current) == pytest.approx(expected, rel=1e-12)


def test_a_constant_reference_does_not_divide_by_zero() -> None:
    constant = np.full(500, 3.0)

    assert normalized_wasserstein(constant, constant) == 0.0
    assert normalized_wasserstein(constant, np.full(500, 3.001)) == pytest.approx(1.0)


def test_report_serializes_for_artifacts_and_events(reference, older_population) -> None:
    report = compute_drift(reference, older_population)

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["status"] == "drift"
    assert as_json["features"][0]["feature"] == "age"
    rows = report.table_rows()
    assert len(rows) == 17
    assert set(rows[0]) == {"feature", "kind", "metric", "value", "threshold", "psi", "drifted"}
    markdown = report.to_markdown()
    assert "| feature | kind | metric | value | threshold | PSI | drifted |" in markdown
    assert "| age | numeric | normalized_wasserstein |" in markdown
    assert markdown.count("**yes**") == len(report.drifted_features)


def test_plot_drift_writes_a_png(tmp_path: Path, reference, older_population) -> None:
    report = compute_drift(reference, older_population)
    empty = compute_drift(reference, older_population.head(10))

    written = plot_drift(report, tmp_path / "charts" / "drift.png")
    abstained = plot_drift(empty, tmp_path / "not_enough.png")

    for path in (written, abstained):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5_000
