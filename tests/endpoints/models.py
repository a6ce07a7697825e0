"""Model folders for endpoint tests, saved the way the training component saves them.

Besides the real model there is a broken one (its serialized model file overwritten) and a
fragile one that loads and passes its smoke test but fails on very old patients, so a model
error at scoring time can be tested with real HTTP. All are saved with skops, which is what
the scoring script loads, and built from scikit-learn's own classes only: the inference
environment has none of this repository's code.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from sklearn.preprocessing import OrdinalEncoder

from data_checks.readmission_schema import LABEL
from synthetic_data.readmissions import generate_readmissions

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "components" / "src" / "train_model.py"
FRAGILE_AGE = 95


def load_train_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_model_for_endpoint_tests", TRAIN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_frame(rows: int = 3_000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    frame = generate_readmissions(rows, seed=seed)
    return frame.drop(columns=[LABEL]), frame[LABEL]


def save_trained_model(
    target: Path, rows: int = 3_000, seed: int = 0, invert_labels: bool = False
) -> Path:
    """`build_model` fitted on synthetic rows (on their inverted labels: a model that answers
    fast and without errors, and wrongly), saved as train_model.py saves it."""
    train = load_train_script()
    features, labels = training_frame(rows, seed)
    model = train.build_model(features, max_iter=60)
    model.fit(features, 1 - labels if invert_labels else labels)
    example = features.head(5)
    mlflow.sklearn.save_model(
        model,
        str(target),
        signature=infer_signature(example, model.predict_proba(example)[:, 1]),
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),  # inferring them costs a subprocess
    )
    return target


def save_broken_model(good: Path, target: Path) -> Path:
    """A copy of a good folder whose serialized model is garbage: it cannot load."""
    shutil.copytree(good, target)
    (target / "model.skops").write_bytes(b"this is not a model")
    return target


def save_fragile_model(target: Path) -> Path:
    """Loads and passes its smoke test, then fails (HTTP 500) on any row with age > 95: its
    preprocessing also encodes `age` as a category it knows only up to 95, and raises on an
    unknown one (handle_unknown="error"), standing in for a model bug in production. The
    scoring script serves it through the plain pipeline (its fast path needs unknown
    categories encoded as missing)."""
    train = load_train_script()
    features, labels = training_frame(2_000, seed=1)
    young = features["age"] <= FRAGILE_AGE
    features, labels = features[young], labels[young]
    model = train.build_model(features, max_iter=30)
    guard = OrdinalEncoder(categories=[list(range(18, FRAGILE_AGE + 1))], handle_unknown="error")
    encode = model.steps[0][1]
    encode.transformers = [*encode.transformers, ("known_ages", guard, ["age"])]
    model.fit(features, labels)
    example = features.head(5)
    mlflow.sklearn.save_model(
        model,
        str(target),
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    return target
