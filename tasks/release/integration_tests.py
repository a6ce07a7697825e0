"""Integration tests against a live endpoint: real responses, every bad request, latency.

They run against the test environment's endpoint before anyone is asked to approve, and the
results go into the evidence pack.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from sklearn.metrics import roc_auc_score

from data_checks.readmission_schema import FEATURES, LABEL
from records.serving import EndpointInfo


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class IntegrationReport:
    passed: bool
    checks: tuple[CheckResult, ...]
    p95_ms: float
    requests: int

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]


class IntegrationTestsFailed(RuntimeError):
    """The candidate's endpoint misbehaved; nothing is proposed for approval."""


def split_body(rows: pd.DataFrame) -> dict:
    """The AML `input_data` split layout."""
    return {
        "input_data": {
            "columns": list(rows.columns),
            "index": list(range(len(rows))),
            "data": rows.to_numpy().tolist(),
        }
    }


def bad_requests(good_row: dict) -> dict[str, bytes]:
    """Each kind of bad request an endpoint must answer 4xx (with a reason) and survive."""

    def records(row: dict) -> bytes:
        return json.dumps({"input_data": [row]}).encode()

    missing = {k: v for k, v in good_row.items() if k != "age"}
    columns, values = list(good_row), list(good_row.values())
    return {
        "malformed JSON": b'{"input_data": [',
        "missing column": records(missing),
        "unknown column": records({**good_row, "shoe_size": 44}),
        "wrong type": records({**good_row, "age": "old"}),
        "NaN": records({**good_row, "bmi": float("nan")}),  # json.dumps writes NaN
        "null": records({**good_row, "bmi": None}),
        "out of range": records({**good_row, "age": 230}),
        "unknown category": records({**good_row, "payer_code": "Bitcoin"}),
        "empty": json.dumps({"input_data": []}).encode(),
        "oversized": b'{"input_data": [' + b" " * (6 * 1024 * 1024) + b"]}",
        "nested 3,000 levels deep": b"[" * 3_000 + b"]" * 3_000,
        "a 400-digit number": records({**good_row, "age": 10**400}),
        "invalid UTF-8": b'{"input_data": [{"gender": "\xff\xfe"}]}',
        "a column named twice": json.dumps(
            {"input_data": {"columns": [*columns, "age"], "data": [[*values, 70]]}}
        ).encode(),
    }


def _reason(response: httpx.Response) -> str:
    """Why a request was refused: the scoring script's (and the inference server's)
    `{"message": ...}`, else the start of whatever came back."""
    try:
        return str(response.json().get("message", response.text))
    except (ValueError, AttributeError):
        return response.text[:80]


@task
def run_integration_tests(
    endpoint: EndpointInfo,
    key: str,
    test_data_dir: str,
    expected_auc: float,
    p95_budget_ms: float,
    latency_requests: int = 200,
) -> IntegrationReport:
    """Score real rows, check shape and values, send every bad request, measure latency."""
    logger = get_run_logger()
    test = pd.read_parquet(Path(test_data_dir) / "data.parquet")
    features = test[list(FEATURES)]
    headers = {"Authorization": f"Bearer {key}"}
    checks: list[CheckResult] = []
    with httpx.Client(timeout=30, headers=headers) as client:
        response = client.post(endpoint.scoring_uri, json=split_body(features))
        body = response.json() if response.status_code == 200 else {}
        predictions = body.get("predictions", [])
        shape_ok = response.status_code == 200 and len(predictions) == len(features)
        probabilities = np.array([p.get("probability", np.nan) for p in predictions], float)
        labels = {p.get("label") for p in predictions}
        values_ok = (
            shape_ok
            and bool(np.all((probabilities >= 0) & (probabilities <= 1)))
            and labels <= {0, 1}
        )
        checks.append(
            CheckResult(
                "schema",
                shape_ok and values_ok,
                f"HTTP {response.status_code}, {len(predictions)} predictions for "
                f"{len(features)} rows, probabilities in [0,1], labels in {{0,1}}",
            )
        )
        if shape_ok:
            served_auc = float(roc_auc_score(test[LABEL], probabilities))
            checks.append(
                CheckResult(
                    "served model is the tested model",
                    abs(served_auc - expected_auc) < 0.005,
                    f"AUC from the endpoint {served_auc:.4f} vs evaluation {expected_auc:.4f}",
                )
            )
        unauthenticated = httpx.post(endpoint.scoring_uri, json=split_body(features.head(1)))
        checks.append(
            CheckResult(
                "auth required",
                unauthenticated.status_code == 401,
                f"no key -> HTTP {unauthenticated.status_code}",
            )
        )
        good_row = json.loads(features.head(1).to_json(orient="records"))[0]
        for name, payload in bad_requests(good_row).items():
            bad = client.post(
                endpoint.scoring_uri, content=payload, headers={"Content-Type": "application/json"}
            )
            alive = client.post(endpoint.scoring_uri, json=split_body(features.head(1)))
            reason = _reason(bad)
            checks.append(
                CheckResult(
                    f"bad request: {name}",
                    400 <= bad.status_code < 500 and alive.status_code == 200,
                    f"HTTP {bad.status_code} ({str(reason)[:80]}); then a good request -> "
                    f"{alive.status_code}",
                )
            )
        latencies = []
        rows = features.sample(n=latency_requests, replace=True, random_state=0)
        for i in range(latency_requests):
            started = time.perf_counter()
            client.post(endpoint.scoring_uri, json=split_body(rows.iloc[[i]]))
            latencies.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(latencies, 95))
    checks.append(
        CheckResult(
            "latency",
            p95 <= p95_budget_ms,
            f"p95 {p95:.1f} ms over {latency_requests} single-row requests "
            f"(budget {p95_budget_ms:.0f} ms)",
        )
    )
    report = IntegrationReport(all(c.passed for c in checks), tuple(checks), p95, latency_requests)
    create_table_artifact(
        key="integration-tests",
        table=[{"check": c.name, "passed": c.passed, "detail": c.detail} for c in checks],
        description=f"Integration tests against {endpoint.name}",
    )
    if not report.passed:
        raise IntegrationTestsFailed("integration tests failed: " + "; ".join(report.failures()))
    logger.info("Integration tests passed (%d checks, p95 %.1f ms)", len(checks), p95)
    return report
