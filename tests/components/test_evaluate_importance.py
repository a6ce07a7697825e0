"""The evaluate step's global explanation: permutation importance drawn as a picture a reviewer
reads (components/src/evaluate_model.py, `plot_feature_importance`), on a model trained as the
training component trains it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import mlflow.sklearn
import pytest

from data_checks.readmission_schema import FEATURES, LABEL
from synthetic_data.readmissions import generate_readmissions
from tests.endpoints.models import save_trained_model

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "src"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_evaluate_script() -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))  # it imports fairness.py beside it, as the component does
    try:
        spec = importlib.util.spec_from_file_location(
            "evaluate_for_tests", SCRIPTS / "evaluate_model.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


def test_the_picture_ranks_every_feature_and_one_the_model_cannot_use_costs_no_auc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    evaluate = load_evaluate_script()
    model = mlflow.sklearn.load_model(str(save_trained_model(tmp_path / "model", rows=2_000)))
    test = generate_readmissions(1_500, seed=8)
    features, labels = test.drop(columns=[LABEL]), test[LABEL]
    features["gender"] = features["gender"].iloc[0]  # one value: shuffling it changes nothing

    importance = evaluate.plot_feature_importance(
        model, features, labels, tmp_path / "feature_importance.png"
    )

    picture = (tmp_path / "feature_importance.png").read_bytes()
    assert picture.startswith(PNG_MAGIC) and len(picture) > 10_000
    assert set(importance) == set(FEATURES)
    assert importance["gender"] == 0.0
    assert max(importance.values()) > 0.005  # the model does rely on something
