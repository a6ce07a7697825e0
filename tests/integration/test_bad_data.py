"""Bad data stops train_dev before any training job, with a report, and registers nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.client.schemas.objects import StateType

import backends
from data_checks.readmission_schema import LABEL
from flows.train_dev import train_dev
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tests.integration.release_helpers import publish_working_tree_assets

MODEL = load_training_settings().model_name


def _with(frame: pd.DataFrame, change: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    return change(frame.copy())


def _set(column: str, rows: slice, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index[rows], column] = value
        return frame

    return change


BAD_FRAMES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "missing_column": (lambda f: f.drop(columns=["hba1c"]), "hba1c"),
    "nulls": (_set("bmi", slice(0, 25), np.nan), "bmi"),
    "out_of_range": (_set("age", slice(0, 12), 130), "age"),
    "unknown_category": (_set("payer_code", slice(0, 9), "Bitcoin"), "payer_code"),
    "wrong_type": (_set("num_medications", slice(0, 7), "many"), "num_medications"),
    "label_outside_0_1": (_set(LABEL, slice(0, 5), 2), LABEL),
}


@pytest.fixture(scope="module")
def good_frame() -> pd.DataFrame:
    return generate_readmissions(3_000, seed=5)


def assert_stopped_before_training(state, expected: str) -> None:
    assert state.type == StateType.FAILED
    error = str(state.result(raise_on_failure=False))
    assert expected in error, error
    workspace = backends.workspace("dev")
    assert workspace.client.get_experiment_by_name("readmission-training") is None
    assert workspace.list_model_versions(MODEL) == []
    assert not (workspace.directory / "data").exists()


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_data_fails_before_training(
    case: str, mlops_root: Path, tmp_path: Path, good_frame: pd.DataFrame
) -> None:
    change, column = BAD_FRAMES[case]
    path = tmp_path / f"{case}.csv"
    _with(good_frame, change).to_csv(path, index=False)
    assert_stopped_before_training(train_dev(data_path=str(path), return_state=True), column)


@pytest.mark.parametrize(
    "case,content,expected",
    [
        ("empty_file", b"", "empty"),
        ("unreadable_file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe", "read"),
    ],
)
def test_unusable_files_fail_before_training(
    case: str, content: bytes, expected: str, mlops_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    state = train_dev(data_path=str(path), return_state=True)
    assert_stopped_before_training(state, "")
    assert expected in str(state.result(raise_on_failure=False)).lower()


def test_extra_column_only_warns_and_training_goes_on(mlops_root: Path, tmp_path: Path) -> None:
    frame = generate_readmissions(6_000, seed=8)
    frame["favourite_colour"] = "blue"
    path = tmp_path / "extra.csv"
    frame.to_csv(path, index=False)
    publish_working_tree_assets()  # promoted before: training ends without asking
    state = train_dev(data_path=str(path), return_state=True)
    assert state.type == StateType.COMPLETED, state.message
    assert len(backends.workspace("dev").list_model_versions(MODEL)) == 1
