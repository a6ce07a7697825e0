"""The shadow comparison's pairing and arithmetic (tasks/rollout/shadow.py), on collected rows
built by hand: which rows pair, what is left out, the figures, the groups and the bounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from records.serving import Capture
from settings import ShadowSettings
from synthetic_data.readmissions import generate_readmissions
from tasks.rollout.shadow import compare_answers, judge_shadow, markdown, patient_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "components" / "src"))
import fairness  # noqa: E402

LIMITS = ShadowSettings(
    max_label_disagreement=0.25, max_mean_probability_difference=0.15, min_pairs=4
)


def collected(deployment: str, answers: list[tuple[str, int, str, float, int]]) -> pd.DataFrame:
    """Rows as read_capture returns them: (request id, age, payer, probability, label)."""
    return pd.DataFrame(
        [
            {
                "age": age,
                "gender": "F",
                "payer_code": payer,
                "admission_type": "Emergency",
                Capture.PROBABILITY: p,
                Capture.LABEL: label,
                Capture.DEPLOYMENT: deployment,
                Capture.MODEL_VERSION: "1",
                Capture.MIRRORED: deployment == "green",
                Capture.TIMESTAMP: "2024-01-01T00:00:00Z",
                Capture.REQUEST_ID: rid,
            }
            for rid, age, payer, p, label in answers
        ]
    )


def test_pairs_join_on_the_correlation_id_and_measure_how_the_answers_differ() -> None:
    live = collected(
        "blue",
        [
            ("a", 30, "Medicare", 0.10, 0),
            ("b", 50, "Medicaid", 0.20, 0),
            ("c", 70, "Medicare", 0.60, 1),
            ("d", 85, "Private", 0.40, 0),
            ("only-live", 40, "Private", 0.30, 0),  # not mirrored: no pair
        ],
    )
    shadow = collected(
        "green",
        [
            ("d", 85, "Private", 0.90, 1),  # order does not matter
            ("a", 30, "Medicare", 0.12, 0),
            ("b", 50, "Medicaid", 0.20, 0),
            ("c", 70, "Medicare", 0.50, 1),
            ("lost", 60, "Medicare", 0.50, 1),  # its live row was not collected
            ("e", 33, "SelfPay", None, None),  # the copy failed: the error guardrail's job
        ],
    )

    comparison = compare_answers(live, shadow, top=2)

    assert comparison.pairs == 4
    assert comparison.unpaired == 1
    assert comparison.mismatched == 0
    assert comparison.label_agreement == pytest.approx(0.75)
    assert comparison.mean_probability_difference == pytest.approx((0.02 + 0 + 0.1 + 0.5) / 4)
    assert comparison.max_probability_difference == pytest.approx(0.5)
    assert [row["request id"] for row in comparison.most_divergent] == ["d", "c"]
    assert comparison.most_divergent[0]["live p"] == 0.4
    assert comparison.most_divergent[0]["shadow label"] == 1
    groups = {(g.attribute, g.group): g for g in comparison.by_group}
    assert groups[("age_band", "80+")].pairs == 1
    assert groups[("age_band", "80+")].label_disagreement == 1.0
    assert groups[("payer_code", "Medicare")].pairs == 2
    assert groups[("payer_code", "Medicare")].mean_probability_difference == pytest.approx(0.06)
    assert groups[("gender", "F")].pairs == 4


def test_rows_of_one_request_pair_by_position_and_differing_inputs_are_left_out() -> None:
    """A request of several rows pairs row by row; a 'pair' whose inputs differ (two requests
    batched under one correlation id) is not compared."""
    live = collected("blue", [("r", 30, "Medicare", 0.1, 0), ("r", 50, "Medicaid", 0.2, 0)])
    shadow = collected("green", [("r", 30, "Medicare", 0.1, 0), ("r", 51, "Medicaid", 0.9, 1)])

    comparison = compare_answers(live, shadow)

    assert (comparison.pairs, comparison.mismatched) == (1, 1)
    assert comparison.label_agreement == 1.0


def test_the_bounds_and_too_few_pairs() -> None:
    agreeing = collected("blue", [(str(i), 40 + i, "Private", 0.2, 0) for i in range(6)])
    flipped = collected("green", [(str(i), 40 + i, "Private", 0.8, 1) for i in range(6)])

    assert judge_shadow(compare_answers(agreeing, agreeing), LIMITS, "fail").healthy
    verdict = judge_shadow(compare_answers(agreeing, flipped), LIMITS, "fail")
    assert not verdict.healthy
    assert "labels disagree on 100.0% of 6 pairs > 25.0%" in verdict.reasons[0]
    assert "mean |Δp| 0.600 > 0.150" in verdict.reasons[1]

    few = compare_answers(agreeing.head(2), flipped.head(2))
    failed = judge_shadow(few, LIMITS, "fail")
    assert not failed.healthy and "2 mirrored requests paired" in failed.reasons[0]
    assert not judge_shadow(few, LIMITS, "judge").healthy  # judged on the 2: they disagree
    nothing = compare_answers(agreeing.head(0), flipped.head(0))
    assert nothing.pairs == 0 and judge_shadow(nothing, LIMITS, "judge").healthy


def test_the_report_shows_figures_groups_and_rows() -> None:
    live = collected("blue", [(str(i), 30 + 15 * i, "Private", 0.2, 0) for i in range(4)])
    shadow = collected("green", [(str(i), 30 + 15 * i, "Private", 0.7, 1) for i in range(4)])
    comparison = compare_answers(live, shadow)
    text = markdown(
        comparison, judge_shadow(comparison, LIMITS, "fail"), LIMITS, "blue", "green", "m:2"
    )
    assert "**Stopped**: shadow labels disagree on 100.0%" in text
    assert "| label agreement | 0.0% | at least 75.0% |" in text
    assert "| age_band | 65-79 | 1 | 100.0% | 0.500 |" in text
    assert "## The 4 most divergent rows" in text


def test_the_groups_are_the_evaluate_steps_fairness_groups() -> None:
    rows = generate_readmissions(500, seed=3)
    assert patient_groups(rows).equals(fairness.patient_groups(rows))
