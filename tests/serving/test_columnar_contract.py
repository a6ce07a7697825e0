"""The contract on columns as a file reader holds them gives find_violations' answer, word for word.

Batch scoring checks a million rows as numpy arrays and dictionary-encoded text
(`request_contract.find_violations_in_columns`); the online endpoint checks Python values
(`find_violations`, `validate_columns`). A row must be refused by both or neither, with the same
reason, so these tests break every rule of the contract in the columnar form and compare.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from backends.local.batch_scoring import scoring_script
from tests.endpoints.models import save_trained_model


@pytest.fixture(scope="module")
def contract() -> ModuleType:
    scoring_script()  # the serving code folder importable, as the scoring scripts have it
    return importlib.import_module("request_contract")


@pytest.fixture(scope="module")
def model_scoring() -> ModuleType:
    scoring_script()
    return importlib.import_module("model_scoring")


def clean_columns(model_scoring: ModuleType, n_rows: int) -> dict[str, list[Any]]:
    return {
        name: list(values) for name, values in model_scoring.contract_sample(n_rows).columns.items()
    }


def columnar(contract: ModuleType, columns: dict[str, list[Any]]) -> dict[str, Any]:
    """Numbers as numpy arrays (all ints: int64, all floats: float64), text as EncodedColumn, as
    batch_score holds a file's columns."""
    held: dict[str, Any] = {}
    for name, values in columns.items():
        if all(type(v) is str or v is None for v in values):
            words = list(dict.fromkeys(values))
            held[name] = contract.EncodedColumn(words, np.array([words.index(v) for v in values]))
        elif all(type(v) is int for v in values):
            held[name] = np.array(values, dtype=np.int64)
        elif all(type(v) is float for v in values):
            held[name] = np.array(values, dtype=np.float64)
        else:
            held[name] = values  # nulls or text among numbers: the per-value path
    return held


def test_every_broken_rule_is_refused_with_the_same_reason_as_row_by_row(
    contract: ModuleType, model_scoring: ModuleType
) -> None:
    columns = clean_columns(model_scoring, 400)
    columns["length_of_stay_days"] = [float(v) for v in columns["length_of_stay_days"]]
    breaks = {
        "age": {3: 400, 9: 17},
        "length_of_stay_days": {20: 3.5, 21: 61.0},  # whole numbers held as floats
        "bmi": {4: math.nan, 5: math.inf, 6: 14.99, 399: 55.01},
        "num_procedures": {7: -1},
        "heart_rate_avg": {8: None},  # a null: that column goes as Python values
        "payer_code": {10: "Bitcoin", 11: None, 300: "Bitcoin"},
        "gender": {12: "m"},
    }
    for name, rows in breaks.items():
        for row, value in rows.items():
            columns[name][row] = value

    expected = contract.find_violations(columns)
    found = contract.find_violations_in_columns(columnar(contract, columns))

    assert found == expected
    assert len(found) == sum(len(rows) for rows in breaks.values())
    assert {(v.row, v.column) for v in found} >= {(300, "payer_code"), (20, "length_of_stay_days")}


def test_clean_columns_break_nothing(contract: ModuleType, model_scoring: ModuleType) -> None:
    columns = columnar(contract, clean_columns(model_scoring, 1_000))

    assert contract.find_violations_in_columns(columns) == []


def test_an_encoded_column_reads_as_its_values_row_by_row(contract: ModuleType) -> None:
    column = contract.EncodedColumn(["Home", "Rehab", None], np.array([1, 0, 0, 2, 1]))

    assert list(column) == ["Rehab", "Home", "Home", None, "Rehab"]
    assert (len(column), column[3], column[1:3]) == (5, None, ["Home", "Home"])
    assert list(column.filter(np.array([True, False, False, True, True]))) == [
        "Rehab",
        None,
        "Rehab",
    ]


def test_the_bulk_scorer_gives_the_pipelines_probabilities_on_columnar_input(
    contract: ModuleType, model_scoring: ModuleType, tmp_path: Path
) -> None:
    model_dir = save_trained_model(tmp_path / "model", rows=1_500)
    bulk = model_scoring.load_scorer(model_dir, bulk=True)
    rows = model_scoring.contract_sample(2_000, seed=5)
    pipeline = model_scoring.PipelineScorer(*_pipeline_and_features(model_scoring, model_dir))
    held = contract.FeatureBatch(columnar(contract, dict(rows.columns)), rows.n_rows)

    assert bulk.kind == "encoded"
    assert np.max(np.abs(bulk.probabilities(held) - pipeline.probabilities(rows))) <= 1e-12


def _pipeline_and_features(model_scoring: ModuleType, model_dir: Path) -> tuple[Any, list[str]]:
    pipeline, _ = model_scoring._load_pipeline(model_scoring.find_model_folder(model_dir))
    return pipeline, [str(c) for c in pipeline.feature_names_in_]
