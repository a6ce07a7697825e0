"""The example row the CLI shows a person is a request the prod endpoint accepts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, EXAMPLE_ROW, NUMERIC_COLUMNS

SERVING = Path(__file__).resolve().parents[2] / "components" / "serving" / "src"


@pytest.fixture
def request_contract(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The scoring script's own request checks, loaded from its file as the server does."""
    spec = importlib.util.spec_from_file_location(
        "request_contract", SERVING / "request_contract.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "request_contract", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_the_example_row_names_every_feature_within_the_contract() -> None:
    assert set(EXAMPLE_ROW) == {c.name for c in (*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS)}
    for column in NUMERIC_COLUMNS:
        value = EXAMPLE_ROW[column.name]
        assert isinstance(value, int | float), column.name
        assert column.minimum <= value <= column.maximum, column.name
        assert not column.integer or float(value).is_integer(), column.name
    for category in CATEGORICAL_COLUMNS:
        assert EXAMPLE_ROW[category.name] in category.values, category.name


def test_the_scoring_script_accepts_the_example_request(request_contract: ModuleType) -> None:
    body = json.dumps({"input_data": [EXAMPLE_ROW]}).encode()

    batch = request_contract.parse_scoring_request(body)

    assert batch.sent_records == [EXAMPLE_ROW]
