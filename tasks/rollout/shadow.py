"""The mirror step's shadow comparison: what the candidate answered to mirrored copies against
what the live deployment answered to the same requests, before any live traffic moves.

Both answers of a mirrored request are in the collected production data (records.serving
Capture columns, backends/collected_data.py): the live deployment's row and the shadow
deployment's row carry the same correlation id, because the scoring script collects with the
request's `x-request-id` as its correlation id and the endpoint forwards the caller's
`x-request-id` (or the one it made up) to the live deployment and to the mirrored copy alike.
Rows are paired on that id and their position in the request, and a pair counts only when its
input fields agree too.

What Azure ML documents, and what it does not:
- "Perform safe rollout of new deployments for real-time inference" (how-to-safely-rollout-
  managed-endpoints): mirroring copies a percentage of live traffic and submits the copy to the
  shadow deployment; clients still get the live deployment's answer only; a request that names
  a deployment (`azureml-model-deployment`) is not mirrored.
- "Collect production data from models deployed for real-time inferencing"
  (how-to-collect-production-data): each collected line carries `correlationid` and
  `xrequestid`; a `BasicCorrelationContext(id=...)` passed to `collect()` becomes the line's
  `correlationid`; requests close in time may be batched into one line under one id.
- Not documented anywhere we found: which `x-request-id` the front door sends with a mirrored
  copy. The local endpoint server and the Azure fake forward the caller's; on Azure it is an
  assumption. If Azure gave the copy an id of its own, no pair would join, and the comparison
  would find too few pairs (stopping the rollout under `too_few_requests: fail`, naming why)
  rather than compare the wrong rows. Batching is why pairs are also checked on their inputs.

`compare_answers` is pure (two DataFrames in, numbers out); `judge_shadow` applies the bounds
(config/release.yaml `rollout.shadow`); `read_comparison` reads the captures through the
facade; `record_comparison` makes the Prefect artifact (`shadow-comparison`) and the audit record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect.artifacts import create_markdown_artifact

import audit
import backends
from records.serving import CAPTURE_COLUMNS, Capture
from settings import ShadowSettings
from tasks.rollout.judge import Verdict

ARTIFACT_KEY = "shadow-comparison"
AUDIT_ACTION = "shadow-comparison"
GROUP_ATTRIBUTES: tuple[str, ...] = ("gender", "age_band", "payer_code", "admission_type")
"""The fairness groups of the evaluate step (components/src/fairness.py SUBGROUPS)."""
AGE_BANDS: tuple[tuple[int, str], ...] = ((45, "18-44"), (65, "45-64"), (80, "65-79"))
OLDEST_BAND = "80+"
_ROW = "_row_in_request"
_LIVE, _SHADOW = "_live", "_shadow"


@dataclass(frozen=True)
class GroupDisagreement:
    """One patient group's pairs and how often, and by how much, the two answers differ."""

    attribute: str
    group: str
    pairs: int
    label_disagreement: float
    mean_probability_difference: float


@dataclass(frozen=True)
class ShadowComparison:
    """The paired answers' agreement. Rates are NaN when there are no pairs."""

    pairs: int
    unpaired: int  # shadow answers with no live answer to the same request and row
    mismatched: int  # same id and row, different inputs (batched collection): left out
    canary_pairs: int
    label_agreement: float
    mean_probability_difference: float
    max_probability_difference: float
    by_group: tuple[GroupDisagreement, ...]
    most_divergent: tuple[dict[str, Any], ...]

    @property
    def label_disagreement(self) -> float:
        return 1.0 - self.label_agreement

    def summary(self) -> str:
        if not self.pairs:
            return "shadow: no mirrored request paired with a live answer"
        return (
            f"shadow: {self.pairs} pairs, labels agree {self.label_agreement:.1%}, "
            f"|Δp| mean {self.mean_probability_difference:.3f} "
            f"max {self.max_probability_difference:.3f}"
        )

    def details(self) -> dict[str, Any]:
        """The figures for the audit record (JSON-ready)."""
        return {
            "pairs": self.pairs,
            "unpaired": self.unpaired,
            "mismatched": self.mismatched,
            "canary_pairs": self.canary_pairs,
            "label_agreement": _number(self.label_agreement),
            "mean_probability_difference": _number(self.mean_probability_difference),
            "max_probability_difference": _number(self.max_probability_difference),
            "by_group": [
                {
                    "attribute": g.attribute,
                    "group": g.group,
                    "pairs": g.pairs,
                    "label_disagreement": _number(g.label_disagreement),
                    "mean_probability_difference": _number(g.mean_probability_difference),
                }
                for g in self.by_group
            ],
        }


def patient_groups(inputs: pd.DataFrame) -> pd.DataFrame:
    """One string column per attribute of GROUP_ATTRIBUTES that `inputs` can give."""
    groups: dict[str, Any] = {}
    for name in GROUP_ATTRIBUTES:
        if name == "age_band" and "age" in inputs:
            age = pd.to_numeric(inputs["age"], errors="coerce").to_numpy(dtype=float)
            bands = np.select(
                [age < upper for upper, _ in AGE_BANDS], [b for _, b in AGE_BANDS], OLDEST_BAND
            )
            groups[name] = bands.astype(object)
        elif name in inputs:
            groups[name] = inputs[name].astype(str).to_numpy()
    return pd.DataFrame(groups, index=inputs.index)


def compare_answers(live: pd.DataFrame, shadow: pd.DataFrame, top: int = 10) -> ShadowComparison:
    """Pair the shadow deployment's collected rows with the live deployment's (same request id,
    same row of the request, same inputs) and measure how the answers differ. Rows without an
    answer (the request failed: the error-rate guardrails judge those) are left out."""
    live, shadow = _numbered(live), _numbered(shadow)
    inputs = sorted(
        (set(live.columns) & set(shadow.columns)) - set(CAPTURE_COLUMNS) - {_ROW}, key=str
    )
    keys = [Capture.REQUEST_ID, _ROW]
    joined = shadow.merge(live, on=keys, how="left", suffixes=(_SHADOW, _LIVE), indicator=True)
    paired = joined[joined["_merge"] == "both"]
    unpaired = int((joined["_merge"] == "left_only").sum())
    same = pd.Series(True, index=paired.index)
    for column in inputs:
        a, b = paired[column + _LIVE], paired[column + _SHADOW]
        same &= (a == b) | (a.isna() & b.isna())
    mismatched = int((~same).sum())
    paired = paired[same]
    p_live = paired[Capture.PROBABILITY + _LIVE].astype(float).to_numpy()
    p_shadow = paired[Capture.PROBABILITY + _SHADOW].astype(float).to_numpy()
    difference = np.abs(p_live - p_shadow)
    differs = (
        paired[Capture.LABEL + _LIVE].astype(int).to_numpy()
        != paired[Capture.LABEL + _SHADOW].astype(int).to_numpy()
    )
    features = paired[[c + _LIVE for c in inputs]].rename(columns=lambda c: c[: -len(_LIVE)])
    groups = patient_groups(features)
    by_group = tuple(
        GroupDisagreement(
            attribute,
            str(group),
            int(members.sum()),
            float(differs[members].mean()),
            float(difference[members].mean()),
        )
        for attribute in groups.columns
        for group in sorted(groups[attribute].unique(), key=str)
        for members in [(groups[attribute] == group).to_numpy()]
    )
    order = np.argsort(-difference, kind="stable")[:top]
    shown = [c for c in ("age", "gender", "payer_code", "admission_type") if c in features]
    most_divergent = tuple(
        {
            "request id": paired[Capture.REQUEST_ID].iloc[i],
            **{c: _plain(features[c].iloc[i]) for c in shown},
            "live p": round(float(p_live[i]), 4),
            "shadow p": round(float(p_shadow[i]), 4),
            "live label": int(paired[Capture.LABEL + _LIVE].iloc[i]),
            "shadow label": int(paired[Capture.LABEL + _SHADOW].iloc[i]),
            "|Δp|": round(float(difference[i]), 4),
        }
        for i in order
    )
    pairs = len(paired)
    ids = paired[Capture.REQUEST_ID].astype(str)
    return ShadowComparison(
        pairs=pairs,
        unpaired=unpaired,
        mismatched=mismatched,
        canary_pairs=int(ids.str.startswith("canary-").sum()),
        label_agreement=float(1.0 - differs.mean()) if pairs else math.nan,
        mean_probability_difference=float(difference.mean()) if pairs else math.nan,
        max_probability_difference=float(difference.max()) if pairs else math.nan,
        by_group=by_group,
        most_divergent=most_divergent,
    )


def _numbered(rows: pd.DataFrame) -> pd.DataFrame:
    """The answered rows, each numbered within its request (the order the script collected)."""
    if rows.empty or Capture.REQUEST_ID not in rows or Capture.PROBABILITY not in rows:
        return pd.DataFrame(
            {c: pd.Series(dtype=object) for c in CAPTURE_COLUMNS} | {_ROW: pd.Series(dtype="int64")}
        )
    rows = rows[rows[Capture.REQUEST_ID].notna() & (rows[Capture.REQUEST_ID] != "")]
    rows = rows.assign(**{_ROW: rows.groupby(Capture.REQUEST_ID).cumcount()})
    return rows[rows[Capture.PROBABILITY].notna() & rows[Capture.LABEL].notna()]


def judge_shadow(
    comparison: ShadowComparison,
    limits: ShadowSettings,
    too_few_requests: Literal["fail", "judge"],
) -> Verdict:
    """Every bound the comparison broke (none: healthy). Too few pairs is treated as a step
    with too few requests: failed, or judged on what there is (nothing to judge: healthy)."""
    if comparison.pairs < limits.min_pairs:
        if too_few_requests == "fail":
            return Verdict(
                False,
                (
                    f"shadow comparison: {comparison.pairs} mirrored requests paired with a live "
                    f"answer, fewer than {limits.min_pairs} ({comparison.unpaired} mirrored "
                    "answers had no live answer with the same correlation id): not judged",
                ),
            )
        if not comparison.pairs:
            return Verdict(True)
    reasons = []
    if comparison.label_disagreement > limits.max_label_disagreement:
        reasons.append(
            f"shadow labels disagree on {comparison.label_disagreement:.1%} of "
            f"{comparison.pairs} pairs > {limits.max_label_disagreement:.1%}"
        )
    if comparison.mean_probability_difference > limits.max_mean_probability_difference:
        reasons.append(
            f"shadow mean |Δp| {comparison.mean_probability_difference:.3f} > "
            f"{limits.max_mean_probability_difference:.3f} "
            f"(largest {comparison.max_probability_difference:.3f})"
        )
    return Verdict(not reasons, tuple(reasons))


def markdown(
    comparison: ShadowComparison,
    verdict: Verdict,
    limits: ShadowSettings,
    live: str,
    shadow: str,
    model: str,
) -> str:
    """The report a reviewer reads: the verdict, the figures against their bounds, the groups,
    the rows where the two answers differ most."""
    lines = [
        f"# Shadow comparison: {shadow} ({model}) against {live}",
        "",
        f"**{'Passed' if verdict.healthy else 'Stopped'}**"
        + ("" if verdict.healthy else f": {'; '.join(verdict.reasons)}"),
        "",
        "The candidate's answers to mirrored copies of requests, paired with the live "
        "deployment's answers to the same requests (same correlation id and row).",
        "",
        "| measure | value | bound |",
        "|---|---|---|",
        f"| pairs (canaries among them) | {comparison.pairs} ({comparison.canary_pairs}) | "
        f"at least {limits.min_pairs} |",
        f"| mirrored answers with no live pair (not collected yet, or another id) | "
        f"{comparison.unpaired} | |",
        f"| pairs left out: inputs differ | {comparison.mismatched} | |",
        f"| label agreement | {_percent(comparison.label_agreement)} | "
        f"at least {1 - limits.max_label_disagreement:.1%} |",
        f"| mean probability difference | {_fixed(comparison.mean_probability_difference)} | "
        f"at most {limits.max_mean_probability_difference:.3f} |",
        f"| largest probability difference | {_fixed(comparison.max_probability_difference)} | |",
        "",
        "## Disagreement by group",
        "",
        "| attribute | group | pairs | labels differ | mean abs. probability difference |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {g.attribute} | {g.group} | {g.pairs} | {_percent(g.label_disagreement)} | "
        f"{_fixed(g.mean_probability_difference)} |"
        for g in comparison.by_group
    ]
    if comparison.most_divergent:
        columns = list(comparison.most_divergent[0])
        lines += [
            "",
            f"## The {len(comparison.most_divergent)} most divergent rows",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        lines += [
            "| " + " | ".join(str(row[c]) for c in columns) + " |"
            for row in comparison.most_divergent
        ]
    return "\n".join(lines) + "\n"


def read_comparison(
    environment: str, endpoint: str, live: str, shadow: str, since: datetime, top: int
) -> ShadowComparison:
    """Compare what `shadow` (the mirror target) and `live` collected since `since`."""
    rows = backends.endpoints(environment).read_capture(endpoint, since)
    if rows.empty:
        return compare_answers(rows, rows, top)
    deployment = rows[Capture.DEPLOYMENT]
    return compare_answers(rows[deployment == live], rows[deployment == shadow], top)


def record_comparison(
    environment: str,
    endpoint: str,
    comparison: ShadowComparison,
    verdict: Verdict,
    limits: ShadowSettings,
    live: str,
    shadow: str,
    model: str,
) -> None:
    """The Prefect artifact and the audit record (written before the rollout acts on it)."""
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=markdown(comparison, verdict, limits, live, shadow, model),
        description=f"{shadow} ({model}) against {live} on {endpoint}: {comparison.summary()}",
    )
    audit.record(
        AUDIT_ACTION,
        "release-flow",
        f"{environment}/{endpoint}",
        "passed" if verdict.healthy else "; ".join(verdict.reasons),
        {
            "model": model,
            "live": live,
            "shadow": shadow,
            "passed": verdict.healthy,
            "bounds": limits.model_dump(),
            **comparison.details(),
        },
    )


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _fixed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
