"""Batch scoring: the online contract and model, a row refused at a time, in mini-batches.

`components/serving/src/batch_score.py` is what an Azure ML batch deployment runs; here it runs
in this process (`init()` and `run()` as Azure ML calls them) and in the local backend's process
pool (`backends.local.batch_scoring.score_file`), on files holding rows that break the data
contract in known places.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from backends.local.batch_scoring import score_file, scoring_script
from data_checks.readmission_schema import FEATURES, LABEL
from records import lineage_tags
from records.batch import BatchScoringFailed
from records.workspace import ModelVersion
from synthetic_data.readmissions import generate_readmissions
from tests.endpoints.models import save_trained_model

THRESHOLD = 0.3
"""The model's own threshold (its test_threshold tag), not 0.5: labels must follow it."""
MODEL = ModelVersion(
    "readmission", "4", "batch-tests", None, {lineage_tags.TEST_THRESHOLD: str(THRESHOLD)}
)
AGE_RULE = "age must be a whole number from 18 to 100"
PAYER_RULE = "payer_code takes one of Medicare, Medicaid, Private, SelfPay"
BMI_RULE = "bmi must be a number from 15 to 55"
ADMISSION_RULE = "admission_type takes one of Emergency, Urgent, Elective"
BAD_VALUES: dict[int, dict[str, Any]] = {
    3: {"age": 400},
    70: {"age": "abc", "payer_code": "Bitcoin"},
    71: {"bmi": None},
    130: {"age": 71.5},
    200: {"admission_type": "Walk-in"},
}
"""Row -> the values that break the contract in it (spread over several mini-batches of 64)."""
EXPECTED_RULES = {
    3: [AGE_RULE],
    70: [AGE_RULE, PAYER_RULE],
    71: [BMI_RULE],
    130: [AGE_RULE],
    200: [ADMISSION_RULE],
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_trained_model(tmp_path_factory.mktemp("batch-model") / "model", rows=1_500)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Patients to score, plus a column the model does not know (kept in the output)."""
    frame = generate_readmissions(300, seed=21).drop(columns=[LABEL])
    frame.insert(0, "discharge_id", [f"D{i:05d}" for i in range(len(frame))])
    return frame


def with_bad_values(rows: pd.DataFrame) -> pd.DataFrame:
    broken = rows.astype(object)
    for row, values in BAD_VALUES.items():
        for column, value in values.items():
            broken.at[row, column] = value
    return broken


@pytest.fixture
def script(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModuleType, Path]:
    """batch_score, initialised in this process as Azure ML would: (module, its output)."""
    module = scoring_script()
    output = tmp_path / "job-output"
    for name, value in {
        "AZUREML_MODEL_DIR": str(model_dir),
        "AZUREML_BI_OUTPUT_PATH": str(output),
        "AZUREML_RUN_ID": "batch-job-7",
        "MODEL_NAME": MODEL.name,
        "MODEL_VERSION": MODEL.version,
        "MODEL_THRESHOLD": str(THRESHOLD),
    }.items():
        monkeypatch.setenv(name, value)
    module.init()
    return module, output


def online_probabilities(rows: pd.DataFrame, model_dir: Path) -> np.ndarray:
    """What the online scoring script answers for these rows: its request parser and scorer."""
    scoring_script()  # the serving code folder importable, as the scoring script has it
    contract = importlib.import_module("request_contract")
    model_scoring = importlib.import_module("model_scoring")
    body = {"input_data": json.loads(rows[list(FEATURES)].to_json(orient="records"))}
    batch = contract.parse_scoring_request(json.dumps(body).encode())
    return model_scoring.load_scorer(model_dir).probabilities(batch)


def test_each_refused_row_names_every_rule_it_breaks_and_the_rest_are_scored(
    script: tuple[ModuleType, Path], rows: pd.DataFrame, tmp_path: Path
) -> None:
    module, output = script
    source = tmp_path / "discharges.csv"
    with_bad_values(rows).to_csv(source, index=False)

    summary = module.run([str(source)]).to_dict("records")

    assert len(summary) == 1  # one row per file: what Azure ML counts as one file done
    done = summary[0]
    assert (done["rows"], done["scored"], done["refused"]) == (300, 295, 5)
    assert json.loads(done["refusals"]) == {
        AGE_RULE: 3,
        PAYER_RULE: 1,
        BMI_RULE: 1,
        ADMISSION_RULE: 1,
    }
    rejects = pq.read_table(output / "rejects" / "discharges.parquet").to_pandas()
    assert rejects["row"].tolist() == sorted(BAD_VALUES)
    assert rejects["discharge_id"].tolist() == [f"D{i:05d}" for i in sorted(BAD_VALUES)]
    for _, refused in rejects.iterrows():
        assert refused["rules"].split("; ") == EXPECTED_RULES[refused["row"]]
    reasons = dict(zip(rejects["row"], rejects["reasons"], strict=True))
    assert reasons[3] == f"column 'age': 400 (a number) is not valid; {AGE_RULE}"
    assert reasons[70] == (
        f"column 'age': 'abc' (a string) is not valid; {AGE_RULE}; "
        f"column 'payer_code': 'Bitcoin' (a string) is not valid; {PAYER_RULE}"
    )
    assert reasons[71] == f"column 'bmi': null (missing) is not valid; {BMI_RULE}"
    assert reasons[130] == f"column 'age': 71.5 (a number) is not valid; {AGE_RULE}"
    assert rejects.loc[rejects["row"] == 70, "age"].item() == "abc"  # as read, not coerced
    scored = pq.read_table(output / "scored" / "discharges.parquet").to_pandas()
    assert scored["discharge_id"].tolist() == [
        f"D{i:05d}" for i in range(300) if i not in BAD_VALUES
    ]


def test_scored_rows_are_the_input_columns_plus_probability_label_model_and_run(
    script: tuple[ModuleType, Path], rows: pd.DataFrame, tmp_path: Path
) -> None:
    module, output = script
    source = tmp_path / "discharges.parquet"
    rows.to_parquet(source, index=False)

    module.run([str(source)])

    scored = pq.read_table(output / "scored" / "discharges.parquet")
    assert scored.column_names == [
        *rows.columns,
        "probability",
        "label",
        "model_name",
        "model_version",
        "run_id",
    ]
    frame = scored.to_pandas()
    assert frame[list(rows.columns)].equals(rows)
    assert set(frame["model_name"]) == {"readmission"}
    assert set(frame["model_version"]) == {"4"}
    assert set(frame["run_id"]) == {"batch-job-7"}
    assert frame["label"].tolist() == (frame["probability"] >= THRESHOLD).astype(int).tolist()
    assert 0 < frame["label"].sum() < len(frame)  # the threshold decides some both ways
    assert pq.read_table(output / "rejects" / "discharges.parquet").num_rows == 0


def test_batch_probabilities_are_the_online_scorers_for_the_same_rows(
    script: tuple[ModuleType, Path], rows: pd.DataFrame, model_dir: Path, tmp_path: Path
) -> None:
    module, output = script
    source = tmp_path / "discharges.csv"
    rows.to_csv(source, index=False)

    module.run([str(source)])

    scored = pq.read_table(output / "scored" / "discharges.parquet")["probability"].to_numpy()
    assert np.array_equal(scored, online_probabilities(rows, model_dir))


def test_the_local_path_reads_mini_batches_and_keeps_the_input_order(
    model_dir: Path, rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "discharges.csv"
    with_bad_values(rows).to_csv(source, index=False)

    summary = score_file(
        source, MODEL, model_dir, tmp_path / "out", mini_batch_rows=64, workers=2, run_id="r-1"
    )

    assert summary.mini_batches == math.ceil(300 / 64)
    assert (summary.rows, summary.rows_scored, summary.rows_refused) == (300, 295, 5)
    assert summary.refused_by_rule[AGE_RULE] == 3
    assert (summary.model_name, summary.model_version, summary.run_id) == (
        "readmission",
        "4",
        "r-1",
    )
    rejects = pq.read_table(summary.rejects).to_pandas()
    assert rejects["row"].tolist() == sorted(BAD_VALUES)  # the input's rows, not a batch's
    scored = pq.read_table(summary.scored).to_pandas()
    kept = rows.drop(index=list(BAD_VALUES))
    assert scored["discharge_id"].tolist() == kept["discharge_id"].tolist()
    assert np.array_equal(scored["probability"].to_numpy(), online_probabilities(kept, model_dir))
    assert summary.label_rate == pytest.approx((scored["probability"] >= THRESHOLD).mean())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rejects", "scored"]


def test_refusals_past_the_error_threshold_fail_the_job_with_the_counts(
    model_dir: Path, rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "discharges.parquet"
    with_bad_values(rows).astype(str).to_parquet(source, index=False)  # numbers as text too
    output = tmp_path / "out"

    with pytest.raises(BatchScoringFailed, match="more than the error threshold of 2") as failed:
        score_file(
            source, MODEL, model_dir, output, mini_batch_rows=100, workers=1, error_threshold=2
        )

    # the first mini-batch (rows 0-99) already holds 3 refused rows: the job stops there
    assert (failed.value.rows_read, failed.value.rows_refused) == (100, 3)
    assert failed.value.refused_by_rule == {AGE_RULE: 2, PAYER_RULE: 1, BMI_RULE: 1}
    assert not (output / "scored" / "discharges.parquet").exists()  # no half result
    rejects = pq.read_table(output / "rejects" / "discharges.parquet").to_pandas()
    assert rejects["row"].tolist() == [3, 70, 71]  # what to fix, so far
