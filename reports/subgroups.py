"""Patient groups as a reviewer reads them: the evaluate step's fairness.json as markdown tables.

fairness.json (components/src/evaluate_model.py's docstring has the schema) holds, on the same
test rows, every group's figures for the candidate and the champion, the largest between-group
gaps with bootstrap intervals, and how much wider each gap is than the champion's. The model
card shows the model's own figures; the evidence pack shows what the candidate changes against
the champion, group by group, so a reviewer sees the Medicaid recall beside the overall AUC.
Pure functions of the document: no Prefect, no backend, so they are tested on a fixture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

GAP_LABELS: Mapping[str, str] = {
    "equal_opportunity_difference": "equal-opportunity difference (recall)",
    "equalized_odds_difference": "equalized-odds difference",
    "demographic_parity_ratio": "demographic-parity ratio",
    "adjusted_equal_opportunity_difference": "risk-adjusted equal-opportunity difference",
    "adjusted_equalized_odds_difference": "risk-adjusted equalized-odds difference",
}


def number(value: float | None, digits: int = 3) -> str:
    """A figure, or "n/a" where fairness.json says it is undefined (null)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def interval(ci95: Sequence[float | None] | None) -> str:
    """A 95% bootstrap interval as `[low, high]`, or "" when there is none."""
    if not ci95 or ci95[0] is None or ci95[1] is None:
        return ""
    return f" [{ci95[0]:.3f}, {ci95[1]:.3f}]"


def estimate(section: Mapping[str, Any] | None) -> str:
    """`{value, ci95}` as `value [low, high]`."""
    if section is None:
        return "n/a"
    return number(section.get("value")) + interval(section.get("ci95"))


def fairness_verdict(report: Mapping[str, Any]) -> str:
    """The fairness gate's result in one paragraph, with its failures and the groups left out."""
    gate = report["gate"]
    lines = [f"Fairness gate: **{'passed' if gate['passed'] else 'FAILED'}**"]
    lines += [f"- {failure}" for failure in gate["failures"]]
    limits = report["limits"]
    lines.append(
        f"\nLimits: a group's recall at most {limits['max_recall_gap']} below comparable "
        f"patients' ({', '.join(report['adjusted_for'])}); risk-adjusted equalized-odds "
        f"difference at most {limits['max_equalized_odds_difference']}; no gap wider than the "
        f"champion's by more than {limits['max_gap_widening']}. Groups under "
        f"{limits['min_group_size']} test rows are reported, not judged."
    )
    if report["not_judged"]:
        lines.append("\nNot judged: " + "; ".join(report["not_judged"]))
    return "\n".join(lines)


def model_groups(report: Mapping[str, Any], model: str = "candidate") -> str:
    """One model's figures per group with their intervals, and its gaps per attribute (the
    model card's section)."""
    assessment = report["models"][model]
    overall = assessment["overall"]
    parts = [
        f"Overall on {overall['n']} test rows ({overall['positives']} readmissions), at the "
        f"model's threshold {number(assessment['threshold'])}: AUC {number(overall['auc'])}, "
        f"recall {number(overall['recall'])}, false-positive rate {number(overall['fpr'])}, "
        f"precision {number(overall['precision'])}, mean predicted "
        f"{number(overall['mean_predicted'])} vs observed {number(overall['observed_rate'])}."
    ]
    for attribute, section in assessment["attributes"].items():
        rows = "\n".join(
            f"| {g['group']} | {g['n']} | {g['positives']} | {g['status']} | {number(g['auc'])} "
            f"| {number(g['recall'])}{interval(g['recall_ci95'])} "
            f"| {number(g['fpr'])}{interval(g['fpr_ci95'])} | {number(g['precision'])} "
            f"| {number(g['calibration_gap'])} | {number(g['expected_recall'])} |"
            for g in section["groups"]
        )
        gaps = "; ".join(
            f"{GAP_LABELS[name]} {estimate(value)}" for name, value in section["gaps"].items()
        )
        parts.append(
            f"#### {attribute}{' (risk factor)' if section['risk_factor'] else ''}\n\n"
            "| group | rows | readmissions | status | AUC | recall [95% CI] | FPR [95% CI] "
            "| precision | calibration gap | expected recall |\n"
            f"|---|---|---|---|---|---|---|---|---|---|\n{rows}\n\nGaps: {gaps}"
        )
    return "\n\n".join(parts)


def candidate_vs_champion(report: Mapping[str, Any]) -> str:
    """Per group, what the candidate changes against the champion on the same rows, and each
    gap's widening with its paired interval (the evidence pack's section)."""
    candidate = report["models"]["candidate"]
    champion = report["models"]["champion"]
    if champion is None:
        return (
            "No champion yet: the candidate's own figures per group.\n\n"
            + model_groups(report)
            + "\n\n"
            + fairness_verdict(report)
        )
    parts = [
        f"Both models scored on the same {report['test_rows']} test rows, each at its own "
        f"threshold (candidate {number(candidate['threshold'])}, champion "
        f"{number(champion['threshold'])}). Intervals are 95% bootstrap intervals."
    ]
    for attribute, section in candidate["attributes"].items():
        theirs = {g["group"]: g for g in champion["attributes"][attribute]["groups"]}
        rows = []
        for group in section["groups"]:
            old = theirs.get(group["group"], {})
            rows.append(
                f"| {group['group']} | {group['n']} | {group['status']} "
                f"| {number(group['recall'])}{interval(group['recall_ci95'])} "
                f"| {number(old.get('recall'))} | {_delta(group['recall'], old.get('recall'))} "
                f"| {estimate(group['recall_shortfall'])} "
                f"| {number(group['fpr'])} | {number(old.get('fpr'))} "
                f"| {number(group['auc'])} | {number(old.get('auc'))} |"
            )
        widening = (report["widening"] or {}).get(attribute, {})
        old_gaps = champion["attributes"][attribute]["gaps"]
        gap_rows = "\n".join(
            f"| {GAP_LABELS[name]} | {estimate(value)} "
            f"| {number(old_gaps.get(name, {}).get('value'))} "
            f"| {estimate(widening[name]['widening']) if name in widening else 'not gated'} |"
            for name, value in section["gaps"].items()
        )
        parts.append(
            f"#### {attribute}\n\n"
            "| group | rows | status | recall, candidate [95% CI] | recall, champion "
            "| change | candidate's recall shortfall vs comparable patients [95% CI] "
            "| FPR, candidate | FPR, champion | AUC, candidate | AUC, champion |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "| gap | candidate [95% CI] | champion | widening [95% CI] |\n"
            f"|---|---|---|---|\n{gap_rows}"
        )
    parts.append(fairness_verdict(report))
    return "\n\n".join(parts)


def _delta(new: float | None, old: float | None) -> str:
    return "n/a" if new is None or old is None else f"{new - old:+.3f}"
