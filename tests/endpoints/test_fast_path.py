"""The scoring script's fast path gives the Pipeline's own probabilities, or is not used at all.

`model_scoring.py` runs in the inference environment (its own venv, where scikit-learn, Treelite
and skops are the deployment's pins), so these tests run it there: one subprocess of the
inference venv's Python, on the code snapshot a deployment runs, answers every question below
as JSON.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest

from backends.serving_package import code_snapshot, inference_venv
from tests.endpoints.conftest import ModelDirs
from tests.endpoints.models import load_train_script, training_frame

ROW_COUNTS = (1, 2, 127, 128, 2_500)
PROBE = """
import json, sys
from pathlib import Path
from model_scoring import ModelLoadError, contract_sample, load_scorer

answers = {}
for name, folder, batches in json.loads(sys.argv[1]):
    try:
        scorer = load_scorer(Path(folder))
    except ModelLoadError as error:
        answers[name] = {"error": str(error)}
        continue
    scored = {}
    for n_rows, seed in batches:
        batch = contract_sample(n_rows, seed)
        scored[n_rows] = {
            "columns": {c: list(v) for c, v in batch.columns.items()},
            "probabilities": scorer.probabilities(batch).tolist(),
        }
    answers[name] = {"kind": scorer.kind, "scored": scored}
print(json.dumps(answers))
"""


@functools.cache
def _pipeline(model_dir: Path) -> Any:
    return mlflow.sklearn.load_model(str(model_dir))


def largest_difference(model_dir: Path, scored: dict[str, Any]) -> float:
    """How far the script's probabilities are from the pipeline's, as MLflow loads it."""
    pipeline = _pipeline(model_dir)
    rows = pd.DataFrame(scored["columns"])[list(pipeline.feature_names_in_)]
    expected = pipeline.predict_proba(rows)[:, 1]
    return float(np.max(np.abs(np.asarray(scored["probabilities"]) - expected)))


@pytest.fixture(scope="module")
def unseen_category_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained without one payer code the contract allows (SelfPay)."""
    train = load_train_script()
    features, labels = training_frame(2_000, seed=3)
    seen = features["payer_code"] != "SelfPay"
    model = train.build_model(features[seen], max_iter=40).fit(features[seen], labels[seen])
    target = tmp_path_factory.mktemp("unseen") / "model"
    mlflow.sklearn.save_model(
        model,
        str(target),
        input_example=features[seen].head(3),
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    return target


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory: pytest.TempPathFactory, models: ModelDirs) -> Path:
    """The good model saved again without an input example."""
    model = mlflow.sklearn.load_model(str(models.good))
    train = load_train_script()
    target = tmp_path_factory.mktemp("bare") / "model"
    mlflow.sklearn.save_model(
        model,
        str(target),
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    return target


@pytest.fixture(scope="module")
def answers(
    tmp_path_factory: pytest.TempPathFactory,
    models: ModelDirs,
    unseen_category_model: Path,
    bare_model: Path,
) -> dict[str, Any]:
    """The script's scorers, loaded and compared with the pipeline in the inference venv."""
    snapshot = code_snapshot(tmp_path_factory.mktemp("code"))
    jobs = [
        ("good", str(models.good), [(n, n) for n in ROW_COUNTS]),
        ("unseen", str(unseen_category_model), [(400, 9)]),
        ("fragile", str(models.fragile), []),
        ("bare", str(bare_model), []),
    ]
    result = subprocess.run(
        [str(inference_venv() / "bin" / "python"), "-c", PROBE, json.dumps(jobs)],
        cwd=snapshot,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("n_rows", ROW_COUNTS)
def test_the_fast_path_matches_predict_proba_on_any_contract_rows(
    answers: dict, models: ModelDirs, n_rows: int
) -> None:
    good = answers["good"]

    assert good["kind"] == "treelite"
    assert largest_difference(models.good, good["scored"][str(n_rows)]) <= 1e-9


def test_a_category_the_model_never_saw_is_scored_as_the_pipeline_scores_it(
    answers: dict, unseen_category_model: Path
) -> None:
    unseen = answers["unseen"]

    assert "SelfPay" in unseen["scored"]["400"]["columns"]["payer_code"]
    assert unseen["kind"] == "treelite"
    assert largest_difference(unseen_category_model, unseen["scored"]["400"]) <= 1e-9


def test_a_pipeline_of_another_shape_is_served_as_it_is(answers: dict) -> None:
    assert answers["fragile"]["kind"] == "pipeline"


def test_a_model_folder_without_an_input_example_is_refused(answers: dict) -> None:
    assert "no input example" in answers["bare"]["error"]
