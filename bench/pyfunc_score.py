"""The peer scoring script: what an Azure ML no-code MLflow deployment runs, in the same server.

A no-code MLflow deployment serves the registered folder through `mlflow.pyfunc`: `init()` loads
it from AZUREML_MODEL_DIR/<the model's folder> (MLFLOW_MODEL_FOLDER, as Azure ML's MLflow image
names it), `run()` turns the `input_data` split layout into a DataFrame and returns whatever
`predict` returns as a list. No contract validation, no labels, no data collection. Our model
was saved with `pyfunc_predict_fn="predict_proba"`, so each answer is `[p(0), p(1)]` per row.

Runs in `azmlinfsrv` from a venv of the inference environment plus `mlflow-skinny` (built by
`bench/serve.py`): the model is loaded exactly as MLflow loads it, skops and trusted types
included, and scored through MLflow's schema enforcement.
"""

from __future__ import annotations

import json
import os
from typing import Any

import mlflow.pyfunc
import pandas as pd

model: Any = None


def init() -> None:
    global model
    folder = os.environ.get("MLFLOW_MODEL_FOLDER", "model")
    model = mlflow.pyfunc.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], folder))


def run(raw_data: str) -> list[Any]:
    frame = pd.DataFrame(**json.loads(raw_data)["input_data"])
    return model.predict(frame).tolist()
