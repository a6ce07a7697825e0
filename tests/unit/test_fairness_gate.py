"""The fairness gate's rules (components/src/fairness.py), on scores whose unfairness is known.

The scores here are made, not trained: a fair score separates readmitted from not-readmitted
patients equally well in every group, and an unfair one is the same score pushed down for one
group. The trained models and the component itself are in tests/components.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    true_positive_rate,
)

from data_checks.readmission_schema import FEATURES, LABEL
from synthetic_data.readmissions import generate_readmissions

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "components" / "src"))
import fairness  # noqa: E402
from fairness import (  # noqa: E402
    JUDGED,
    SUBGROUPS,
    TOO_SMALL,
    FairnessLimits,
    patient_groups,
    subgroup_report,
)

THRESHOLD = 0.5
LIMITS = FairnessLimits(
    max_recall_gap=0.10,
    max_equalized_odds_difference=0.10,
    max_gap_widening=0.05,
    min_group_size=1000,
    bootstrap_resamples=200,
    bootstrap_seed=15,
)


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_readmissions(20_000, seed=3)


def fair_scores(cohort: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Readmitted patients score ~0.6, the others ~0.35, whatever their group."""
    rng = np.random.default_rng(seed)
    labels = cohort[LABEL].to_numpy()
    return np.clip(0.35 + 0.25 * labels + rng.normal(0, 0.15, len(labels)), 0, 1)


def pushed_down(scores: np.ndarray, rows: np.ndarray, factor: float) -> np.ndarray:
    """The same scores, with `rows` (one group) multiplied by `factor`."""
    return np.where(rows, scores * factor, scores)


def report(
    cohort: pd.DataFrame,
    candidate: np.ndarray,
    champion: np.ndarray | None = None,
    limits: FairnessLimits = LIMITS,
) -> tuple[dict, fairness.FairnessVerdict]:
    features = cohort.drop(columns=[LABEL])
    return subgroup_report(
        features,
        cohort[LABEL],
        (candidate, THRESHOLD),
        (champion, THRESHOLD) if champion is not None else None,
        limits,
    )


def group_row(document: dict, attribute: str, group: str, model: str = "candidate") -> dict:
    rows = document["models"][model]["attributes"][attribute]["groups"]
    return next(row for row in rows if row["group"] == group)


def test_the_subgroups_are_columns_of_the_data_contract_or_the_age_band() -> None:
    assert set(SUBGROUPS) - {"age_band"} <= set(FEATURES)
    assert set(fairness.RISK_STRATA) <= set(SUBGROUPS)


def test_age_bands_follow_the_issue_18_44_45_64_65_79_80_plus() -> None:
    ages = pd.DataFrame(
        {"age": [18, 44, 45, 64, 65, 79, 80, 100], "gender": "F", "payer_code": "Medicare"}
        | {"admission_type": "Urgent"}
    )
    assert patient_groups(ages)["age_band"].tolist() == [
        "18-44",
        "18-44",
        "45-64",
        "45-64",
        "65-79",
        "65-79",
        "80+",
        "80+",
    ]


def test_a_fair_score_passes_and_the_report_is_plain_json(cohort: pd.DataFrame) -> None:
    document, verdict = report(cohort, fair_scores(cohort))

    assert verdict.passed, verdict.failures
    assert document["gate"] == {"passed": True, "failures": []}
    json.dumps(document, allow_nan=False)  # NaN would not survive a strict JSON reader
    assert document["schema_version"] == 1 and document["test_rows"] == len(cohort)
    for attribute in SUBGROUPS:
        rows = document["models"]["candidate"]["attributes"][attribute]["groups"]
        assert sum(row["n"] for row in rows) == len(cohort), attribute
        for row in rows:
            assert {"auc", "recall", "fpr", "precision", "calibration_gap", "recall_ci95"} <= set(
                row
            )


def test_a_group_whose_scores_are_pushed_down_fails_with_its_name_and_numbers(
    cohort: pd.DataFrame,
) -> None:
    medicaid = cohort["payer_code"].to_numpy() == "Medicaid"
    document, verdict = report(cohort, pushed_down(fair_scores(cohort), medicaid, 0.7))

    assert not verdict.passed
    recall_rule = [f for f in verdict.failures if "payer_code=Medicaid recall" in f]
    assert len(recall_rule) == 1, verdict.failures
    row = group_row(document, "payer_code", "Medicaid")
    assert f"recall {row['recall']:.3f}" in recall_rule[0]
    assert f"{row['recall_shortfall']['value']:.3f} below" in recall_rule[0]
    assert f"{row['n']} rows" in recall_rule[0] and "limit 0.100" in recall_rule[0]
    assert any("payer_code risk-adjusted equalized-odds difference" in f for f in verdict.failures)
    # only the payer was touched: no other attribute is blamed
    assert all(f.startswith("fairness: payer_code") for f in verdict.failures), verdict.failures


def test_groups_below_the_minimum_size_are_reported_but_not_gated(cohort: pd.DataFrame) -> None:
    self_pay = cohort["payer_code"].to_numpy() == "SelfPay"
    assert 1000 < self_pay.sum() < 1500  # between the two minimums below
    unfair = pushed_down(fair_scores(cohort), self_pay, 0.5)

    document, verdict = report(cohort, unfair, limits=limit(min_group_size=1500))

    row = group_row(document, "payer_code", "SelfPay")
    assert row["status"] == TOO_SMALL and row["recall"] < 0.3  # visibly bad, still not judged
    assert verdict.passed, verdict.failures
    assert any(
        entry.startswith("payer_code=SelfPay (too small to judge")
        for entry in document["not_judged"]
    )
    judged_gap = document["models"]["candidate"]["attributes"]["payer_code"]["gaps"]
    assert judged_gap["equal_opportunity_difference"]["value"] < 0.05  # SelfPay left out

    _, judged = report(cohort, unfair, limits=limit(min_group_size=1000))
    assert any("payer_code=SelfPay recall" in f for f in judged.failures), judged.failures


def test_lower_recall_explained_by_age_is_not_unfair_but_within_age_it_is(
    cohort: pd.DataFrame,
) -> None:
    """Old patients are flagged more: their scores are higher, as their risk is. The gate
    compares each group with patients of the same age band and admission type."""
    age = cohort["age"].to_numpy()
    by_age = np.clip(fair_scores(cohort) + 0.004 * (age - 61), 0, 1)
    document, verdict = report(cohort, by_age)
    medicare = group_row(document, "payer_code", "Medicare")  # mostly 65 and over
    private = group_row(document, "payer_code", "Private")  # mostly under 65
    assert medicare["recall"] - private["recall"] > 0.10  # a raw gap above the limit ...
    assert verdict.passed, verdict.failures  # ... that comparable patients explain

    private_rows = cohort["payer_code"].to_numpy() == "Private"
    _, verdict = report(cohort, pushed_down(by_age, private_rows, 0.75))
    assert any("payer_code=Private recall" in f for f in verdict.failures), verdict.failures


def test_a_candidate_may_not_widen_a_gap_against_the_champion(cohort: pd.DataFrame) -> None:
    """Absolute limits out of the way (1.0): only the comparison with the champion can fail."""
    lenient = limit(max_recall_gap=1.0, max_equalized_odds_difference=1.0)
    champion = fair_scores(cohort)
    medicaid = cohort["payer_code"].to_numpy() == "Medicaid"
    candidate = pushed_down(champion, medicaid, 0.8)

    document, verdict = report(cohort, candidate, champion, lenient)

    assert not verdict.passed
    widened = document["widening"]["payer_code"]["adjusted_equal_opportunity_difference"]
    assert widened["widening"]["value"] > 0.05
    assert widened["widening"]["value"] == pytest.approx(widened["candidate"] - widened["champion"])
    low, high = widened["widening"]["ci95"]
    assert low <= widened["widening"]["value"] <= high
    message = next(f for f in verdict.failures if "adjusted equal opportunity difference" in f)
    assert message.startswith("fairness: payer_code")
    assert f"{widened['candidate']:.3f} widens the champion's {widened['champion']:.3f}" in message
    assert all("widens the champion's" in f for f in verdict.failures)

    # the other way round, the gap narrows: nothing to object to
    _, narrowing = report(cohort, champion, candidate, lenient)
    assert narrowing.passed, narrowing.failures


def test_the_champion_itself_widens_nothing(cohort: pd.DataFrame) -> None:
    scores = fair_scores(cohort)
    document, verdict = report(cohort, scores, scores)
    assert verdict.passed, verdict.failures
    for attribute, gaps in document["widening"].items():
        for name, gap in gaps.items():
            undefined = attribute in fairness.RISK_STRATA and name.startswith("adjusted")
            zero = None if undefined else 0.0
            assert gap["widening"] == {"value": zero, "ci95": [zero, zero]}, (attribute, name)
    assert document["models"]["champion"] == document["models"]["candidate"]


def test_the_raw_gaps_are_fairlearns_over_the_judged_groups(cohort: pd.DataFrame) -> None:
    """The bootstrap counts cells itself (fairlearn's is too slow); at the sample it must agree
    with fairlearn's own gap functions and MetricFrame."""
    medicaid = cohort["payer_code"].to_numpy() == "Medicaid"
    scores = pushed_down(fair_scores(cohort), medicaid, 0.85)
    document, _ = report(cohort, scores)
    groups = patient_groups(cohort.drop(columns=[LABEL]))
    labels, predicted = cohort[LABEL].to_numpy(), (scores >= THRESHOLD).astype(int)
    for attribute in SUBGROUPS:
        section = document["models"]["candidate"]["attributes"][attribute]
        judged = {row["group"] for row in section["groups"] if row["status"] == JUDGED}
        rows = groups[attribute].isin(judged).to_numpy()
        y, p, g = labels[rows], predicted[rows], groups[attribute].to_numpy()[rows]
        expected = {
            "equal_opportunity_difference": equal_opportunity_difference(
                y, p, sensitive_features=g
            ),
            "equalized_odds_difference": equalized_odds_difference(y, p, sensitive_features=g),
            "demographic_parity_ratio": demographic_parity_ratio(y, p, sensitive_features=g),
        }
        for gap, value in expected.items():
            assert section["gaps"][gap]["value"] == pytest.approx(value), (attribute, gap)
        recall = MetricFrame(
            metrics=true_positive_rate,
            y_true=labels,
            y_pred=predicted,
            sensitive_features=groups[attribute].to_numpy(),
        ).by_group
        for row in section["groups"]:
            assert row["recall"] == pytest.approx(recall[row["group"]]), (attribute, row["group"])


def test_the_risk_factors_are_reported_raw_and_not_adjusted_against_themselves(
    cohort: pd.DataFrame,
) -> None:
    document, _ = report(cohort, fair_scores(cohort))
    attributes = document["models"]["candidate"]["attributes"]
    for attribute in SUBGROUPS:
        section = attributes[attribute]
        adjusted = section["gaps"]["adjusted_equalized_odds_difference"]["value"]
        assert section["risk_factor"] is (attribute in fairness.RISK_STRATA), attribute
        assert section["gaps"]["equalized_odds_difference"]["value"] is not None, attribute
        if section["risk_factor"]:
            assert adjusted is None, attribute
            assert {row["recall_shortfall"]["value"] for row in section["groups"]} == {None}
        else:
            assert adjusted is not None, attribute


def test_the_bootstrap_is_seeded(cohort: pd.DataFrame) -> None:
    scores = fair_scores(cohort)
    first, _ = report(cohort, scores)
    again, _ = report(cohort, scores)
    other, _ = report(cohort, scores, limits=limit(bootstrap_seed=16))
    gaps = lambda d: d["models"]["candidate"]["attributes"]["payer_code"]["gaps"]  # noqa: E731
    assert gaps(first) == gaps(again)
    assert gaps(first) != gaps(other)


def limit(**changes: float) -> FairnessLimits:
    return FairnessLimits(**(vars(LIMITS) | changes))  # type: ignore[arg-type]
