"""Scoring through a real endpoint: the endpoint server in front, the scoring script in Azure
ML's inference server behind it. Layouts, auth, bad requests, targeting, collected data."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest

from backends.local.endpoint_server import REQUEST_CONTRACT
from backends.traffic_rules import RequestRefused
from tests.endpoints.conftest import (
    Caller,
    ModelDirs,
    a_second_ago,
    collected,
    model_status,
    of_request,
    records_body,
    split_body,
)

MAX_ROWS: int = REQUEST_CONTRACT.MAX_ROWS


@pytest.fixture(autouse=True)
def all_live_traffic_on_blue(shared: Caller) -> None:
    shared.endpoints.set_traffic(shared.name, {"blue": 100}, None)


def test_split_and_records_layouts_return_the_models_probabilities_and_labels(
    shared: Caller, rows: pd.DataFrame, models: ModelDirs
) -> None:
    batch = rows.head(7)
    expected = mlflow.sklearn.load_model(str(models.good)).predict_proba(batch)[:, 1]

    for body in (split_body(batch), records_body(batch)):
        response = shared.score(body)

        assert response.status_code == 200, response.text
        answer = response.json()
        assert response.headers["azureml-model-deployment"] == "blue"
        assert set(answer) == {"predictions", "model"}  # the script's answer, passed through
        assert answer["model"] == {"name": "readmission", "version": "1"}
        probabilities = [p["probability"] for p in answer["predictions"]]
        np.testing.assert_allclose(probabilities, expected, atol=1e-9)
        assert [p["label"] for p in answer["predictions"]] == [int(p >= 0.5) for p in expected]


def test_an_explanation_asked_in_the_query_reaches_the_scoring_script_through_the_endpoint(
    shared: Caller, rows: pd.DataFrame
) -> None:
    """The endpoint passes the query string on (`?explain=true`: the scoring script adds each
    row's top contributions); without it the answer is the plain one."""
    body = json.dumps(split_body(rows.head(2))).encode()
    headers = {"Authorization": f"Bearer {shared.key}", "Content-Type": "application/json"}

    explained = shared.http.post(
        shared.scoring_uri,
        params={"explain": "true", "explain_top": 3},
        content=body,
        headers=headers,
    )

    assert explained.status_code == 200, explained.text
    answer = explained.json()
    assert answer["explanation"]["top"] == 3
    assert [len(p["contributions"]) for p in answer["predictions"]] == [3, 3]
    assert "explanation" not in shared.score(body).json()


def test_a_large_batch_gets_the_pipelines_probabilities_in_row_order(
    shared: Caller, rows: pd.DataFrame, models: ModelDirs
) -> None:
    expected = mlflow.sklearn.load_model(str(models.good)).predict_proba(rows)[:, 1]

    response = shared.score(split_body(rows))

    assert response.status_code == 200, response.text
    probabilities = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(probabilities, expected, atol=1e-9)


def test_requests_without_the_key_or_with_a_wrong_key_are_refused(
    shared: Caller, rows: pd.DataFrame
) -> None:
    body = split_body(rows.head(1))

    missing = shared.http.post(shared.scoring_uri, json=body)
    wrong = shared.http.post(
        shared.scoring_uri, json=body, headers={"Authorization": "Bearer not-the-key"}
    )

    for response in (missing, wrong):
        assert response.status_code == 401
        assert "Authorization: Bearer" in response.json()["message"]
    admin = shared.http.get(shared.scoring_uri.replace("/score", "/admin/state"))
    assert admin.status_code == 401


def _records(rows: pd.DataFrame, **changes: Any) -> bytes:
    """Three records, the last one changed: the reason must name row 2."""
    records = json.loads(rows.head(3).to_json(orient="records"))
    records[2].update(changes)
    return json.dumps({"input_data": records}).encode()


def _without(rows: pd.DataFrame, column: str) -> bytes:
    records = json.loads(rows.head(2).to_json(orient="records"))
    for record in records:
        del record[column]
    return json.dumps({"input_data": records}).encode()


def _too_many_rows(rows: pd.DataFrame) -> bytes:
    many = pd.concat([rows] * (MAX_ROWS // len(rows) + 1)).head(MAX_ROWS + 1)
    return json.dumps(split_body(many)).encode()


def _ragged(rows: pd.DataFrame) -> bytes:
    body = split_body(rows.head(2))
    body["input_data"]["data"][1] = body["input_data"]["data"][1][:-1]
    return json.dumps(body).encode()


def _column_named_twice(rows: pd.DataFrame) -> bytes:
    body = split_body(rows.head(1))
    body["input_data"]["columns"].append("age")
    body["input_data"]["data"][0].append(70)
    return json.dumps(body).encode()


def _oversized_chunks() -> Iterator[bytes]:
    yield b'{"input_data": ['
    for _ in range(6):
        yield b" " * (1024 * 1024)
    yield b"]}"


BAD_REQUESTS: dict[str, tuple[Any, int, tuple[str, ...]]] = {
    # name: (body or a function of rows, status, words the reason must contain)
    "malformed JSON": (b'{"input_data": [', 400, ("not valid UTF-8 JSON",)),
    "nested 3,000 levels deep": (b"[" * 3_000 + b"]" * 3_000, 400, ("not valid UTF-8 JSON",)),
    "invalid UTF-8": (b'{"input_data": [{"gender": "\xff\xfe"}]}', 400, ("not valid UTF-8",)),
    "a 400-digit integer": (
        lambda r: _records(r, age=10**400),
        422,
        ("row 2", "'age'", "1329-bit integer"),
    ),
    "a column named twice": (_column_named_twice, 422, ("['age'] more than once",)),
    "not an object": (b"[1, 2, 3]", 422, ("input_data",)),
    "wrong top-level key": (b'{"data": []}', 422, ("input_data",)),
    "input_data is a string": (b'{"input_data": "age=70"}', 422, ("input_data is a str",)),
    "missing column": (lambda r: _without(r, "age"), 422, ("missing columns", "age")),
    "unknown column": (lambda r: _records(r, shoe_size=44), 422, ("unknown columns", "shoe_size")),
    "string in a numeric column": (lambda r: _records(r, age="old"), 422, ("row 2", "'age'")),
    "number in a categorical column": (
        lambda r: _records(r, gender=1),
        422,
        ("row 2", "'gender'", "M, F"),
    ),
    "boolean in a numeric column": (lambda r: _records(r, bmi=True), 422, ("row 2", "'bmi'")),
    "NaN": (lambda r: _records(r, bmi=math.nan), 422, ("row 2", "'bmi'", "not a finite")),
    "Infinity": (lambda r: _records(r, hba1c=math.inf), 422, ("row 2", "'hba1c'")),
    "null": (lambda r: _records(r, bmi=None), 422, ("row 2", "'bmi'", "null")),
    "out of range": (lambda r: _records(r, age=230), 422, ("row 2", "'age'", "18 to 100")),
    "fractional whole number": (lambda r: _records(r, age=70.5), 422, ("whole number",)),
    "unknown category": (
        lambda r: _records(r, payer_code="Bitcoin"),
        422,
        ("row 2", "'payer_code'", "Bitcoin"),
    ),
    "ragged split row": (_ragged, 422, ("row 1 has 16 values",)),
    "empty input": (b'{"input_data": []}', 422, ("no rows",)),
    "empty split data": (
        lambda r: json.dumps({"input_data": {"columns": list(r.columns), "data": []}}).encode(),
        422,
        ("no rows",),
    ),
    "too many rows": (_too_many_rows, 413, (f"{MAX_ROWS + 1:,} rows",)),
    "oversized body": (
        b'{"input_data": [' + b" " * (6 * 1024 * 1024) + b"]}",
        413,
        ("bytes", "5,242,880"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_its_reason_and_the_server_keeps_serving(
    shared: Caller, rows: pd.DataFrame, case: str
) -> None:
    body, status, words = BAD_REQUESTS[case]
    content = body(rows) if callable(body) else body

    response = shared.score(content)

    assert model_status(response) == status, response.text
    assert response.status_code in (status, 424)  # the endpoint's own 413, or the script's
    reason = response.json()["message"]
    for word in words:
        assert word in reason, reason
    assert shared.score(split_body(rows.head(1))).status_code == 200


def test_an_oversized_body_without_content_length_is_refused_too(
    shared: Caller, rows: pd.DataFrame
) -> None:
    response = shared.http.post(
        shared.scoring_uri,
        content=_oversized_chunks(),  # chunked: the size is only known by counting
        headers={"Authorization": f"Bearer {shared.key}", "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert "more than the 5,242,880 allowed" in response.json()["message"]
    assert shared.score(split_body(rows.head(1))).status_code == 200


def test_the_deployment_header_targets_one_deployment_whatever_the_traffic(
    shared: Caller, rows: pd.DataFrame
) -> None:
    body = split_body(rows.head(2))

    green = shared.score(body, {"azureml-model-deployment": "green"})
    unknown = shared.score(body, {"azureml-model-deployment": "purple"})

    assert green.status_code == 200
    assert green.headers["azureml-model-deployment"] == "green"
    assert green.json()["model"]["version"] == "2"
    assert unknown.status_code == 404
    assert "purple" in unknown.json()["message"] and "green" in unknown.json()["message"]
    assert shared.score(body).headers["azureml-model-deployment"] == "blue"


def test_collected_rows_join_each_input_to_the_scripts_output_on_the_request_id(
    shared: Caller, rows: pd.DataFrame
) -> None:
    since = a_second_ago()
    batch = rows.iloc[10:13]

    response = shared.score(split_body(batch), {"x-request-id": "capture-test-1"})
    unnamed = shared.score(split_body(rows.iloc[[20]]))

    assert response.status_code == 200 and unnamed.status_code == 200
    assert response.headers["x-request-id"] == "capture-test-1"
    made_up = unnamed.headers["x-request-id"]  # the endpoint names requests sent unnamed
    assert len(made_up) >= 32
    found = collected(
        shared.endpoints,
        shared.name,
        since,
        lambda got: len(of_request(got, "capture-test-1")) == 3 and len(of_request(got, made_up)),
    )
    mine = of_request(found, "capture-test-1")
    sent = json.loads(batch.to_json(orient="records"))
    predictions = response.json()["predictions"]
    assert len(mine) == 3
    for (_, row), inputs, prediction in zip(mine.iterrows(), sent, predictions, strict=True):
        assert {k: row[k] for k in inputs} == inputs
        # the collector sends pandas' to_json of the outputs: 10 decimals
        assert row["probability"] == pytest.approx(prediction["probability"], abs=1e-10)
        assert row["label"] == prediction["label"]
        assert row["deployment"] == "blue" and row["model_version"] == "1"
        assert not row["mirrored"]
        assert datetime.fromisoformat(row["timestamp"]).tzinfo is not None
    assert of_request(found, made_up)["age"].tolist() == [int(rows.iloc[20]["age"])]


def test_health_probes_and_metrics_count_live_requests(shared: Caller, rows: pd.DataFrame) -> None:
    base = shared.scoring_uri.removesuffix("/score")
    start = datetime.now(UTC)

    for i in range(25):
        assert shared.score(split_body(rows.iloc[[i]])).status_code == 200
    metrics = shared.endpoints.serving_metrics(shared.name, start, datetime.now(UTC))
    health, idle = metrics.of("blue"), metrics.of("green")

    assert httpx.get(f"{base}/health/live").status_code == 200
    ready = httpx.get(f"{base}/health/ready")
    assert ready.status_code == 200 and ready.json()["live"] == ["blue"]
    assert metrics.coverage == 1.0
    assert (health.requests, health.errors) == (25, 0) and health.p95_ms > 0
    assert (idle.requests, idle.errors, idle.p95_ms) == (0, 0, None)
    assert "green" not in metrics.deployments  # served nothing in the window
    later = shared.endpoints.serving_metrics(shared.name, datetime.now(UTC), datetime.now(UTC))
    assert later.of("blue").requests == 0


def test_a_window_counts_only_the_requests_answered_inside_it(
    shared: Caller, rows: pd.DataFrame
) -> None:
    body = split_body(rows.head(1))
    before = [shared.score(body) for _ in range(3)]
    start = datetime.now(UTC)
    inside = [shared.score(body) for _ in range(4)]
    end = datetime.now(UTC)
    after = [shared.score(body) for _ in range(5)]

    window = shared.endpoints.serving_metrics(shared.name, start, end)
    around = shared.endpoints.serving_metrics(
        shared.name, start - timedelta(minutes=1), datetime.now(UTC)
    )

    assert all(r.status_code == 200 for r in before + inside + after)
    assert (window.start, window.end, window.coverage) == (start, end, 1.0)
    assert window.of("blue").requests == 4
    assert around.of("blue").requests >= 12  # and whatever earlier tests sent


def test_a_rehearsed_metrics_delay_holds_the_figures_back_until_they_are_published(
    shared: Caller, rows: pd.DataFrame
) -> None:
    start = datetime.now(UTC)
    shared.endpoints.rehearse_metrics_delay(shared.name, 1.5)
    try:
        answers = [shared.score(split_body(rows.iloc[[i]])) for i in range(6)]
        end = datetime.now(UTC)
        early = shared.endpoints.serving_metrics(shared.name, start, end)
        time.sleep(1.6)
        published = shared.endpoints.serving_metrics(shared.name, start, end)
    finally:
        shared.endpoints.rehearse_metrics_delay(shared.name, 0)

    assert all(a.status_code == 200 for a in answers)
    assert end - start < timedelta(seconds=1.5), "too slow to see the delay hold anything back"
    assert early.coverage < 1.0 and early.covered_until is not None
    assert early.covered_until < end
    assert early.of("blue").requests == 0 and early.deployments == {}
    assert published.coverage == 1.0
    assert published.of("blue").requests == 6 and published.of("blue").errors == 0


def test_the_metrics_routes_refuse_an_empty_window_and_a_negative_delay(shared: Caller) -> None:
    now = datetime.now(UTC)

    with pytest.raises(RequestRefused, match="start must be before end") as empty:
        shared.endpoints.serving_metrics(shared.name, now, now - timedelta(seconds=1))
    with pytest.raises(RequestRefused, match="seconds") as negative:
        shared.endpoints.rehearse_metrics_delay(shared.name, -1)
    with pytest.raises(ValueError, match="no timezone"):
        shared.endpoints.serving_metrics(shared.name, now.replace(tzinfo=None), now)

    assert empty.value.status == 422 and negative.value.status == 422
