"""Local explanations from the scoring script: asked for in the query string, exact, optional.

The script runs as a deployment runs it (`azmlinfsrv` from the inference venv, the code
snapshot), serving the model the endpoint tests train (`tests/endpoints/models.py`), and these
tests call it over HTTP. What the method promises (components/serving/src/model_scoring.py):
base value + contributions = the row's log-odds = logit(probability), and the base value is the
model's mean log-odds over the rows its trees were grown on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest

from bench.explain import scoring_script
from data_checks.readmission_schema import FEATURES, LABEL
from synthetic_data.readmissions import generate_readmissions
from tests.endpoints.conftest import split_body
from tests.endpoints.models import (
    load_train_script,
    save_fragile_model,
    save_trained_model,
    training_frame,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain-models")
    return {
        "good": save_trained_model(root / "good"),
        "fragile": save_fragile_model(root / "fragile"),  # served through the plain pipeline
    }


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[str]:
    with scoring_script(models["good"], tmp_path_factory.mktemp("explain-good")) as url:
        yield url


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return generate_readmissions(200, seed=17).drop(columns=[LABEL])


def score(url: str, rows: pd.DataFrame, query: str = "") -> httpx.Response:
    return httpx.post(f"{url}/score{query}", json=split_body(rows), timeout=60)


def logit(probabilities: Any) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def test_every_contribution_with_the_base_value_adds_up_to_the_rows_log_odds(
    script: str, rows: pd.DataFrame
) -> None:
    response = score(script, rows, f"?explain=true&explain_top={len(FEATURES)}")

    assert response.status_code == 200, response.text
    answer = response.json()
    base = answer["explanation"]["base_value"]
    predictions = answer["predictions"]
    sums = [base + sum(c["contribution"] for c in p["contributions"]) for p in predictions]
    np.testing.assert_allclose(sums, logit([p["probability"] for p in predictions]), atol=1e-6)
    np.testing.assert_allclose(sums, [p["log_odds"] for p in predictions], atol=1e-9)
    assert all(
        sorted(c["feature"] for c in p["contributions"]) == sorted(FEATURES) for p in predictions
    )
    assert all(p["other_features"] == pytest.approx(0, abs=1e-12) for p in predictions)


def test_the_top_contributions_are_the_largest_with_the_values_sent_and_the_rest_summed(
    script: str, rows: pd.DataFrame
) -> None:
    batch = rows.head(30)
    everything = score(script, batch, f"?explain=true&explain_top={len(FEATURES)}").json()

    response = score(script, batch, "?explain=true")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["explanation"]["top"] == 5
    assert answer["explanation"]["units"] == "log-odds"
    for row, (short, full) in enumerate(
        zip(answer["predictions"], everything["predictions"], strict=True)
    ):
        sizes = sorted((abs(c["contribution"]) for c in full["contributions"]), reverse=True)
        shown = short["contributions"]
        assert [abs(c["contribution"]) for c in shown] == pytest.approx(sizes[:5])
        assert all(c["value"] == batch.iloc[row][c["feature"]] for c in shown)
        total = answer["explanation"]["base_value"] + sum(c["contribution"] for c in shown)
        assert total + short["other_features"] == pytest.approx(short["log_odds"], abs=1e-9)


def test_the_base_value_is_the_models_mean_log_odds_over_the_rows_its_trees_were_grown_on(
    tmp_path: Path, rows: pd.DataFrame
) -> None:
    """With early stopping (as train_model.py trains) the trees grow on a split-off 90%, so the
    promise is checked on a model grown on every training row."""
    train = load_train_script()
    features, labels = training_frame(2_000, seed=4)
    model = train.build_model(features, max_iter=40)
    model.set_params(**{f"{model.steps[-1][0]}__early_stopping": False}).fit(features, labels)
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "model"),
        input_example=features.head(3),
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    with scoring_script(tmp_path / "model", tmp_path) as url:
        base = score(url, rows.head(1), "?explain=true").json()["explanation"]["base_value"]

    assert base == pytest.approx(float(np.mean(model.decision_function(features))), abs=1e-9)


def test_a_request_without_the_flag_answers_exactly_as_before(
    script: str, rows: pd.DataFrame, models: dict[str, Path]
) -> None:
    batch = rows.head(20)
    expected = mlflow.sklearn.load_model(str(models["good"])).predict_proba(batch)[:, 1]

    for query in ("", "?explain=false", "?something=else"):
        response = score(script, batch, query)

        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == {"predictions", "model"}
        assert all(set(p) == {"probability", "label"} for p in answer["predictions"])
        np.testing.assert_allclose(
            [p["probability"] for p in answer["predictions"]], expected, atol=1e-9
        )


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?explain=yes", "explain='yes'"),
        ("?explain=", "explain=''"),
        ("?explain=true&explain=false", "at most once"),
        ("?explain=true&explain_top=0", "explain_top='0'"),
        (f"?explain=true&explain_top={len(FEATURES) + 1}", f"from 1 to {len(FEATURES)}"),
        ("?explain=true&explain_top=three", "explain_top='three'"),
        ("?explain_top=3", "explain_top needs explain=true"),
    ],
)
def test_a_bad_explain_flag_gets_a_400_naming_it_and_the_script_keeps_serving(
    script: str, rows: pd.DataFrame, query: str, named: str
) -> None:
    refused = score(script, rows.head(2), query)
    after = score(script, rows.head(2), "?explain=true")

    assert refused.status_code == 400, refused.text
    assert named in refused.json()["message"]
    assert after.status_code == 200, after.text


def test_a_model_served_through_its_plain_pipeline_refuses_explanations_but_still_scores(
    tmp_path: Path, rows: pd.DataFrame, models: dict[str, Path]
) -> None:
    batch = rows[rows["age"] <= 90].head(5)  # the fragile model fails above 95
    with scoring_script(models["fragile"], tmp_path) as url:
        refused = score(url, batch, "?explain=true")
        plain = score(url, batch)

    assert refused.status_code == 422, refused.text
    assert "without explain" in refused.json()["message"]
    assert plain.status_code == 200, plain.text
