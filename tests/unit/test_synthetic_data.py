"""What the synthetic readmission data promises to every stage that trains or tests on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from data_checks.readmission_schema import (
    ALL_COLUMNS,
    CATEGORICAL_COLUMNS,
    FEATURES,
    LABEL,
    NUMERIC_COLUMNS,
)
from synthetic_data.readmissions import PopulationShift, generate_readmissions

REPO_ROOT = Path(__file__).resolve().parents[2]
CATEGORICAL_NAMES = [c.name for c in CATEGORICAL_COLUMNS]
NUMERIC_NAMES = [c.name for c in NUMERIC_COLUMNS]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return generate_readmissions(2_000, seed=11)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    """Large enough for model-quality and rate checks to be stable."""
    return generate_readmissions(30_000, seed=3)


def holdout_auc(model: object, frame: pd.DataFrame, labels: np.ndarray) -> float:
    train = np.arange(len(frame)) < int(0.8 * len(frame))
    model.fit(frame[train], labels[train])  # type: ignore[attr-defined]
    scores = model.predict_proba(frame[~train])[:, 1]  # type: ignore[attr-defined]
    return float(roc_auc_score(labels[~train], scores))


def boosted_trees() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)


def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(FEATURES)].astype({name: "category" for name in CATEGORICAL_NAMES})


def test_columns_are_the_contract_columns_in_order(rows: pd.DataFrame) -> None:
    assert tuple(rows.columns) == ALL_COLUMNS
    assert len(rows) == 2_000


def test_integers_are_int64_measurements_are_float64_to_one_decimal(rows: pd.DataFrame) -> None:
    for column in NUMERIC_COLUMNS:
        values = rows[column.name]
        if column.integer:
            assert values.dtype == np.int64, column.name
        else:
            assert values.dtype == np.float64, column.name
            assert np.allclose(values, values.round(1)), column.name
    assert rows[LABEL].dtype == np.int64


def test_categories_are_plain_strings(rows: pd.DataFrame) -> None:
    for name in CATEGORICAL_NAMES:
        assert pd.api.types.is_string_dtype(rows[name]) or rows[name].dtype == object, name
        assert all(type(value) is str for value in rows[name]), name


def test_every_value_is_inside_the_contract(rows: pd.DataFrame) -> None:
    assert not rows.isna().any().any()
    for column in NUMERIC_COLUMNS:
        values = rows[column.name]
        assert values.between(column.minimum, column.maximum).all(), column.name
    for column in CATEGORICAL_COLUMNS:
        assert set(rows[column.name]) <= set(column.values), column.name
    assert set(rows[LABEL]) == {0, 1}


def test_the_same_seed_gives_the_identical_frame() -> None:
    first = generate_readmissions(500, seed=7)
    pd.testing.assert_frame_equal(first, generate_readmissions(500, seed=7))
    assert not first.equals(generate_readmissions(500, seed=8))


def test_readmission_rate_is_between_15_and_25_percent(cohort: pd.DataFrame) -> None:
    assert 0.15 <= cohort[LABEL].mean() <= 0.25


def test_features_are_correlated_like_a_real_cohort(cohort: pd.DataFrame) -> None:
    elderly = cohort["age"] >= 75
    young = cohort["age"] < 45
    assert cohort.loc[elderly, "num_diagnoses"].mean() > cohort.loc[young, "num_diagnoses"].mean()
    assert (
        cohort.loc[elderly, "num_medications"].mean() > cohort.loc[young, "num_medications"].mean()
    )
    stay = cohort.groupby("admission_type")["length_of_stay_days"].mean()
    assert stay["Emergency"] > stay["Elective"]


def test_boosted_trees_learn_the_label_and_shuffled_labels_teach_nothing(
    cohort: pd.DataFrame,
) -> None:
    features = as_categories(cohort)
    labels = cohort[LABEL].to_numpy()
    shuffled = np.random.default_rng(0).permutation(labels)

    real_auc = holdout_auc(boosted_trees(), features, labels)
    shuffled_auc = holdout_auc(boosted_trees(), features, shuffled)

    assert 0.72 <= real_auc <= 0.88
    assert 0.44 <= shuffled_auc <= 0.56
    assert real_auc - shuffled_auc > 0.15


def test_boosted_trees_beat_logistic_regression(cohort: pd.DataFrame) -> None:
    labels = cohort[LABEL].to_numpy()
    logistic = make_pipeline(
        ColumnTransformer(
            [
                ("numbers", StandardScaler(), NUMERIC_NAMES),
                ("codes", OneHotEncoder(), CATEGORICAL_NAMES),
            ]
        ),
        LogisticRegression(max_iter=2_000),
    )
    trees_auc = holdout_auc(boosted_trees(), as_categories(cohort), labels)
    logistic_auc = holdout_auc(logistic, cohort[list(FEATURES)], labels)
    assert trees_auc > logistic_auc + 0.015


def test_age_offset_makes_patients_older_within_the_contract() -> None:
    base = generate_readmissions(5_000, seed=1)
    older = generate_readmissions(5_000, seed=1, shift=PopulationShift(age_offset=15))
    assert older["age"].mean() > base["age"].mean() + 10
    assert older["age"].max() <= 100
    assert older[LABEL].mean() > base[LABEL].mean()


def test_admission_weights_change_the_admission_mix() -> None:
    mix = {"Emergency": 0.8, "Urgent": 0.15, "Elective": 0.05}
    shifted = generate_readmissions(
        5_000, seed=1, shift=PopulationShift(admission_type_weights=mix)
    )
    shares = shifted["admission_type"].value_counts(normalize=True)
    for admission_type, weight in mix.items():
        assert shares[admission_type] == pytest.approx(weight, abs=0.02)


def test_risk_offset_changes_readmissions_but_no_feature() -> None:
    base = generate_readmissions(5_000, seed=1)
    riskier = generate_readmissions(5_000, seed=1, shift=PopulationShift(risk_log_odds_offset=1.0))
    pd.testing.assert_frame_equal(base[list(FEATURES)], riskier[list(FEATURES)])
    assert riskier[LABEL].mean() > base[LABEL].mean() + 0.08


def test_unknown_admission_type_is_rejected_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="Elective"):
        generate_readmissions(10, shift=PopulationShift(admission_type_weights={"Walk-in": 1.0}))


def test_cli_writes_a_shifted_csv(tmp_path: Path) -> None:
    out = tmp_path / "data" / "shifted.csv"
    command = [
        sys.executable,
        "-m",
        "synthetic_data.readmissions",
        "--rows",
        "1000",
        "--seed",
        "4",
        "--out",
        str(out),
        "--age-offset",
        "10",
        "--admission-mix",
        "Emergency=0.9,Urgent=0.1,Elective=0",
    ]
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    written = pd.read_csv(out)
    assert tuple(written.columns) == ALL_COLUMNS
    assert len(written) == 1_000
    assert "Elective" not in set(written["admission_type"])
    expected = generate_readmissions(
        1_000,
        seed=4,
        shift=PopulationShift(
            age_offset=10, admission_type_weights={"Emergency": 0.9, "Urgent": 0.1, "Elective": 0}
        ),
    )
    pd.testing.assert_series_equal(written["age"], expected["age"])
