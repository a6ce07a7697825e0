"""Synthetic hospital-readmission data that obeys the data contract.

There is no real patient data in this project, so every pipeline stage (training, the data gate,
drift monitoring, load tests) runs on rows from here. The rows are built to behave like a real
cohort where it matters for those stages: features are correlated (older patients carry more
diagnoses and medications, emergency admissions stay longer), and the 30-day readmission label
comes from a logistic model with thresholds and interactions, so a gradient-boosted model has
something to find that a linear model misses, while shuffled labels carry no signal at all.

The true risk model never uses gender or payer code. `RecordingBias` (off by default) makes the
recorded label depend on the payer anyway, as when one payer's readmissions are under-recorded,
so the fairness gate can be shown a model that learned that unfairness.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.readmission_schema import (
    ALL_COLUMNS,
    CATEGORICAL_COLUMNS,
    LABEL,
    NUMERIC_COLUMNS,
)

_NUMERIC = {c.name: c for c in NUMERIC_COLUMNS}
_CATEGORIES = {c.name: c.values for c in CATEGORICAL_COLUMNS}

ADMISSION_TYPES: tuple[str, ...] = _CATEGORIES["admission_type"]
DEFAULT_ADMISSION_MIX: Mapping[str, float] = {"Emergency": 0.55, "Urgent": 0.25, "Elective": 0.20}

# Log-odds intercept, calibrated so the unshifted population is readmitted about 19% of the time.
_INTERCEPT = -3.08


@dataclass(frozen=True)
class PopulationShift:
    """A change in who arrives at the hospital, for drift tests.

    Monitoring must notice when production patients stop looking like the training cohort.
    Each knob moves one thing a real hospital sees move: an ageing catchment area, a new
    emergency department changing the admission mix, or a change in care that alters who gets
    readmitted without any feature looking different (concept drift, which feature-drift
    checks cannot see and only performance monitoring can).
    """

    age_offset: float = 0.0
    """Years added to every patient's age before clipping to the contract's range."""
    admission_type_weights: Mapping[str, float] | None = None
    """Relative weight per admission type, e.g. {"Emergency": 0.8, "Urgent": 0.15, ...}."""
    risk_log_odds_offset: float = 0.0
    """Added to the label's log-odds: more (positive) or fewer (negative) readmissions."""


@dataclass(frozen=True)
class RecordingBias:
    """Readmissions of one payer's patients that the records miss, for fairness tests.

    How hospital data goes wrong, for example: a readmission elsewhere is only seen when the
    payer's claims are linked, and one payer's are linked less often, so its patients look
    healthier than they are. Each true readmission of a `payer_code` patient is recorded as
    "not readmitted" with probability `unrecorded_share`. Every feature, and every other
    patient's label, stays exactly as without the bias (the same seed draws the same cohort),
    so a model trained on it differs from the fair one only by what it learned from the payer.
    """

    payer_code: str
    unrecorded_share: float
    """Share of the payer's true readmissions recorded as none, in [0, 1]."""

    def __post_init__(self) -> None:
        payers = _CATEGORIES["payer_code"]
        if self.payer_code not in payers:
            raise ValueError(
                f"Unknown payer code {self.payer_code!r} in RecordingBias; "
                f"use one of {list(payers)}."
            )
        if not 0.0 <= self.unrecorded_share <= 1.0:
            raise ValueError(
                f"unrecorded_share must be between 0 and 1, got {self.unrecorded_share}."
            )


def generate_readmissions(
    n_rows: int,
    seed: int = 0,
    shift: PopulationShift | None = None,
    bias: RecordingBias | None = None,
) -> pd.DataFrame:
    """Draw `n_rows` patients; the same seed, shift and bias always give the identical frame.

    Columns are exactly `ALL_COLUMNS` in order, every value inside the data contract.
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be zero or more, got {n_rows}")
    shift = shift or PopulationShift()
    rng = np.random.default_rng(seed)
    n = n_rows

    # A hidden frailty score drives the correlated history features, as comorbidity does.
    frailty = rng.standard_normal(n)

    age_range = (_NUMERIC["age"].minimum, _NUMERIC["age"].maximum)
    age = np.clip(np.rint(rng.normal(61.0, 16.5, n) + 4.0 * frailty + shift.age_offset), *age_range)
    decades = (age - 60.0) / 10.0
    gender = _choose(rng, ("M", "F"), np.array([[0.47, 0.53]]), np.zeros(n, dtype=np.int64))

    admission_idx = _choose_index(rng, _admission_probabilities(shift), np.zeros(n, np.int64))
    emergency = admission_idx == ADMISSION_TYPES.index("Emergency")
    elective = admission_idx == ADMISSION_TYPES.index("Elective")

    diagnosis_idx = _choose_index(rng, _DIAGNOSIS_BY_ADMISSION, admission_idx)
    diagnosis_names = _CATEGORIES["primary_diagnosis_group"]
    diabetic = diagnosis_idx == diagnosis_names.index("Diabetes")
    circulatory = diagnosis_idx == diagnosis_names.index("Circulatory")
    respiratory = diagnosis_idx == diagnosis_names.index("Respiratory")

    payer_idx = _choose_index(rng, _PAYER_BY_AGE_BAND, (age >= 65).astype(np.int64))

    num_prior = rng.poisson(np.exp(-0.25 + 0.55 * frailty + 0.12 * decades))
    recency_scale = 900.0 / (1.0 + num_prior) * np.exp(-0.25 * frailty)
    days_since = np.where(
        num_prior == 0, 3650, np.rint(rng.exponential(recency_scale) + rng.integers(0, 5, n))
    )

    num_diagnoses = 1 + rng.poisson(np.exp(1.45 + 0.12 * decades + 0.25 * frailty))
    num_medications = rng.poisson(np.exp(2.1 + 0.10 * decades + 0.22 * frailty + 0.05 * diabetic))
    stay_log_mean = 1.05 + 0.35 * emergency - 0.15 * elective + 0.08 * decades + 0.18 * frailty
    length_of_stay = 1 + np.floor(rng.lognormal(stay_log_mean, 0.65))
    num_procedures = rng.poisson(0.9 + 1.6 * elective + 0.08 * np.minimum(length_of_stay, 20))
    num_lab_results = 1 + rng.poisson(6.0 + 1.3 * np.minimum(length_of_stay, 30) + 3.0 * emergency)

    bmi = rng.normal(28.5, 6.0, n) + 3.0 * diabetic
    heart_rate = rng.normal(80.0, 11.0, n) + 6.0 * frailty + 5.0 * emergency + 4.0 * respiratory
    systolic_bp = rng.normal(128.0, 17.0, n) + 3.5 * decades + 6.0 * circulatory
    hba1c = np.exp(rng.normal(np.log(5.7), 0.12, n)) + diabetic * rng.gamma(3.0, 0.9, n)

    discharge_idx = _choose_index(rng, _discharge_probabilities(age, frailty), np.arange(n))

    columns: dict[str, np.ndarray] = {
        "age": age,
        "num_prior_admissions": num_prior,
        "length_of_stay_days": length_of_stay,
        "num_diagnoses": num_diagnoses,
        "num_procedures": num_procedures,
        "num_medications": num_medications,
        "num_lab_results": num_lab_results,
        "days_since_last_admission": days_since,
        "bmi": bmi,
        "heart_rate_avg": heart_rate,
        "systolic_bp_avg": systolic_bp,
        "hba1c": hba1c,
    }
    frame: dict[str, np.ndarray] = {
        name: _fit_to_contract(name, values) for name, values in columns.items()
    }
    frame["gender"] = gender
    frame["admission_type"] = np.asarray(ADMISSION_TYPES, dtype=object)[admission_idx]
    frame["discharge_disposition"] = np.asarray(_CATEGORIES["discharge_disposition"], dtype=object)[
        discharge_idx
    ]
    frame["primary_diagnosis_group"] = np.asarray(diagnosis_names, dtype=object)[diagnosis_idx]
    frame["payer_code"] = np.asarray(_CATEGORIES["payer_code"], dtype=object)[payer_idx]

    logit = _readmission_log_odds(frame, discharge_idx) + shift.risk_log_odds_offset
    frame[LABEL] = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    if bias is not None:  # drawn last, so the unbiased cohort is the same patients
        missed = rng.random(n) < bias.unrecorded_share
        missed &= (frame["payer_code"] == bias.payer_code) & (frame[LABEL] == 1)
        frame[LABEL] = np.where(missed, 0, frame[LABEL])
    return pd.DataFrame({name: frame[name] for name in ALL_COLUMNS})


def _readmission_log_odds(frame: Mapping[str, np.ndarray], discharge_idx: np.ndarray) -> np.ndarray:
    """The true risk model: the pattern a trained model is scored on recovering.

    Thresholds (a readmission within the last 30 days, HbA1c above 9 for diabetics, very short
    or very long stays) and interactions (age with emergency admission, prior admissions with
    leaving against advice) are what let a tree ensemble beat logistic regression here.
    """
    age = frame["age"]
    prior = frame["num_prior_admissions"]
    stay = frame["length_of_stay_days"]
    days_since = frame["days_since_last_admission"]
    emergency = frame["admission_type"] == "Emergency"
    diabetic = frame["primary_diagnosis_group"] == "Diabetes"
    dispositions = _CATEGORIES["discharge_disposition"]
    against_advice = discharge_idx == dispositions.index("AgainstAdvice")
    nursing = discharge_idx == dispositions.index("SkilledNursing")

    return (
        _INTERCEPT
        + 0.55 * np.log1p(prior)
        + 1.40 * (days_since <= 30)
        + 0.45 * ((days_since > 30) & (days_since <= 180))
        + 0.75 * np.maximum(age - 72.0, 0.0) / 10.0
        + 0.55 * emergency * (age >= 70)
        + 0.80 * (stay <= 2) * emergency
        + 0.55 * np.maximum(stay - 9.0, 0.0) ** 0.5 / 2.0
        + 0.90 * against_advice
        + 0.40 * against_advice * (prior >= 2)
        + 0.35 * nursing
        + 1.40 * diabetic * (frame["hba1c"] >= 9.0)
        + 0.06 * np.maximum(frame["num_medications"] - 12.0, 0.0)
        + 0.80 * ((frame["bmi"] < 19.0) | (frame["bmi"] > 38.0))
        + 0.90 * (frame["heart_rate_avg"] > 100.0)
        + 0.80 * (frame["systolic_bp_avg"] < 105.0)
        + 0.07 * np.maximum(frame["num_diagnoses"] - 6.0, 0.0)
    )


_DIAGNOSIS_BY_ADMISSION = np.array(
    [
        # Circ, Resp, Diab, Dig, Inj, Musc, Genit, Neo, Other; rows follow ADMISSION_TYPES.
        [0.26, 0.18, 0.08, 0.11, 0.14, 0.03, 0.06, 0.03, 0.11],
        [0.24, 0.14, 0.11, 0.12, 0.05, 0.06, 0.08, 0.07, 0.13],
        [0.20, 0.04, 0.06, 0.12, 0.02, 0.24, 0.08, 0.14, 0.10],
    ]
)
_PAYER_BY_AGE_BAND = np.array(
    [
        # Medicare, Medicaid, Private, SelfPay; under 65 then 65 and over.
        [0.08, 0.27, 0.55, 0.10],
        [0.82, 0.06, 0.10, 0.02],
    ]
)


def _admission_probabilities(shift: PopulationShift) -> np.ndarray:
    """One row of admission-type probabilities, from the shift's weights or the default mix."""
    weights = dict(shift.admission_type_weights or DEFAULT_ADMISSION_MIX)
    unknown = sorted(set(weights) - set(ADMISSION_TYPES))
    if unknown:
        raise ValueError(
            f"Unknown admission type(s) {unknown} in admission_type_weights; "
            f"use only {list(ADMISSION_TYPES)}."
        )
    row = np.array([float(weights.get(name, 0.0)) for name in ADMISSION_TYPES])
    if (row < 0).any() or row.sum() <= 0:
        raise ValueError(
            f"admission_type_weights must be non-negative with a positive total, got {weights}."
        )
    return (row / row.sum())[None, :]


def _discharge_probabilities(age: np.ndarray, frailty: np.ndarray) -> np.ndarray:
    """Per-patient discharge probabilities: older, frailer patients go to nursing or rehab."""
    risk = np.clip((age - 55.0) / 40.0 + 0.25 * frailty, 0.0, 1.0)[:, None]
    young = np.array([0.72, 0.12, 0.04, 0.06, 0.06])  # Home, HomeHealth, SNF, Rehab, AMA
    old = np.array([0.38, 0.22, 0.24, 0.13, 0.03])
    return young + risk * (old - young)


def _choose_index(
    rng: np.random.Generator, probabilities: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Vectorized categorical draw: row `rows[i]` of `probabilities` is patient i's distribution."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0
    draws = rng.random(len(rows))
    return (draws[:, None] >= cumulative[rows, :-1]).sum(axis=1)


def _choose(
    rng: np.random.Generator, values: Sequence[str], probabilities: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Like `_choose_index`, but returns the category strings as an object array."""
    return np.asarray(values, dtype=object)[_choose_index(rng, probabilities, rows)]


def _fit_to_contract(name: str, values: np.ndarray) -> np.ndarray:
    """Clip to the contract's range, then store integers as int64 and measurements to 0.1."""
    column = _NUMERIC[name]
    clipped = np.clip(values, column.minimum, column.maximum)
    if column.integer:
        return np.rint(clipped).astype(np.int64)
    return np.round(clipped.astype(np.float64), 1)


def _parse_admission_mix(text: str) -> dict[str, float]:
    """Parse "Emergency=0.8,Urgent=0.15,Elective=0.05" into weights."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad admission mix entry {part!r}; write it as Type=weight, "
                "e.g. Emergency=0.8,Urgent=0.15,Elective=0.05"
            ) from None
    return weights


def _parse_recording_bias(text: str) -> RecordingBias:
    """Parse "Medicaid=0.5" into a RecordingBias."""
    payer, sep, share = text.partition("=")
    try:
        if not sep:
            raise ValueError("no '='")
        return RecordingBias(payer.strip(), float(share))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"bad under-recording {text!r} ({error}); write it as Payer=share, e.g. Medicaid=0.5"
        ) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Write a synthetic readmission CSV, optionally from a shifted population."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rows", type=int, required=True, help="number of patients")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same file")
    parser.add_argument("--out", type=Path, required=True, help="CSV path to write")
    parser.add_argument("--age-offset", type=float, default=0.0, help="years added to ages")
    parser.add_argument(
        "--admission-mix",
        type=_parse_admission_mix,
        default=None,
        help="weights per admission type, e.g. Emergency=0.8,Urgent=0.15,Elective=0.05",
    )
    parser.add_argument(
        "--risk-log-odds-offset", type=float, default=0.0, help="concept drift in the label"
    )
    parser.add_argument(
        "--under-record",
        type=_parse_recording_bias,
        default=None,
        metavar="PAYER=SHARE",
        help="biased labels (off by default): record this share of one payer's readmissions "
        "as none, e.g. Medicaid=0.5",
    )
    args = parser.parse_args(argv)
    shift = PopulationShift(
        age_offset=args.age_offset,
        admission_type_weights=args.admission_mix,
        risk_log_odds_offset=args.risk_log_odds_offset,
    )
    try:
        frame = generate_readmissions(
            args.rows, seed=args.seed, shift=shift, bias=args.under_record
        )
    except ValueError as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    bias = args.under_record
    unrecorded = (
        f", {bias.unrecorded_share:.0%} of {bias.payer_code} readmissions unrecorded"
        if bias
        else ""
    )
    print(
        f"wrote {len(frame)} rows to {args.out} "
        f"(readmission rate {frame[LABEL].mean():.1%}, seed {args.seed}{unrecorded})"
    )


if __name__ == "__main__":
    main()
