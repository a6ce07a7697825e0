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

The Treelite path can also say why a row scored what it did (`Scorer.contributions`, used only
when a request asks for it): per-feature path attributions (Saabas' method, the "approximate"
contributions of XGBoost and LightGBM's predict_contrib ancestors), read from the same trees.
Each tree's node carries its expected output (its leaves' values weighted by the training rows
that reached them, Treelite's `data_count`); walking a row from the root to its leaf, every
split's change in expected output is credited to the split's feature. The credits telescope, so
base value + contributions equals the row's log-odds exactly (checked at load, like the fast
path). They are not SHAP values: a feature split near the leaves can be credited more than
SHAP's averaging over feature orders would give it (Lundberg et al. 2018 show the bias); SHAP
(`shap`) is not in the inference environment, and Treelite 4.8's GTIL offers no contributions.
The method needs only a leaf index per tree (GTIL's `predict_leaf`) and a table lookup: about
the cost of the plain scoring again, not a model re-run per feature.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from request_contract import EncodedColumn, FeatureBatch, RequestError, validate_columns

from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

log = logging.getLogger("score")
_CONTRACT_CATEGORIES = {c.name: c.values for c in CATEGORICAL_COLUMNS}
VERIFY_TOLERANCE = 1e-9
"""Largest difference from `pipeline.predict_proba` a fast scorer may show at load."""


THRESHOLD_VARIABLE = "MODEL_THRESHOLD"
"""The deployment's variable holding the decision threshold (backends/serving_package.py sets it
from the model's `test_threshold` tag, the threshold chosen at evaluation)."""


def decision_threshold(environment: Mapping[str, str]) -> float:
    """The deployment's decision threshold, read from MODEL_THRESHOLD (0.5 when unset): a
    threshold outside [0, 1] raises, so init() fails and the deployment never gets traffic.
    score.py and batch_score.py both read it here."""
    threshold = float(environment.get(THRESHOLD_VARIABLE, "0.5"))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{THRESHOLD_VARIABLE}={threshold} is not a probability in [0, 1]")
    return threshold


def predicted_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """The label rule: 1 when the probability is at least the threshold, else 0 (int8).

    The one copy in the serving snapshot (score.py and batch_score.py). It mirrors
    `predicted_labels` in components/src/label_rule.py, the training snapshot's copy, which
    the evaluation uses to choose the threshold and measure the model: on Azure the two folders
    are separate code snapshots and cannot share a module, so
    tests/unit/test_one_place_for_each_fact.py checks the two label alike, boundary included."""
    return (probabilities >= threshold).astype(np.int8)


class ModelLoadError(RuntimeError):
    """The model did not load or failed its smoke test; the message says which and why."""


class ExplanationUnavailable(RuntimeError):
    """This scorer cannot attribute its scores to features; the message says why."""


class Contributions(NamedTuple):
    """Why each row scored what it did, in log-odds (the units the trees add up in).

    `base_value + values[i].sum() == log_odds[i]` for every row i, and `log_odds[i]` is the
    logit of the row's probability."""

    base_value: float
    """The model's expected log-odds over its training rows (what a row with no information
    would score)."""
    features: list[str]
    """The contract features, in the column order of `values`."""
    values: np.ndarray
    """(rows, features): the log-odds each feature added to the row's score."""
    log_odds: np.ndarray
    """(rows,): the row's score before the sigmoid."""


class Scorer(Protocol):
    kind: str
    explains: bool
    """Whether `contributions` answers (else it raises ExplanationUnavailable)."""

    def probabilities(self, batch: FeatureBatch) -> np.ndarray: ...

    def contributions(self, batch: FeatureBatch) -> Contributions: ...


class PipelineScorer:
    """The model exactly as trained: a DataFrame into `pipeline.predict_proba` (the reference,
    and what a plain MLflow pyfunc script runs)."""

    kind = "pipeline"
    explains = False

    def __init__(self, pipeline: Any, features: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.features = list(features)

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(
            {
                name: values if isinstance(values, np.ndarray) else list(values)
                for name, values in ((n, batch.columns[n]) for n in self.features)
            }
        )
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)

    def contributions(self, batch: FeatureBatch) -> Contributions:
        raise ExplanationUnavailable(
            "this deployment serves its model through the plain scikit-learn pipeline (its "
            "shape has no Treelite path), which gives no per-feature contributions; send the "
            "request without explain"
        )


class EncodedScorer:
    """The ColumnTransformer as dict lookups (categories) and passthrough (numbers), feeding
    the trees a float matrix in the transformer's output column order: no DataFrame."""

    def __init__(
        self,
        plan: Sequence[tuple[str, Mapping[str, float] | None]],
        predict: Callable[[np.ndarray], np.ndarray],
        kind: str,
        attribute: PathContributions | None = None,
    ) -> None:
        self.plan = list(plan)
        self.predict = predict
        self.kind = kind
        self.attribute = attribute

    @property
    def explains(self) -> bool:
        return self.attribute is not None

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        return self.predict(self._matrix(batch))

    def contributions(self, batch: FeatureBatch) -> Contributions:
        if self.attribute is None:
            raise ExplanationUnavailable(
                "this deployment's trees could not be read for contributions (see its log at "
                "start); send the request without explain"
            )
        base_value, values, log_odds = self.attribute(self._matrix(batch))
        return Contributions(base_value, [name for name, _ in self.plan], values, log_odds)

    def _matrix(self, batch: FeatureBatch) -> np.ndarray:
        matrix = np.empty((batch.n_rows, len(self.plan)), dtype=np.float64)
        for index, (name, codes) in enumerate(self.plan):
            values = batch.columns[name]
            if codes is None:
                matrix[:, index] = values
            elif isinstance(values, EncodedColumn):  # a lookup per distinct word, then a take
                matrix[:, index] = np.array(list(map(codes.get, values.words, _NANS)))[values.codes]
            else:
                try:  # every contract category has a code (NaN if unseen): a C-level map
                    matrix[:, index] = list(map(codes.__getitem__, values))
                except KeyError:
                    matrix[:, index] = [codes.get(v, math.nan) for v in values]
        return matrix


_NANS = itertools.repeat(math.nan)


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


def _treelite_predict(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The Treelite model's positive-class probability through GTIL (one thread: the server's
    workers share the cores)."""
    import treelite.gtil

    def predict(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(treelite.gtil.predict(model, matrix, nthread=1)).reshape(-1)

    return predict


class PathContributions:
    """Saabas path attributions of a binary Treelite model (see the module docstring).

    Built once at load into one table: for every node of every tree, the log-odds each feature
    added on the way from the tree's root to that node. A row's contributions are then the sum,
    over trees, of the table rows of the leaves GTIL's `predict_leaf` sends it to.
    """

    ROWS_PER_CHUNK_ELEMENTS = 1 << 20
    """Gathered values held at once (rows x trees x features): 8 MB, whatever the batch."""

    def __init__(self, model: Any) -> None:
        dump = json.loads(model.dump_as_json(pretty_print=False))
        if (
            dump["task_type"] != "kBinaryClf"
            or dump["num_target"] != 1
            or dump["average_tree_output"]
            or dump["postprocessor"] != "sigmoid"
            or dump["sigmoid_alpha"] != 1.0
        ):
            raise ValueError(
                f"path contributions read a sum of trees under a plain sigmoid; this model is "
                f"{dump['task_type']} with {dump['postprocessor']}"
            )
        self.model = model
        self.n_features = int(dump["num_feature"])
        base_value = float(sum(dump["base_scores"]))
        tables, offsets, offset = [], [], 0
        for tree in dump["trees"]:
            root_value, table = self._tree_table(tree["nodes"])
            base_value += root_value
            tables.append(table)
            offsets.append(offset)
            offset += len(table)
        self.base_value = base_value
        self.table = np.vstack(tables)
        self.offsets = np.asarray(offsets, dtype=np.intp)

    def _tree_table(self, nodes: list[dict[str, Any]]) -> tuple[float, np.ndarray]:
        """(the tree's expected output, its node x feature table of path credits)."""
        by_id = {node["node_id"]: node for node in nodes}
        if sorted(by_id) != list(range(len(nodes))):
            raise ValueError("tree nodes are not numbered 0..n-1")
        preorder, stack = [], [0]
        while stack:
            node_id = stack.pop()
            preorder.append(node_id)
            if "leaf_value" not in by_id[node_id]:
                stack.extend((by_id[node_id]["left_child"], by_id[node_id]["right_child"]))
        expected = np.zeros(len(nodes))
        for node_id in reversed(preorder):  # children before parents
            node = by_id[node_id]
            if "leaf_value" in node:
                expected[node_id] = float(node["leaf_value"])
                continue
            left, right = node["left_child"], node["right_child"]
            weights = [by_id[left].get("data_count"), by_id[right].get("data_count")]
            if None in weights:
                raise ValueError("the trees carry no data_count; expected outputs are unknown")
            total = weights[0] + weights[1]
            share = weights[0] / total if total else 0.5
            expected[node_id] = share * expected[left] + (1 - share) * expected[right]
        table = np.zeros((len(nodes), self.n_features))
        for node_id in preorder:  # parents before children
            node = by_id[node_id]
            if "leaf_value" in node:
                continue
            feature = int(node["split_feature_id"])
            for child in (node["left_child"], node["right_child"]):
                table[child] = table[node_id]
                table[child, feature] += expected[child] - expected[node_id]
        return float(expected[0]), table

    def __call__(self, matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(base value, contributions (rows x features), log-odds (rows,)) for encoded rows."""
        import treelite.gtil

        leaves = treelite.gtil.predict_leaf(self.model, matrix, nthread=1).astype(np.intp)
        leaves += self.offsets
        values = np.empty((len(matrix), self.n_features))
        step = max(1, self.ROWS_PER_CHUNK_ELEMENTS // (leaves.shape[1] * self.n_features))
        for start in range(0, len(matrix), step):
            values[start : start + step] = self.table[leaves[start : start + step]].sum(axis=1)
        return self.base_value, values, self.base_value + values.sum(axis=1)

    def margins(self, matrix: np.ndarray) -> np.ndarray:
        """GTIL's own log-odds of the rows, which the contributions must add up to."""
        import treelite.gtil

        margin = treelite.gtil.predict(self.model, matrix, nthread=1, pred_margin=True)
        return np.asarray(margin).reshape(-1)


def _path_contributions(model: Any) -> PathContributions | None:
    try:
        return PathContributions(model)
    except Exception as why:  # a tree layout not read here: scores still fast, no explanations
        log.info("no path contributions (%s: %s)", type(why).__name__, why)
        return None


def _fast_scorer(pipeline: Any) -> Scorer | None:
    """The fastest scorer this Pipeline's shape allows (checked by the caller), or None."""
    found = _encoding_plan(pipeline)
    if found is None:
        return None
    plan, classifier = found
    try:
        import treelite

        model = treelite.sklearn.import_model(classifier)
        predict = _treelite_predict(model)
    except Exception as why:  # an estimator Treelite cannot import: the pipeline it is
        log.info("trees not imported into Treelite (%s: %s)", type(why).__name__, why)
        return None
    return EncodedScorer(plan, predict, "treelite", _path_contributions(model))


def _bulk_scorer(pipeline: Any) -> Scorer | None:
    """For files, not requests: the classifier's own `predict_proba` on the encoded matrix.

    Per request Treelite wins (no scikit-learn validation overhead on a few rows); per row in
    bulk scikit-learn's own tree walk is the faster (50,000 encoded rows, one thread: 0.19 s
    against GTIL's 0.34 s), and it is the very code the pipeline runs after its
    ColumnTransformer, which the encoding plan replaces with a lookup per distinct category.
    """
    found = _encoding_plan(pipeline)
    if found is None:
        return None
    plan, classifier = found

    def predict(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(classifier.predict_proba(matrix)[:, 1], dtype=np.float64)

    return EncodedScorer(plan, predict, "encoded")


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


def load_scorer(model_dir: Path, *, bulk: bool = False) -> Scorer:
    """Load the model, smoke-test it on its input example, pick the fast path (`bulk`: the one
    for files of many rows, see _bulk_scorer; else the one for requests, Treelite).

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
        scorer = _bulk_scorer(pipeline) if bulk else _fast_scorer(pipeline)
        if scorer is not None and not _same_as_pipeline(scorer, reference, smoke, expected):
            log.warning("fast path %s differs from the pipeline; serving the pipeline", scorer.kind)
            scorer = None
        scorer = scorer or reference
        _smoke_checked(scorer.probabilities(smoke), smoke.n_rows, f"smoke test ({scorer.kind})")
        if (
            isinstance(scorer, EncodedScorer)
            and scorer.attribute is not None
            and not _contributions_add_up(scorer, smoke)
        ):
            log.warning("path contributions do not add up to the margin; explanations are off")
            scorer.attribute = None
    except ModelLoadError:
        raise
    except Exception as error:  # predict_proba raising on its own example is a broken model
        raise ModelLoadError(
            f"the model at {folder} failed its smoke test: {type(error).__name__}: {error}"
        ) from error
    return scorer


CONTRIBUTIONS_TOLERANCE = 1e-9
"""Largest gap between base value + contributions and GTIL's margin a scorer may show at load."""


def _contributions_add_up(scorer: EncodedScorer, smoke: FeatureBatch) -> bool:
    """Base value + contributions equal GTIL's own margin on the smoke rows and contract rows,
    or the scorer explains nothing (an explanation that does not add up is not served)."""
    attribute = scorer.attribute
    if attribute is None:
        return False
    for batch in (smoke, contract_sample(300, 4)):
        matrix = scorer._matrix(batch)
        _, values, log_odds = attribute(matrix)
        expected = attribute.margins(matrix)
        if values.shape != (batch.n_rows, attribute.n_features) or not np.allclose(
            log_odds, expected, rtol=0, atol=CONTRIBUTIONS_TOLERANCE
        ):
            return False
    return True


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
