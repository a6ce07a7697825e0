"""Candidates for rollout tests that serve fine and are wrong in one way: a slow one (right
answers, several times the old model's latency) and an inverted one (fast, error-free, and
saying the opposite of the live model)."""

from __future__ import annotations

from pathlib import Path

import mlflow.sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from tests.endpoints.models import load_train_script, save_trained_model, training_frame


def save_slow_model(target: Path) -> Path:
    """The training script's encoder feeding a 1,500-tree random forest (about 100 ms a row on
    these cores, against a few ms for the real model), in a three-step pipeline so the scoring
    script serves it through the plain pipeline: a model that is correct but too slow."""
    train = load_train_script()
    features, labels = training_frame(2_000, seed=2)
    encode = train.build_model(features, max_iter=10).steps[0][1]
    model = Pipeline(
        [
            ("encode", encode),
            ("identity", FunctionTransformer()),
            ("forest", RandomForestClassifier(n_estimators=1_500, max_depth=8, n_jobs=1)),
        ]
    )
    model.fit(features, labels)
    mlflow.sklearn.save_model(
        model,
        str(target),
        input_example=features.head(5),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=train.trusted_types(model),
        pip_requirements=train.pip_requirements(),
    )
    return target


def save_inverted_model(target: Path) -> Path:
    """The real training recipe fitted on inverted labels: it loads, answers every request
    quickly and without an error, so only comparing its answers with the live model's shows
    it is wrong (it disagrees on about 90% of labels)."""
    return save_trained_model(target, rows=1_500, seed=5, invert_labels=True)
