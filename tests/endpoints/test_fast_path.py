"""The compiled scoring path gives the Pipeline's own probabilities, or is not used at all."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest

from backends.local.scoring import (
    PACKED_MAX_ROWS,
    DeploymentLoadError,
    PipelineScorer,
    contract_sample,
    load_scorer,
)
from tests.endpoints.conftest import ModelDirs
from tests.endpoints.models import load_train_script, training_frame


@pytest.mark.parametrize("n_rows", [1, 2, PACKED_MAX_ROWS - 1, PACKED_MAX_ROWS, 2_500])
def test_the_fast_path_matches_predict_proba_on_any_contract_rows(
    models: ModelDirs, n_rows: int
) -> None:
    scorer = load_scorer(models.good)
    pipeline = mlflow.sklearn.load_model(str(models.good))
    batch = contract_sample(n_rows, seed=n_rows)

    expected = PipelineScorer(pipeline, pipeline.feature_names_in_).probabilities(batch)

    assert scorer.kind == "packed-trees"
    np.testing.assert_allclose(scorer.probabilities(batch), expected, rtol=0, atol=1e-12)


def test_a_category_the_model_never_saw_is_scored_as_the_pipeline_scores_it(
    tmp_path: Path,
) -> None:
    train = load_train_script()
    features, labels = training_frame(2_000, seed=3)
    seen = features["payer_code"] != "SelfPay"
    model = train.build_model(features[seen], max_iter=40).fit(features[seen], labels[seen])
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "model"),
        input_example=features[seen].head(3),
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    batch = contract_sample(400, seed=9)
    assert "SelfPay" in batch.columns["payer_code"]

    scorer = load_scorer(tmp_path / "model")

    expected = PipelineScorer(model, model.feature_names_in_).probabilities(batch)
    assert scorer.kind == "packed-trees"
    np.testing.assert_allclose(scorer.probabilities(batch), expected, rtol=0, atol=1e-12)


def test_a_pipeline_of_another_shape_is_served_as_it_is(models: ModelDirs) -> None:
    assert load_scorer(models.fragile).kind == "pipeline"


def test_a_model_folder_without_an_input_example_is_refused(
    models: ModelDirs, tmp_path: Path
) -> None:
    model = mlflow.sklearn.load_model(str(models.good))
    train = load_train_script()
    mlflow.sklearn.save_model(
        model,
        str(tmp_path / "bare"),
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )

    with pytest.raises(DeploymentLoadError, match="no input example"):
        load_scorer(tmp_path / "bare")
