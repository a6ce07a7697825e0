"""Drift statistics: is production still the population the champion was trained on?

The drift-monitor flow compares a current window (inputs and outputs captured at the endpoint)
with a reference (the champion's training data) and raises the retrain-on-drift event only when
this module says a feature crossed its threshold. The metrics are Azure ML model monitoring's
defaults, so a threshold tuned here means the same thing on the `azure` backend:

- numeric features and predicted probabilities: normalized Wasserstein distance, the
  earth mover's distance divided by the reference's standard deviation (population std,
  floored at 1e-3 so a constant reference column cannot divide by zero; the same definition as
  Evidently's ``wasserstein`` test, which lets the benchmark check our values against it).
  Dividing by the reference spread makes 0.1 mean "the mass moved a tenth of a standard
  deviation" for every feature, whatever its unit (years, mmHg, days).
- categorical features: Jensen-Shannon distance (base 2, so it lies in [0, 1]) between the
  category frequency vectors over the union of categories seen on either side.
- every feature also gets a population stability index (PSI), the banking-world statistic many
  readers already have rules of thumb for (< 0.1 stable, > 0.25 shifted); it is reported, it
  does not decide.

Speed matters because the reference is the whole training set (a million rows) and the flow
runs on a schedule: each numeric column is reduced once to its exact empirical distribution
(sorted distinct values and their counts), and the Wasserstein distance (scipy's, weighted by
the counts), reference quantiles and PSI bin counts are all read off those small arrays.
Nothing is approximated: results equal ``scipy.stats.wasserstein_distance`` and
``np.quantile`` on the raw values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS

FeatureKind = Literal["numeric", "categorical", "prediction"]
DriftMetric = Literal["normalized_wasserstein", "jensen_shannon"]
DriftStatus = Literal["drift", "no_drift", "not_enough_data"]

NUMERIC_FEATURES: tuple[str, ...] = tuple(c.name for c in NUMERIC_COLUMNS)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(c.name for c in CATEGORICAL_COLUMNS)
PREDICTION = "prediction"
"""The name the model's output probability carries in a report."""

DEFAULT_THRESHOLD = 0.1
"""Azure ML model monitoring's default for both normalized Wasserstein and Jensen-Shannon."""
DEFAULT_MIN_ROWS = 200
PSI_BINS = 10
PSI_EPSILON = 1e-4
"""Stands in for an empty bin's share, so PSI stays finite when a category vanishes."""
STD_FLOOR = 1e-3
MISSING_CATEGORY = "<missing>"

# A column whose first values repeat a lot is counted with a hash table (O(n), several times
# faster than sorting for the low-cardinality columns this data has); a nearly-distinct column
# (e.g. predicted probabilities) is sorted instead, where hashing would be the slower path.
_CARDINALITY_PROBE = 4096
_HASH_WHEN_DISTINCT_SHARE_BELOW = 0.25


@dataclass(frozen=True)
class DriftThresholds:
    """The distance above which a feature counts as drifted, per kind and per feature.

    Defaults are Azure ML's (0.1 everywhere). `per_feature` overrides one feature, e.g. a
    seasonal column that is allowed to wander: ``DriftThresholds(per_feature={"age": 0.2})``;
    the key ``"prediction"`` overrides the prediction threshold the same way.
    """

    numeric: float = DEFAULT_THRESHOLD
    categorical: float = DEFAULT_THRESHOLD
    prediction: float = DEFAULT_THRESHOLD
    per_feature: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = {"numeric": self.numeric, "categorical": self.categorical}
        named |= {"prediction": self.prediction, **self.per_feature}
        bad = {name: value for name, value in named.items() if not _is_threshold(value)}
        if bad:
            raise ValueError(
                f"drift thresholds must be finite numbers >= 0, got {bad}; a distance of 0 "
                "means identical distributions, 0.1 is Azure ML's default."
            )
        # A private copy (a plain dict, so pickle and pydantic can carry it as a flow
        # parameter): later edits to the caller's dict cannot move a threshold.
        object.__setattr__(self, "per_feature", dict(self.per_feature))

    def for_feature(self, feature: str, kind: FeatureKind) -> float:
        """The threshold that applies to `feature`: its override, else its kind's default."""
        if feature in self.per_feature:
            return float(self.per_feature[feature])
        return float(getattr(self, kind))


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the prediction's) distance between reference and current window."""

    feature: str
    kind: FeatureKind
    metric: DriftMetric
    value: float
    threshold: float
    psi: float
    drifted: bool
    """True when `value` is strictly above `threshold`: at the threshold is not yet drift."""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields, for artifacts, events and the audit log."""
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """The drift monitor's verdict on one window, with every number behind it.

    `status` is what the flow branches on: ``drift`` emits the retrain event, ``no_drift`` does
    nothing, and ``not_enough_data`` says the window was too small to judge (no statistics are
    reported then, so a quiet night can never look like a population change).
    """

    status: DriftStatus
    reference_rows: int
    current_rows: int
    features: tuple[FeatureDrift, ...]
    drifted_features: tuple[str, ...]
    message: str

    @property
    def drifted(self) -> bool:
        """True only for a judged window in which some feature crossed its threshold."""
        return self.status == "drift"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (tuples become lists), e.g. for a Prefect event's payload."""
        return {
            "status": self.status,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "features": [feature.to_dict() for feature in self.features],
            "drifted_features": list(self.drifted_features),
            "message": self.message,
        }

    def table_rows(self) -> list[dict[str, object]]:
        """One rounded dict per feature: what `create_table_artifact(table=...)` takes."""
        return [
            {
                "feature": f.feature,
                "kind": f.kind,
                "metric": f.metric,
                "value": round(f.value, 4),
                "threshold": round(f.threshold, 4),
                "psi": round(f.psi, 4),
                "drifted": f.drifted,
            }
            for f in self.features
        ]

    def to_markdown(self) -> str:
        """A headline and a per-feature table, for a markdown artifact or an evidence pack."""
        lines = [
            f"**Drift status: {self.status}** (reference {self.reference_rows:,} rows, "
            f"current {self.current_rows:,} rows)",
            "",
            self.message,
        ]
        if self.features:
            lines += [
                "",
                "| feature | kind | metric | value | threshold | PSI | drifted |",
                "|---|---|---|---:|---:|---:|---|",
            ]
            lines += [
                f"| {f.feature} | {f.kind} | {f.metric} | {f.value:.4f} | {f.threshold:.4f} "
                f"| {f.psi:.4f} | {'**yes**' if f.drifted else 'no'} |"
                for f in self.features
            ]
        return "\n".join(lines) + "\n"


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    reference_predictions: np.ndarray | None = None,
    current_predictions: np.ndarray | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> DriftReport:
    """Compare the current window with the reference on all 17 features (and the predictions).

    Columns other than the contract's features (the label, request ids, timestamps) are ignored.
    Prediction drift is computed only when both prediction arrays are given, since a reference
    without scores (or a capture without outputs) has nothing to compare. A current window with
    fewer than `min_rows` rows is not judged: a handful of requests can differ from a million
    training rows by chance alone, and a false alarm would retrain for nothing.
    """
    thresholds = thresholds or DriftThresholds()
    if min_rows < 1:
        raise ValueError(f"min_rows must be at least 1, got {min_rows}")
    unknown = sorted(set(thresholds.per_feature) - set(NUMERIC_FEATURES + CATEGORICAL_FEATURES))
    unknown = [name for name in unknown if name != PREDICTION]
    if unknown:
        raise ValueError(
            f"thresholds given for unknown feature(s) {unknown}; the features are "
            f"{list(NUMERIC_FEATURES + CATEGORICAL_FEATURES)} and {PREDICTION!r}."
        )

    reference_rows, current_rows = len(reference), len(current)
    if current_rows < min_rows or reference_rows < min_rows:
        return _not_enough_data(reference_rows, current_rows, min_rows)
    _require_features(reference, "reference")
    _require_features(current, "current window")

    features: list[FeatureDrift] = []
    for name in NUMERIC_FEATURES:
        ref = _numeric_distribution(reference[name], name, "reference")
        cur = _numeric_distribution(current[name], name, "current window")
        features.append(_numeric_drift(name, "numeric", ref, cur, thresholds))
    for name in CATEGORICAL_FEATURES:
        ref_counts, cur_counts = _category_counts(reference[name], current[name])
        value = jensen_shannon(ref_counts, cur_counts)
        threshold = thresholds.for_feature(name, "categorical")
        features.append(
            FeatureDrift(
                feature=name,
                kind="categorical",
                metric="jensen_shannon",
                value=value,
                threshold=threshold,
                psi=_psi_from_counts(ref_counts, cur_counts),
                drifted=value > threshold,
            )
        )

    prediction_note = ""
    if reference_predictions is not None and current_predictions is not None:
        ref = _numeric_distribution(reference_predictions, PREDICTION, "reference predictions")
        cur = _numeric_distribution(current_predictions, PREDICTION, "current predictions")
        if cur.total < min_rows:
            prediction_note = (
                f" Prediction drift not judged: {cur.total} current predictions, "
                f"need at least {min_rows}."
            )
        else:
            features.append(_numeric_drift(PREDICTION, "prediction", ref, cur, thresholds))
    elif reference_predictions is not None or current_predictions is not None:
        missing = "reference" if reference_predictions is None else "current"
        prediction_note = f" Prediction drift not computed: no {missing} predictions given."

    drifted = tuple(f.feature for f in features if f.drifted)
    return DriftReport(
        status="drift" if drifted else "no_drift",
        reference_rows=reference_rows,
        current_rows=current_rows,
        features=tuple(features),
        drifted_features=drifted,
        message=_summary(features) + prediction_note,
    )


def normalized_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance divided by the reference's population std (floored at 1e-3)."""
    ref = _numeric_distribution(reference, "reference", "reference")
    cur = _numeric_distribution(current, "current", "current")
    return _normalized_wasserstein(ref, cur)


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI over `bins` quantile bins of the reference (deciles by default).

    Bin edges are the reference's interior quantiles (``np.quantile``, linear interpolation),
    de-duplicated so a discrete column gets one bin per repeated edge instead of empty ones;
    bins are closed on the right and the outer two are open-ended, so every value lands in one.
    """
    ref = _numeric_distribution(reference, "reference", "reference")
    cur = _numeric_distribution(current, "current", "current")
    return _numeric_psi(ref, cur, bins)


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI with one bin per category over the union of categories on either side."""
    return _psi_from_counts(*_category_counts(reference, current))


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two aligned count vectors."""
    return float(jensenshannon(reference_counts, current_counts, base=2.0))


def plot_drift(report: DriftReport, path: Path) -> Path:
    """Write a horizontal bar per feature, drifted ones highlighted, each with its threshold.

    Uses matplotlib's object API with the Agg canvas rather than pyplot, so a flow running in a
    worker thread neither needs a display nor touches global figure state. Thresholds are drawn
    per bar (a dashed tick), because they can differ per feature.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    features = report.features
    figure = Figure(figsize=(8.0, 1.6 + 0.32 * max(len(features), 3)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    title = (
        f"Drift: {report.status} (current {report.current_rows:,} rows "
        f"vs reference {report.reference_rows:,})"
    )
    axes.set_title(title, fontsize=10)
    if not features:
        axes.text(0.5, 0.5, report.message, ha="center", va="center", wrap=True)
        axes.set_axis_off()
        figure.savefig(path, dpi=110)
        return path

    positions = np.arange(len(features))[::-1]
    values = [f.value for f in features]
    colors = ["#d62728" if f.drifted else "#4c72b0" for f in features]
    axes.barh(positions, values, color=colors, height=0.7)
    for y, f in zip(positions, features, strict=True):
        axes.plot([f.threshold] * 2, [y - 0.45, y + 0.45], color="black", linestyle="--", lw=1)
        axes.text(f.value, y, f" {f.value:.3f}", va="center", fontsize=7)
    axes.set_yticks(positions, [f"{f.feature} ({_short_metric(f)})" for f in features])
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("distance (W: normalized Wasserstein, JS: Jensen-Shannon)")
    axes.set_xlim(0, max(max(values), max(f.threshold for f in features)) * 1.2 or 1.0)
    axes.legend(
        handles=[
            Patch(color="#d62728", label="drifted"),
            Patch(color="#4c72b0", label="within threshold"),
            Line2D([], [], color="black", linestyle="--", label="threshold"),
        ],
        loc="lower right",
        fontsize=8,
    )
    figure.savefig(path, dpi=110)
    return path


@dataclass(frozen=True)
class _Distribution:
    """A column's exact empirical distribution: sorted distinct finite values and counts."""

    values: np.ndarray
    counts: np.ndarray
    total: int

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)

    def std(self) -> float:
        """Population standard deviation (ddof 0), as ``np.std`` gives on the raw values."""
        mean = float(np.dot(self.values, self.counts)) / self.total
        return math.sqrt(float(np.dot((self.values - mean) ** 2, self.counts)) / self.total)

    def order_statistic(self, k: np.ndarray) -> np.ndarray:
        """The k-th smallest raw value (0-based), read off the counts without the raw array."""
        return self.values[np.searchsorted(self.cumulative, k, side="right")]

    def count_at_or_below(self, edges: np.ndarray) -> np.ndarray:
        """How many raw values are <= each edge."""
        cumulative = np.concatenate(([0], self.cumulative))
        return cumulative[np.searchsorted(self.values, edges, side="right")]


def _numeric_distribution(values: object, feature: str, side: str) -> _Distribution:
    """Reduce a column to its distinct finite values and counts (NaN and inf are dropped)."""
    try:
        if isinstance(values, pd.Series):  # nullable dtypes (Int64, Float64) carry pd.NA
            array = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{side} column {feature!r} is not numeric ({error}); the data contract says it "
            "holds numbers, so check how the window was captured or loaded."
        ) from None
    array = array[np.isfinite(array)]
    if array.size == 0:
        raise ValueError(
            f"{side} column {feature!r} has no finite values; a captured window should carry "
            "every feature, so check the endpoint's data capture."
        )
    probe = array[:_CARDINALITY_PROBE]
    if len(pd.unique(probe)) < _HASH_WHEN_DISTINCT_SHARE_BELOW * probe.size:
        counted = pd.Series(array, copy=False).value_counts(sort=False).sort_index()
        distinct, counts = counted.index.to_numpy(np.float64), counted.to_numpy(np.int64)
    else:
        distinct, counts = np.unique(array, return_counts=True)
    return _Distribution(distinct, counts, int(array.size))


def _numeric_drift(
    name: str,
    kind: FeatureKind,
    reference: _Distribution,
    current: _Distribution,
    thresholds: DriftThresholds,
) -> FeatureDrift:
    value = _normalized_wasserstein(reference, current)
    threshold = thresholds.for_feature(name, kind)
    return FeatureDrift(
        feature=name,
        kind=kind,
        metric="normalized_wasserstein",
        value=value,
        threshold=threshold,
        psi=_numeric_psi(reference, current, PSI_BINS),
        drifted=value > threshold,
    )


def _normalized_wasserstein(reference: _Distribution, current: _Distribution) -> float:
    """scipy's W1 over the distinct values weighted by their counts (the raw values' distance)."""
    distance = wasserstein_distance(
        reference.values, current.values, u_weights=reference.counts, v_weights=current.counts
    )
    return float(distance) / max(reference.std(), STD_FLOOR)


def _numeric_psi(reference: _Distribution, current: _Distribution, bins: int) -> float:
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    # np.quantile's default ("linear"): position (n - 1) * q between two order statistics.
    position = (reference.total - 1) * np.arange(1, bins) / bins
    below = np.floor(position)
    low = reference.order_statistic(below)
    high = reference.order_statistic(np.minimum(below + 1, reference.total - 1))
    edges = np.unique(low + (position - below) * (high - low))
    ref_counts = np.diff(reference.count_at_or_below(edges), prepend=0, append=reference.total)
    cur_counts = np.diff(current.count_at_or_below(edges), prepend=0, append=current.total)
    return _psi_from_counts(ref_counts, cur_counts)


def _psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """sum((cur - ref) * ln(cur / ref)) over bins, each share floored at PSI_EPSILON."""
    ref = np.maximum(reference_counts / reference_counts.sum(), PSI_EPSILON)
    cur = np.maximum(current_counts / current_counts.sum(), PSI_EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _category_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts per category over the sorted union of both sides' categories, missing included."""
    ref = _value_counts(reference)
    cur = _value_counts(current)
    categories = sorted(set(ref) | set(cur))
    return (
        np.array([ref.get(c, 0) for c in categories], dtype=np.float64),
        np.array([cur.get(c, 0) for c in categories], dtype=np.float64),
    )


def _value_counts(values: pd.Series) -> dict[str, int]:
    counted = pd.Series(values, copy=False).value_counts(dropna=False)
    return {
        (MISSING_CATEGORY if pd.isna(key) else str(key)): int(count)
        for key, count in counted.items()
    }


def _require_features(frame: pd.DataFrame, side: str) -> None:
    missing = [name for name in NUMERIC_FEATURES + CATEGORICAL_FEATURES if name not in frame]
    if missing:
        raise ValueError(
            f"the {side} lacks feature column(s) {missing}; drift is judged on all features "
            "of the data contract (data_checks/readmission_schema.py), so capture them all."
        )


def _not_enough_data(reference_rows: int, current_rows: int, min_rows: int) -> DriftReport:
    if current_rows < min_rows:
        message = (
            f"Not enough data: the current window has {current_rows} rows, drift is judged from "
            f"{min_rows}. Widen the window or wait for more traffic; nothing was compared."
        )
    else:
        message = (
            f"Not enough data: the reference has {reference_rows} rows, drift is judged from "
            f"{min_rows}. Point the monitor at the champion's full training data."
        )
    return DriftReport("not_enough_data", reference_rows, current_rows, (), (), message)


def _summary(features: list[FeatureDrift]) -> str:
    inputs = [f for f in features if f.kind != "prediction"]
    drifted = [f for f in inputs if f.drifted]
    prediction = next((f for f in features if f.kind == "prediction"), None)
    if drifted:
        worst = sorted(drifted, key=lambda f: f.value / max(f.threshold, 1e-12), reverse=True)
        listed = ", ".join(f"{f.feature} {f.value:.3f} > {f.threshold:.3f}" for f in worst)
        text = f"{len(drifted)} of {len(inputs)} features drifted: {listed}."
    else:
        largest = max(inputs, key=lambda f: f.value / max(f.threshold, 1e-12))
        text = (
            f"No feature crossed its threshold (closest: {largest.feature} "
            f"{largest.value:.3f} of {largest.threshold:.3f})."
        )
    if prediction is not None:
        verdict = "drifted" if prediction.drifted else "stable"
        text += (
            f" Predictions {verdict}: normalized Wasserstein {prediction.value:.3f} "
            f"(threshold {prediction.threshold:.3f}, PSI {prediction.psi:.3f})."
        )
    return text


def _short_metric(feature: FeatureDrift) -> str:
    return "W" if feature.metric == "normalized_wasserstein" else "JS"


def _is_threshold(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf
