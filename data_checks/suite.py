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
    FEATURES,
    LABEL,
    LABEL_RATE_BOUNDS,
    MIN_ROWS,
    NUMERIC_COLUMNS,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

SUITE_NAME = "readmission_training_data"
SCORING_SUITE_NAME = "readmission_scoring_data"

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


def build_readmission_suite(labelled: bool = True, mostly: float = 1.0) -> ExpectationSuite:
    """Build the suite; a fresh object each call, so callers may attach it to any context.

    `labelled=False` is the same contract for rows to score (the batch inbox): no label, at
    least one row, and each value rule met by `mostly` of the rows, since a scoring job refuses
    a bad row alone (with its reason) and only a file mostly bad is refused whole. The
    columns' presence and types are never `mostly`: without them no row can be scored.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    min_rows = MIN_ROWS if labelled else 1
    share = "" if mostly >= 1 else f" (at least {mostly:.0%} of rows)"
    expectations: list[Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=min_rows, max_value=None, description=f"at least {min_rows} rows"
        )
    ]
    for name in ALL_COLUMNS if labelled else FEATURES:
        expectations.append(gxe.ExpectColumnToExist(column=name, description=f"{name} present"))
        expectations.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=name, mostly=mostly, description=f"{name} has no nulls{share}"
            )
        )
    for numeric in NUMERIC_COLUMNS:
        expectations.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=numeric.name,
                type_list=list(NUMERIC_TYPES),
                mostly=mostly,
                description=f"{numeric.name} is numeric{share}",
            )
        )
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=numeric.name,
                min_value=numeric.minimum,
                max_value=numeric.maximum,
                mostly=mostly,
                description=(
                    f"{numeric.name} between {numeric.minimum:g} and {numeric.maximum:g}{share}"
                ),
            )
        )
    for categorical in CATEGORICAL_COLUMNS:
        expectations.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=categorical.name,
                value_set=list(categorical.values),
                mostly=mostly,
                description=f"{categorical.name} in {{{', '.join(categorical.values)}}}{share}",
            )
        )
    if not labelled:
        return gx.ExpectationSuite(name=SCORING_SUITE_NAME, expectations=expectations)
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
