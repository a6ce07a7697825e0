"""The model behind a local deployment, loaded, smoke-tested and made fast.

A model whose Pipeline is the training script's shape (an OrdinalEncoder + passthrough
ColumnTransformer feeding a HistGradientBoostingClassifier) is compiled at load time into dict
lookups and scikit-learn's own tree walker called on a float matrix (all trees in one call for
small requests). That compiled path is checked against `pipeline.predict_proba` at load on the
model's input example and on random rows spanning the whole data contract, and dropped for the
plain pipeline if it differs by more than 1e-9: it can be fast, never different.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backends.local.request_schema import (
    FeatureBatch,
    RequestError,
    validate_columns,
)
from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

log = logging.getLogger("endpoint_server")
_CONTRACT_CATEGORIES = {c.name: c.values for c in CATEGORICAL_COLUMNS}
VERIFY_TOLERANCE = 1e-9
"""Largest difference from `pipeline.predict_proba` a compiled scorer may show at load."""
PACKED_MAX_ROWS = 128
"""Requests with fewer rows walk all trees in one call; larger ones walk tree by tree."""


class DeploymentLoadError(RuntimeError):
    """The model did not load or failed its smoke test; the message says which and why."""


class Scorer(Protocol):
    kind: str

    def probabilities(self, batch: FeatureBatch) -> np.ndarray: ...


class PipelineScorer:
    """The model exactly as trained: a DataFrame into `pipeline.predict_proba` (the reference)."""

    kind = "pipeline"

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.features = list(features)

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({name: list(batch.columns[name]) for name in self.features})
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)


class PackedTrees:
    """Every tree of a binary HistGradientBoostingClassifier walked in one C call.

    scikit-learn walks the trees one Python call at a time (~25 us each, ~2 ms for 80 trees on
    a single row). Here all trees share one node array behind a small dispatch tree that
    routes on an extra "tree number" column; each row is repeated once per tree, walked by
    scikit-learn's own `_predict_from_raw_data`, and the leaf values are summed. Same nodes,
    same walker, so the leaves are identical; only the order of the final sum differs.

    The dispatch levels cost more than a call per tree once a request has more than about
    a hundred rows, so large batches walk tree by tree (same walker, no Python around it).
    """

    def __init__(self, classifier: Any) -> None:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

        if getattr(classifier, "n_trees_per_iteration_", None) != 1:
            raise TypeError("only binary HistGradientBoostingClassifier models are packed")
        if list(getattr(classifier, "classes_", [])) != [0, 1]:
            raise TypeError("packed trees expect classes [0, 1]")
        if type(classifier._loss).__name__ != "HalfBinomialLoss":
            raise TypeError("packed trees expect the binary log loss")
        trees = [iteration[0] for iteration in classifier._predictors]
        n_trees, n_features = len(trees), int(classifier.n_features_in_)
        dispatch = n_trees - 1
        starts = np.cumsum([0] + [len(t.nodes) for t in trees[:-1]]) + dispatch
        nodes = np.zeros(dispatch + sum(len(t.nodes) for t in trees), dtype=PREDICTOR_RECORD_DTYPE)
        bitsets, bitset_offset = [], 0
        for start, tree in zip(starts, trees, strict=True):
            part = tree.nodes.copy()
            part["left"] += part["left"].dtype.type(start)
            part["right"] += part["right"].dtype.type(start)
            part["bitset_idx"] += part["bitset_idx"].dtype.type(bitset_offset)
            nodes[start : start + len(part)] = part
            bitsets.append(tree.raw_left_cat_bitsets)
            bitset_offset += len(tree.raw_left_cat_bitsets)
        next_free = 0

        def route(first: int, end: int) -> int:
            """A balanced tree over tree numbers [first, end); returns its root's index."""
            nonlocal next_free
            if end - first == 1:
                return int(starts[first])
            index, middle = next_free, (first + end) // 2
            next_free += 1
            nodes[index]["feature_idx"] = n_features
            nodes[index]["num_threshold"] = middle - 0.5
            nodes[index]["left"] = route(first, middle)
            nodes[index]["right"] = route(middle, end)
            return index

        route(0, n_trees)
        self._trees = [(t.nodes, t.raw_left_cat_bitsets) for t in trees]
        self._walk = _predict_from_raw_data
        self._nodes = nodes
        self._bitsets = np.ascontiguousarray(np.concatenate(bitsets), dtype=np.uint32)
        self._known, self._feature_map = classifier._bin_mapper.make_known_categories_bitsets()
        self._baseline = float(np.asarray(classifier._baseline_prediction).ravel()[0])
        self._tree_numbers = np.arange(n_trees, dtype=np.float64)
        self._n_trees, self._n_features = n_trees, n_features

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        raw = self._packed(matrix) if len(matrix) < PACKED_MAX_ROWS else self._tree_by_tree(matrix)
        return 1.0 / (1.0 + np.exp(-(raw + self._baseline)))

    def _tree_by_tree(self, matrix: np.ndarray) -> np.ndarray:
        raw = np.zeros(matrix.shape[0], dtype=np.float64)
        leaves = np.empty(matrix.shape[0], dtype=np.float64)
        for nodes, bitsets in self._trees:
            self._walk(nodes, matrix, bitsets, self._known, self._feature_map, 1, leaves)
            raw += leaves
        return raw

    def _packed(self, matrix: np.ndarray) -> np.ndarray:
        rows = matrix.shape[0]
        repeated = np.empty((rows, self._n_trees, self._n_features + 1))
        repeated[:, :, : self._n_features] = matrix[:, None, :]
        repeated[:, :, self._n_features] = self._tree_numbers
        leaves = np.empty(rows * self._n_trees, dtype=np.float64)
        self._walk(
            self._nodes,
            repeated.reshape(rows * self._n_trees, self._n_features + 1),
            self._bitsets,
            self._known,
            self._feature_map,
            1,  # one thread: OpenMP teams stall when clients share the cores
            leaves,
        )
        return leaves.reshape(rows, self._n_trees).sum(axis=1)


class EncodedScorer:
    """The ColumnTransformer as dict lookups (categories) and passthrough (numbers), feeding
    the classifier a float matrix in the transformer's output column order: no DataFrame."""

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
        return self.predict(matrix)


def _encoding_plan(pipeline: Any) -> tuple[list[tuple[str, dict[str, float] | None]], Any] | None:
    """(output column -> source column and category codes, classifier), or None when the
    Pipeline is not the OrdinalEncoder + passthrough shape this plan can reproduce."""
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
            and not getattr(transformer, "_infrequent_enabled", False)
        ):
            for column, categories in zip(columns, transformer.categories_, strict=True):
                unknown = float(transformer.unknown_value)
                if not math.isnan(unknown):
                    return None  # unseen categories are coded NaN below; others: the pipeline
                codes = dict.fromkeys(_CONTRACT_CATEGORIES.get(column, ()), math.nan)
                codes.update({str(v): float(i) for i, v in enumerate(categories)})
                plan.append((column, codes))
        else:
            return None
    return plan, classifier


def _fast_scorer(pipeline: Any) -> Scorer | None:
    """The fastest scorer this Pipeline's shape allows (checked by the caller), or None."""
    found = _encoding_plan(pipeline)
    if found is None:
        return None
    plan, classifier = found
    try:
        return EncodedScorer(plan, PackedTrees(classifier).probabilities, "packed-trees")
    except (TypeError, AttributeError, ImportError, ValueError, KeyError, IndexError) as why:
        log.info("trees not packed (%s); encoding only", why)
    if hasattr(classifier, "feature_names_in_"):
        return None  # it was fitted on a DataFrame: a bare matrix would change its behaviour
    return EncodedScorer(plan, lambda m: classifier.predict_proba(m)[:, 1], "encoded")


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
        raise DeploymentLoadError(f"{what}: {probabilities.shape} outputs for {n_rows} rows")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0 or probabilities.max() > 1:
        raise DeploymentLoadError(f"{what}: probabilities not finite in [0, 1]: {probabilities}")
    return probabilities


def load_scorer(model_path: Path) -> Scorer:
    """Load the MLflow model folder, smoke-test it on its input example, pick the fast path.

    Raises DeploymentLoadError (the reason, what to do) instead of anything else, so a bad
    model can never get as far as a routing table.
    """
    if not (model_path / "MLmodel").is_file():
        raise DeploymentLoadError(
            f"no MLflow model at {model_path} (no MLmodel file); pass the model folder that "
            "train_model.py saved with mlflow.sklearn.save_model"
        )
    import mlflow.sklearn
    from mlflow.models import Model

    try:
        pipeline = mlflow.sklearn.load_model(str(model_path))
        example = Model.load(str(model_path)).load_input_example(str(model_path))
    except Exception as error:  # any failure to load is the model's, reported as such
        raise DeploymentLoadError(
            f"could not load the MLflow model at {model_path}: {type(error).__name__}: {error}"
        ) from error
    if example is None:
        raise DeploymentLoadError(
            f"the model at {model_path} has no input example to smoke-test; save it with "
            "input_example=<a few training rows>"
        )
    features = [str(c) for c in getattr(pipeline, "feature_names_in_", example.columns)]
    foreign = sorted(set(features) - set(FEATURES))
    missing = sorted(set(FEATURES) - set(example.columns))
    if foreign or missing:
        raise DeploymentLoadError(
            f"the model at {model_path} does not fit the request contract: it needs {foreign} "
            f"that requests do not carry, and its input example lacks {missing}"
        )
    try:
        smoke = validate_columns({c: example[c].tolist() for c in FEATURES}, len(example))
    except RequestError as error:
        raise DeploymentLoadError(
            f"the model's input example breaks the contract: {error}"
        ) from None
    reference = PipelineScorer(pipeline, features)
    try:
        expected = _smoke_checked(reference.probabilities(smoke), smoke.n_rows, "smoke test")
        scorer = _fast_scorer(pipeline)
        if scorer is not None and not _same_as_pipeline(scorer, reference, smoke, expected):
            log.warning("fast path %s differs from the pipeline; serving the pipeline", scorer.kind)
            scorer = None
        scorer = scorer or reference
        _smoke_checked(scorer.probabilities(smoke), smoke.n_rows, f"smoke test ({scorer.kind})")
    except DeploymentLoadError:
        raise
    except Exception as error:  # predict_proba raising on its own example is a broken model
        raise DeploymentLoadError(
            f"the model at {model_path} failed its smoke test: {type(error).__name__}: {error}"
        ) from error
    return scorer


def _same_as_pipeline(
    scorer: Scorer, reference: PipelineScorer, smoke: FeatureBatch, expected: np.ndarray
) -> bool:
    checks = [(smoke, expected)] + [
        (contract_sample(n_rows, seed), None)
        for n_rows, seed in ((1, 1), (PACKED_MAX_ROWS - 1, 2), (1_000, 3))
    ]
    for batch, wanted in checks:
        wanted = reference.probabilities(batch) if wanted is None else wanted
        got = scorer.probabilities(batch)
        if got.shape != wanted.shape or not np.allclose(got, wanted, rtol=0, atol=VERIFY_TOLERANCE):
            return False
    return True
