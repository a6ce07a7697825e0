"""Train the readmission model: an sklearn Pipeline with the preprocessing inside it.

The reference system one-hot encoded outside the model, so every client had to repeat it. Here
the Pipeline takes raw fields (strings for categories) and returns a probability.

Where the model lives: only in the component's `model` output, an MLflow model folder (signature,
input example, skops trusted types) that the flow registers through the backend (azure-ai-ml on
Azure). The step's MLflow run holds parameters and metrics, and no longer a copy of the model:
`mlflow.sklearn.log_model` creates a LoggedModel through `/api/2.0/mlflow/logged-models`, a
route Azure ML's MLflow tracking server does not have (404, Azure/azure-sdk-for-python#44896),
so with MLflow 3 it failed the job. `save_model` writes the folder locally and calls no route.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

LABEL = "readmitted_30d"


def categorical_columns(features: pd.DataFrame) -> list[str]:
    """Non-numeric columns are categories; no schema import, so the script runs alone on AML."""
    return [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]


def build_model(
    features: pd.DataFrame,
    learning_rate: float = 0.1,
    max_iter: int = 300,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 40,
    l2_regularization: float = 1.0,
    seed: int = 42,
) -> Pipeline:
    """Ordinal-encode categories (unknown -> missing) and feed a native-categorical HGB model."""
    categories = categorical_columns(features)
    numeric = [c for c in features.columns if c not in categories]
    encode = ColumnTransformer(
        [
            (
                "categories",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                categories,
            ),
            ("numbers", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    classifier = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf,
        l2_regularization=l2_regularization,
        categorical_features=list(range(len(categories))),
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )
    return Pipeline([("preprocess", encode), ("classifier", classifier)])


def trusted_types(model: Pipeline) -> list[str]:
    """The types skops must trust to load this model: exactly the ones this script built."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def pip_requirements() -> list[str]:
    """Pinned from this environment: MLflow's own inference re-imports the model in a
    subprocess, which costs seconds on every run and pins nothing we do not already know."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "pandas", "numpy", "skops")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train_data", type=Path, required=True)
    parser.add_argument("--learning_rate", type=float, required=True)
    parser.add_argument("--max_iter", type=int, required=True)
    parser.add_argument("--max_leaf_nodes", type=int, required=True)
    parser.add_argument("--min_samples_leaf", type=int, required=True)
    parser.add_argument("--l2_regularization", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()

    frame = pd.read_parquet(args.train_data / "data.parquet")
    features, labels = frame.drop(columns=[LABEL]), frame[LABEL]
    params = {
        "learning_rate": args.learning_rate,
        "max_iter": args.max_iter,
        "max_leaf_nodes": args.max_leaf_nodes,
        "min_samples_leaf": args.min_samples_leaf,
        "l2_regularization": args.l2_regularization,
        "seed": args.seed,
    }
    model = build_model(features, **params)
    started = time.perf_counter()
    model.fit(features, labels)
    train_seconds = time.perf_counter() - started

    example = features.head(5)
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    types = trusted_types(model)
    requirements = pip_requirements()
    mlflow.sklearn.save_model(
        model,
        str(args.model),
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=types,
        pip_requirements=requirements,
    )
    with mlflow.start_run():
        mlflow.log_params({**params, "rows": len(frame)})
        mlflow.log_metrics({"train_seconds": train_seconds, "iterations": model[-1].n_iter_})
    print(json.dumps({"train_seconds": round(train_seconds, 3), "rows": len(frame)}))


if __name__ == "__main__":
    main()
