"""What the data gate reports for good data and for each way training data goes wrong."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from data_checks.readmission_schema import ALL_COLUMNS, LABEL, MIN_ROWS
from data_checks.validation import (
    DataValidationReport,
    ExpectationFailure,
    validate_dataframe,
    validate_file,
)
from synthetic_data.readmissions import generate_readmissions

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENT = REPO_ROOT / "components" / "src" / "validate_data.py"


@pytest.fixture(scope="module")
def good_rows() -> pd.DataFrame:
    return generate_readmissions(2_000, seed=5)


@pytest.fixture
def rows(good_rows: pd.DataFrame) -> pd.DataFrame:
    """A private copy each test may break."""
    return good_rows.copy()


def validate_as_csv(frame: pd.DataFrame, folder: Path) -> DataValidationReport:
    path = folder / "rows.csv"
    frame.to_csv(path, index=False)
    report, _ = validate_file(path)
    return report


def failures_on(report: DataValidationReport, column: str) -> list[ExpectationFailure]:
    return [f for f in report.failures if f.column == column]


def load_component() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_data", COMPONENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_good_data_passes(good_rows: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_as_csv(good_rows, tmp_path)
    assert report.passed, report.summary()
    assert report.error is None
    assert report.failures == ()
    assert report.warnings == ()
    assert report.row_count == len(good_rows)
    assert report.evaluated > 2 * len(ALL_COLUMNS)
    assert report.summary().startswith(f"All {report.evaluated} expectations passed")


def test_good_dataframe_passes_and_returns_the_full_gx_result(good_rows: pd.DataFrame) -> None:
    report, gx_result = validate_dataframe(good_rows)
    assert report.passed
    assert gx_result["success"] is True
    assert len(gx_result["results"]) == report.evaluated
    json.dumps(gx_result)


def test_missing_column_fails_and_the_other_columns_are_still_checked(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows.loc[0, "bmi"] = 99.0
    report = validate_as_csv(rows.drop(columns=["age"]), tmp_path)
    assert not report.passed
    (missing,) = failures_on(report, "age")
    assert "missing" in missing.detail
    (bmi,) = failures_on(report, "bmi")
    assert bmi.sample_values == (99,)
    assert "age" in report.summary()


def test_extra_column_only_warns(rows: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_as_csv(rows.assign(ward="B4"), tmp_path)
    assert report.passed, report.summary()
    assert any("ward" in warning for warning in report.warnings)


def test_nulls_fail_naming_the_column(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[[3, 7, 9], "systolic_bp_avg"] = np.nan
    rows.loc[4, "payer_code"] = None
    report = validate_as_csv(rows, tmp_path)
    assert not report.passed
    (bp,) = failures_on(report, "systolic_bp_avg")
    assert bp.unexpected_count == 3
    assert "null" in bp.expectation
    assert failures_on(report, "payer_code")[0].unexpected_count == 1


def test_out_of_range_values_fail_with_samples(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[[1, 2], "age"] = [130, 140]
    report = validate_as_csv(rows, tmp_path)
    (age,) = failures_on(report, "age")
    assert not report.passed
    assert age.unexpected_count == 2
    assert set(age.sample_values) == {130, 140}
    assert "age between 18 and 100 (2 rows, e.g." in report.summary()


def test_unknown_category_fails_with_the_value(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[10, "discharge_disposition"] = "Hospice"
    report = validate_as_csv(rows, tmp_path)
    (disposition,) = failures_on(report, "discharge_disposition")
    assert not report.passed
    assert disposition.sample_values == ("Hospice",)


def test_strings_in_a_numeric_column_are_a_type_failure_with_samples(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows = rows.astype({"heart_rate_avg": object})
    rows.loc[[5, 6], "heart_rate_avg"] = ["fast", "unknown"]
    rows.loc[8, "gender"] = "X"
    report = validate_as_csv(rows, tmp_path)
    assert not report.passed
    (heart_rate,) = failures_on(report, "heart_rate_avg")
    assert "numeric" in heart_rate.expectation
    assert heart_rate.unexpected_count == 2
    assert set(heart_rate.sample_values) == {"fast", "unknown"}
    assert failures_on(report, "gender")[0].sample_values == ("X",)


def test_empty_file_reports_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    report, gx_result = validate_file(path)
    assert not report.passed
    assert report.error is not None and "empty" in report.error
    assert gx_result == {}


def test_header_only_file_fails_on_row_count(good_rows: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_as_csv(good_rows.head(0), tmp_path)
    assert not report.passed
    assert report.row_count == 0
    assert any("rows" in f.expectation and "found 0 rows" in f.detail for f in report.failures)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.csv", None, "does not exist"),
        ("garbage.csv", bytes(range(256)) * 20, "binary file"),
        ("latin1.csv", "âge,sexe\nà,é\n".encode("latin-1"), "not UTF-8"),
        ("notes.csv", b"just a note\nwith no columns we know\n", "does not look like"),
        ("broken.csv", b'age,gender\n1,"M\n', "not a well-formed CSV"),
    ],
)
def test_unreadable_file_reports_what_is_wrong(
    tmp_path: Path, name: str, content: bytes | None, problem: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    report, _ = validate_file(path)
    assert not report.passed
    assert report.error is not None and problem in report.error
    assert report.summary().startswith("Data could not be validated")


def test_label_outside_zero_and_one_fails(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows.loc[[0, 1], LABEL] = [2, -1]
    report = validate_as_csv(rows, tmp_path)
    (label,) = failures_on(report, LABEL)
    assert not report.passed
    assert set(label.sample_values) == {2, -1}


def test_too_few_rows_fail(good_rows: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_as_csv(good_rows.head(MIN_ROWS - 1), tmp_path)
    assert not report.passed
    (row_count,) = report.failures
    assert row_count.column is None
    assert f"found {MIN_ROWS - 1} rows" in row_count.detail


def test_label_rate_out_of_bounds_fails(rows: pd.DataFrame, tmp_path: Path) -> None:
    rows[LABEL] = 0
    rows.loc[:9, LABEL] = 1
    report = validate_as_csv(rows, tmp_path)
    (rate,) = failures_on(report, LABEL)
    assert not report.passed
    assert "0.5%" in rate.detail


def test_report_round_trips_through_json_and_renders_markdown(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    rows.loc[[3, 4], "age"] = np.nan
    rows.loc[1, "hba1c"] = 20.0
    report = validate_as_csv(rows.assign(extra=1), tmp_path)
    assert DataValidationReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    markdown = report.to_markdown()
    assert "FAILED" in markdown
    assert "| hba1c between 3.5 and 14 | hba1c | 1 " in markdown
    assert "## Warnings" in markdown


def test_component_writes_its_three_files_and_exits_zero_on_bad_data(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    rows.loc[0, "age"] = 250
    rows.to_csv(mounted / "readmissions.csv", index=False)
    report_folder = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, str(COMPONENT), "--data", str(mounted), "--report", str(report_folder)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = DataValidationReport.from_dict(json.loads((report_folder / "report.json").read_text()))
    assert not report.passed
    assert report.data_path.endswith("readmissions.csv")
    assert "age between 18 and 100" in (report_folder / "report.md").read_text()
    assert json.loads((report_folder / "gx_result.json").read_text())["success"] is False
    assert "1 of" in completed.stdout


def test_component_reports_a_folder_without_exactly_one_csv(tmp_path: Path) -> None:
    component = load_component()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "data" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_text("age\n1\n")
    assert (
        component.main(["--data", str(tmp_path / "data"), "--report", str(tmp_path / "out")]) == 0
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["passed"] is False
    assert "2 .csv files" in report["error"]
