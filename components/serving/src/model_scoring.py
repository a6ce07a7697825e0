"""The model behind a deployment: loaded from its MLflow folder, smoke-tested, made fast.

The model folder is the one `train_model.py` saves (an sklearn Pipeline, serialized with skops).
It is loaded with skops and the trusted types its MLmodel file lists, not through MLflow: MLflow
is not in the inference environment, so the MLflow 3 traps of Azure ML's no-code deployments
cannot reach this script.

A Pipeline of the training script's shape (an OrdinalEncoder + passthrough ColumnTransformer
feeding a HistGradientBoostingClassifier) is scored through public APIs only: the encoder's
`categories_` become dict lookups, and the classifier's trees are imported into Treelite, whose
GTIL walks them in C (about 30 us a row instead of 2-6 ms through `predict_proba`). That path is
checked against `pipeline.predict_proba` at load on the model's input example and on random rows
spanning the whole data contract, and dropped for the plain pipeline if it differs by more than
1e-9 or cannot be built: it can be fast, never different.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from request_contract import FeatureBatch, RequestError, validate_columns

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

log = logging.getLogger("score")
_CONTRACT_CATEGORIES = {c.name: c.values for c in CATEGORICAL_COLUMNS}
VERIFY_TOLERANCE = 1e-9
"""Largest difference from `pipeline.predict_proba` a fast scorer may show at load."""


class ModelLoadError(RuntimeError):
    """The model did not load or failed its smoke test; the message says which and why."""


class Scorer(Protocol):
    kind: str

    def probabilities(self, batch: FeatureBatch) -> np.ndarray: ...


class PipelineScorer:
    """The model exactly as trained: a DataFrame into `pipeline.predict_proba` (the reference,
    and what a plain MLflow pyfunc script runs)."""

    kind = "pipeline"

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.features = list(features)

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({name: list(batch.columns[name]) for name in self.features})
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)


class EncodedScorer:
    """The ColumnTransformer as dict lookups (categories) and passthrough (numbers), feeding
    the trees a float matrix in the transformer's output column order: no DataFrame."""

    def __init__(
        self,
        plan: Sequence[tuple[str, Mapping[str, float] | None]],
        predict: Callable[[np.ndarray], np.ndarray],
        kind: str,
    ) -> None:
        self.plan = list(plan)
        self.predict = predict
        self.kind = kind

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        columns = []
        for name, codes in self.plan:
            values = batch.columns[name]
            if codes is not None:
                try:  # every contract category has a code (NaN if unseen): a C-level map
                    values = list(map(codes.__getitem__, values))
                except KeyError:
                    values = [codes.get(v, math.nan) for v in values]
            columns.append(values)
        matrix = np.array(columns, dtype=np.float64).T
        return self.predict(np.ascontiguousarray(matrix))


def _encoding_plan(pipeline: Any) -> tuple[list[tuple[str, dict[str, float] | None]], Any] | None:
    """(output column -> source column and category codes, classifier) from public attributes,
    or None when the Pipeline is not the OrdinalEncoder + passthrough shape reproduced here."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    encode, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(encode, ColumnTransformer) or not hasattr(classifier, "predict_proba"):
        return None
    plan: list[tuple[str, dict[str, float] | None]] = []
    for _, transformer, columns in encode.transformers_:
        if transformer == "drop":
            continue
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            return None
        identity = isinstance(transformer, FunctionTransformer) and transformer.func is None
        if transformer == "passthrough" or identity:
            plan.extend((c, None) for c in columns)
        elif (
            isinstance(transformer, OrdinalEncoder)
            and transformer.handle_unknown == "use_encoded_value"
            and transformer.min_frequency is None
            and transformer.max_categories is None
        ):
            if not math.isnan(float(transformer.unknown_value)):
                return None  # unseen categories are coded NaN below; others: the pipeline
            for column, categories in zip(columns, transformer.categories_, strict=True):
                codes = dict.fromkeys(_CONTRACT_CATEGORIES.get(column, ()), math.nan)
                codes.update({str(v): float(i) for i, v in enumerate(categories)})
                plan.append((column, codes))
        else:
            return None
    return plan, classifier


def _treelite_predict(classifier: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The classifier's trees in Treelite's GTIL (one thread: the server's workers share the
    cores), returning the positive-class probability."""
    import treelite
    import treelite.gtil

    model = treelite.sklearn.import_model(classifier)

    def predict(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(treelite.gtil.predict(model, matrix, nthread=1)).reshape(-1)

    return predict


def _fast_scorer(pipeline: Any) -> Scorer | None:
    """The fastest scorer this Pipeline's shape allows (checked by the caller), or None."""
    found = _encoding_plan(pipeline)
    if found is None:
        return None
    plan, classifier = found
    try:
        return EncodedScorer(plan, _treelite_predict(classifier), "treelite")
    except Exception as why:  # an estimator Treelite cannot import: the pipeline it is
        log.info("trees not imported into Treelite (%s: %s)", type(why).__name__, why)
        return None


def contract_sample(n_rows: int, seed: int = 0) -> FeatureBatch:
    """Random rows spread over the whole contract (every category, the full numeric ranges):
    wider than any training set, so a fast path that mishandles a corner shows up at load."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for numeric in NUMERIC_COLUMNS:
        low, high = numeric.minimum, numeric.maximum
        if numeric.integer:
            columns[numeric.name] = rng.integers(int(low), int(high) + 1, n_rows).tolist()
        else:
            columns[numeric.name] = rng.uniform(low, high, n_rows).round(2).tolist()
    for categorical in CATEGORICAL_COLUMNS:
        columns[categorical.name] = rng.choice(categorical.values, n_rows).tolist()
    return validate_columns(columns, n_rows)


def _smoke_checked(probabilities: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    if probabilities.shape != (n_rows,):
        raise ModelLoadError(f"{what}: {probabilities.shape} outputs for {n_rows} rows")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0 or probabilities.max() > 1:
        raise ModelLoadError(f"{what}: probabilities not finite in [0, 1]: {probabilities}")
    return probabilities


def find_model_folder(model_dir: Path) -> Path:
    """The folder holding `MLmodel`: Azure mounts a registered folder under
    AZUREML_MODEL_DIR/<its own name>, the local backend passes the folder itself."""
    if (model_dir / "MLmodel").is_file():
        return model_dir
    found = sorted(model_dir.rglob("MLmodel"))
    if not found:
        raise ModelLoadError(
            f"no MLflow model under {model_dir} (no MLmodel file); register the folder "
            "train_model.py saved with mlflow.sklearn.save_model"
        )
    return found[0].parent


def _load_pipeline(folder: Path) -> tuple[Any, Any]:
    """(the sklearn Pipeline, its input example as a DataFrame), read with skops + PyYAML."""
    import pandas as pd
    import skops.io
    import yaml

    flavor = yaml.safe_load((folder / "MLmodel").read_text()).get("flavors", {}).get("sklearn")
    if not flavor or flavor.get("serialization_format") != "skops":
        raise ModelLoadError(
            f"the model at {folder} is not an sklearn model saved with skops (MLflow's default "
            "since 3.x); save it with mlflow.sklearn.save_model"
        )
    pipeline = skops.io.load(
        folder / flavor["pickled_model"], trusted=list(flavor.get("skops_trusted_types") or [])
    )
    example_file = folder / "input_example.json"
    if not example_file.is_file():
        raise ModelLoadError(
            f"the model at {folder} has no input example to smoke-test; save it with "
            "input_example=<a few training rows>"
        )
    example = json.loads(example_file.read_text())
    return pipeline, pd.DataFrame(example["data"], columns=example["columns"])


def load_scorer(model_dir: Path) -> Scorer:
    """Load the model, smoke-test it on its input example, pick the fast path.

    Raises ModelLoadError (the reason, what to do) instead of anything else, so a model that
    cannot serve stops `init()` and the deployment never becomes ready.
    """
    folder = find_model_folder(model_dir)
    try:
        pipeline, example = _load_pipeline(folder)
    except ModelLoadError:
        raise
    except Exception as error:  # any failure to load is the model's, reported as such
        raise ModelLoadError(
            f"could not load the model at {folder}: {type(error).__name__}: {error}"
        ) from error
    features = [str(c) for c in getattr(pipeline, "feature_names_in_", example.columns)]
    foreign = sorted(set(features) - set(FEATURES))
    missing = sorted(set(FEATURES) - set(example.columns))
    if foreign or missing:
        raise ModelLoadError(
            f"the model at {folder} does not fit the request contract: it needs {foreign} "
            f"that requests do not carry, and its input example lacks {missing}"
        )
    try:
        smoke = validate_columns({c: example[c].tolist() for c in FEATURES}, len(example))
    except RequestError as error:
        raise ModelLoadError(f"the model's input example breaks the contract: {error}") from None
    reference = PipelineScorer(pipeline, features)
    try:
        expected = _smoke_checked(reference.probabilities(smoke), smoke.n_rows, "smoke test")
        scorer = _fast_scorer(pipeline)
        if scorer is not None and not _same_as_pipeline(scorer, reference, smoke, expected):
            log.warning("fast path %s differs from the pipeline; serving the pipeline", scorer.kind)
            scorer = None
        scorer = scorer or reference
        _smoke_checked(scorer.probabilities(smoke), smoke.n_rows, f"smoke test ({scorer.kind})")
    except ModelLoadError:
        raise
    except Exception as error:  # predict_proba raising on its own example is a broken model
        raise ModelLoadError(
            f"the model at {folder} failed its smoke test: {type(error).__name__}: {error}"
        ) from error
    return scorer


def _same_as_pipeline(
    scorer: Scorer, reference: PipelineScorer, smoke: FeatureBatch, expected: np.ndarray
) -> bool:
    checks = [(smoke, expected)] + [
        (contract_sample(n_rows, seed), None) for n_rows, seed in ((1, 1), (127, 2), (1_000, 3))
    ]
    for batch, reference_values in checks:
        want = reference.probabilities(batch) if reference_values is None else reference_values
        got = scorer.probabilities(batch)
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=VERIFY_TOLERANCE):
            return False
    return True
