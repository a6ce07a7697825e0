"""The readmission data contract: one place that says what a valid row looks like.

The generator, the Great Expectations suite and the serving request validator all read this,
so the data they produce, check and accept can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL = "readmitted_30d"


@dataclass(frozen=True)
class NumericColumn:
    """A numeric feature and its inclusive valid range."""

    name: str
    minimum: float
    maximum: float
    integer: bool


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical feature and its closed set of values."""

    name: str
    values: tuple[str, ...]


NUMERIC_COLUMNS: tuple[NumericColumn, ...] = (
    NumericColumn("age", 18, 100, integer=True),
    NumericColumn("num_prior_admissions", 0, 20, integer=True),
    NumericColumn("length_of_stay_days", 1, 60, integer=True),
    NumericColumn("num_diagnoses", 1, 16, integer=True),
    NumericColumn("num_procedures", 0, 10, integer=True),
    NumericColumn("num_medications", 0, 30, integer=True),
    NumericColumn("num_lab_results", 1, 50, integer=True),
    NumericColumn("days_since_last_admission", 0, 3650, integer=True),
    NumericColumn("bmi", 15.0, 55.0, integer=False),
    NumericColumn("heart_rate_avg", 50.0, 140.0, integer=False),
    NumericColumn("systolic_bp_avg", 80.0, 200.0, integer=False),
    NumericColumn("hba1c", 3.5, 14.0, integer=False),
)

CATEGORICAL_COLUMNS: tuple[CategoricalColumn, ...] = (
    CategoricalColumn("gender", ("M", "F")),
    CategoricalColumn("admission_type", ("Emergency", "Urgent", "Elective")),
    CategoricalColumn(
        "discharge_disposition", ("Home", "HomeHealth", "SkilledNursing", "Rehab", "AgainstAdvice")
    ),
    CategoricalColumn(
        "primary_diagnosis_group",
        (
            "Circulatory",
            "Respiratory",
            "Diabetes",
            "Digestive",
            "Injury",
            "Musculoskeletal",
            "Genitourinary",
            "Neoplasms",
            "Other",
        ),
    ),
    CategoricalColumn("payer_code", ("Medicare", "Medicaid", "Private", "SelfPay")),
)

FEATURES: tuple[str, ...] = tuple(c.name for c in NUMERIC_COLUMNS) + tuple(
    c.name for c in CATEGORICAL_COLUMNS
)
ALL_COLUMNS: tuple[str, ...] = FEATURES + (LABEL,)

# One valid request row (every feature, in range): what the CLI shows a person to try the
# endpoint with, so the example follows the contract when a column changes.
EXAMPLE_ROW: dict[str, float | int | str] = {
    "age": 71,
    "gender": "F",
    "num_prior_admissions": 2,
    "length_of_stay_days": 6,
    "num_diagnoses": 9,
    "num_procedures": 2,
    "num_medications": 14,
    "num_lab_results": 30,
    "days_since_last_admission": 45,
    "bmi": 31.2,
    "heart_rate_avg": 88.0,
    "systolic_bp_avg": 141.0,
    "hba1c": 7.9,
    "admission_type": "Emergency",
    "discharge_disposition": "Home",
    "primary_diagnosis_group": "Circulatory",
    "payer_code": "Medicare",
}

# Row-count and label-rate bounds the training data must meet.
MIN_ROWS = 500
LABEL_RATE_BOUNDS = (0.05, 0.40)
