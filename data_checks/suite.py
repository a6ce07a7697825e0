"""The Great Expectations suite for readmission training data, derived from the data contract.

Every expectation is generated from `readmission_schema`, so changing the contract changes the
gate; nothing here restates a range or a category by hand. Each expectation carries a short
plain-English description that the validation report uses as its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from data_checks.readmission_schema import (
    ALL_COLUMNS,
    CATEGORICAL_COLUMNS,
    LABEL,
    LABEL_RATE_BOUNDS,
    MIN_ROWS,
    NUMERIC_COLUMNS,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

SUITE_NAME = "readmission_training_data"

# Type names GX matches against a column's dtype, or against each value of an object column
# (which is how a numeric column holding stray strings arrives from a CSV).
NUMERIC_TYPES: tuple[str, ...] = (
    "int",
    "float",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "Int64",
    "Float64",
)


def build_readmission_suite() -> ExpectationSuite:
    """Build the suite; a fresh object each call, so callers may attach it to any context."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=MIN_ROWS, max_value=None, description=f"at least {MIN_ROWS} rows"
        )
    ]
    for name in ALL_COLUMNS:
        expectations.append(gxe.ExpectColumnToExist(column=name, description=f"{name} present"))
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(column=name, description=f"{name} has no nulls")
        )
    for numeric in NUMERIC_COLUMNS:
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=numeric.name,
                type_list=list(NUMERIC_TYPES),
                description=f"{numeric.name} is numeric",
            )
        )
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=numeric.name,
                min_value=numeric.minimum,
                max_value=numeric.maximum,
                description=f"{numeric.name} between {numeric.minimum:g} and {numeric.maximum:g}",
            )
        )
    for categorical in CATEGORICAL_COLUMNS:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=categorical.name,
                value_set=list(categorical.values),
                description=f"{categorical.name} in {{{', '.join(categorical.values)}}}",
            )
        )
    low, high = LABEL_RATE_BOUNDS
    expectations += [
        gxe.ExpectColumnValuesToBeInTypeList(
            column=LABEL, type_list=list(NUMERIC_TYPES), description=f"{LABEL} is numeric"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=LABEL, value_set=[0, 1], description=f"{LABEL} in {{0, 1}}"
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL,
            min_value=low,
            max_value=high,
            description=f"{LABEL} rate between {low:.0%} and {high:.0%}",
        ),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)
