"""The local stand-in for an AML managed online endpoint: one process, all its deployments.

`python -m backends.local.endpoint_server --state-dir DIR --port P` serves one endpoint on
127.0.0.1. Everything that must survive a crash (key, deployments, traffic, mirror) is in
`DIR/state.json`, rewritten atomically on every change, so a restarted process comes back with
the same deployments and traffic. Data capture goes to `DIR/capture/<deployment>/<date>.jsonl`.

Routes (all but /health need `Authorization: Bearer <key>`):
  POST   /score                      AML `input_data` (split or records) -> probabilities
  GET    /health/live, /health/ready
  PUT    /admin/deployments/{name}   load + smoke-test a model; 0% traffic until told otherwise
  DELETE /admin/deployments/{name}   refused while it has live or mirror traffic
  PUT    /admin/traffic              {"traffic": {...}, "mirror_traffic": {...}}
  GET    /admin/state, GET /admin/metrics, POST /admin/metrics/reset

Serving is the hot path, so a model whose Pipeline is the training script's shape (an
OrdinalEncoder + passthrough ColumnTransformer feeding a HistGradientBoostingClassifier) is
compiled at load time into dict lookups and scikit-learn's own tree walker called on a float
matrix (all trees in one call for small requests). That compiled path is checked against
`pipeline.predict_proba` at load on the model's input example and on random rows spanning the
whole data contract, and dropped for the plain pipeline if it differs by more than 1e-9: it
can be fast, never different.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import hmac
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.local.request_schema import (
    MAX_BODY_BYTES,
    FeatureBatch,
    RequestError,
    parse_scoring_request,
    validate_columns,
)
from data_checks.readmission_schema import CATEGORICAL_COLUMNS, FEATURES, NUMERIC_COLUMNS

log = logging.getLogger("endpoint_server")
_CONTRACT_CATEGORIES = {c.name: c.values for c in CATEGORICAL_COLUMNS}

STATE_FILE = "state.json"
LOG_FILE = "server.log"
CAPTURE_DIR = "capture"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
"""Endpoint and deployment names: AML's rule (letter first, letters, digits, hyphens)."""
METRICS_WINDOW_SECONDS = 60.0
METRICS_WINDOW_REQUESTS = 2_000
VERIFY_TOLERANCE = 1e-9
"""Largest difference from `pipeline.predict_proba` a compiled scorer may show at load."""
PACKED_MAX_ROWS = 128
"""Requests with fewer rows walk all trees in one call; larger ones walk tree by tree."""
THREADED_MIN_ROWS = 256
"""Requests this large are scored on a worker thread (see EndpointServer.score_async)."""
_DRAIN_LIMIT = 64 * 1024 * 1024
"""An oversized body is read and discarded up to this size so the client gets its 413 instead
of a reset connection; beyond it the connection is dropped."""


# --- state.json: what survives a crash -------------------------------------------------------


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment serves; enough to load it again after a restart."""

    name: str
    model_name: str
    model_version: str
    model_path: str
    threshold: float = 0.5


@dataclass(frozen=True)
class EndpointState:
    """The endpoint's durable state, shared by the server (writer) and the client (reader)."""

    endpoint: str
    key: str
    port: int | None = None
    pid: int | None = None
    deployments: Mapping[str, DeploymentSpec] = field(default_factory=dict)
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {
            "endpoint": self.endpoint,
            "key": self.key,
            "port": self.port,
            "pid": self.pid,
            "deployments": {n: vars(d) for n, d in self.deployments.items()},
            "traffic": dict(self.traffic),
            "mirror_traffic": dict(self.mirror_traffic),
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> EndpointState:
        raw = orjson.loads(data)
        return cls(
            endpoint=raw["endpoint"],
            key=raw["key"],
            port=raw.get("port"),
            pid=raw.get("pid"),
            deployments={n: DeploymentSpec(**d) for n, d in raw.get("deployments", {}).items()},
            traffic=raw.get("traffic", {}),
            mirror_traffic=raw.get("mirror_traffic", {}),
        )


def read_state(state_dir: Path) -> EndpointState | None:
    """The endpoint's state, or None if it was never created."""
    path = state_dir / STATE_FILE
    return EndpointState.from_json(path.read_bytes()) if path.is_file() else None


def write_state(state_dir: Path, state: EndpointState) -> None:
    """Write-then-rename, mode 0600 (it holds the key): a crash mid-write leaves the old file."""
    temporary = state_dir / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(state.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, state_dir / STATE_FILE)


# --- scoring: the model behind a deployment ---------------------------------------------------


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


@dataclass(frozen=True)
class Deployment:
    """A deployment in the routing table: its spec and a scorer, or why it has none."""

    spec: DeploymentSpec
    scorer: Scorer | None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> str:
        return "Succeeded" if self.scorer is not None else "Failed"

    def describe(self) -> dict[str, Any]:
        return {
            **vars(self.spec),
            "state": self.state,
            "scorer": self.scorer.kind if self.scorer else None,
            "error": self.error,
        }


def load_deployment(spec: DeploymentSpec) -> Deployment:
    return Deployment(spec, load_scorer(Path(spec.model_path)))


# --- routing: which deployment answers ---------------------------------------------------------


class TrafficError(ValueError):
    """A traffic change or deletion that would leave the endpoint in a bad state."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Routing:
    """An immutable snapshot of deployments and weights. Admin calls build a new one and swap
    the reference, so a request in flight keeps the snapshot it started with."""

    def __init__(
        self,
        deployments: Mapping[str, Deployment],
        traffic: Mapping[str, int],
        mirror_traffic: Mapping[str, int],
    ) -> None:
        self.deployments = dict(deployments)
        self.traffic = {name: int(traffic.get(name, 0)) for name in self.deployments}
        self.mirror_traffic = {n: int(p) for n, p in mirror_traffic.items() if p > 0}
        live = [(name, pct) for name, pct in self.traffic.items() if pct > 0]
        self._live = [self.deployments[name] for name, _ in live]
        self._cumulative = list(np.cumsum([pct for _, pct in live]))
        self._mirrors = [(self.deployments[n], p) for n, p in self.mirror_traffic.items()]

    def pick(self) -> Deployment | None:
        """A live deployment drawn by weight, or None when nothing has traffic."""
        if not self._live:
            return None
        if len(self._live) == 1:
            return self._live[0]
        draw = random.random() * self._cumulative[-1]
        return self._live[bisect.bisect_right(self._cumulative, draw)]

    def mirrors(self) -> list[Deployment]:
        return [d for d, pct in self._mirrors if random.random() * 100 < pct]

    def specs(self) -> dict[str, DeploymentSpec]:
        return {name: d.spec for name, d in self.deployments.items()}


def check_traffic(
    deployments: Mapping[str, Deployment],
    traffic: Mapping[str, int],
    mirror_traffic: Mapping[str, int],
) -> None:
    """AML's rules: known names, 0-100, live traffic adds up to 100 (0 only with no
    deployments), one mirror target that takes no live traffic, and no traffic to a
    deployment that failed to load."""
    known = sorted(deployments)
    for kind, weights in (("traffic", traffic), ("mirror_traffic", mirror_traffic)):
        unknown = sorted(set(weights) - set(deployments))
        if unknown:
            raise TrafficError(
                422, f"{kind} names {unknown}, which this endpoint does not have; it has {known}"
            )
        for name, pct in weights.items():
            if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
                raise TrafficError(422, f"{kind}[{name!r}] = {pct!r}; use a whole percent 0-100")
    total = sum(traffic.values())
    if deployments and total != 100:
        raise TrafficError(
            422,
            f"traffic adds up to {total}%; it must add up to 100% across {known} "
            "(0% is only allowed when the endpoint has no deployments)",
        )
    broken = sorted(n for n, p in traffic.items() if p > 0 and deployments[n].scorer is None)
    if broken:
        raise TrafficError(
            409, f"deployments {broken} failed to load and cannot take traffic; redeploy them"
        )
    mirrored = [n for n, p in mirror_traffic.items() if p > 0]
    if len(mirrored) > 1:
        raise TrafficError(422, f"mirror_traffic names {mirrored}; mirror to one deployment")
    for name in mirrored:
        if traffic.get(name, 0) > 0:
            raise TrafficError(
                422,
                f"{name!r} takes {traffic[name]}% of live traffic, so it cannot also be the "
                "mirror target; set its mirror_traffic to 0 in the same call",
            )
        if deployments[name].scorer is None:
            raise TrafficError(409, f"{name!r} failed to load and cannot receive mirror traffic")


# --- metrics and data capture ----------------------------------------------------------------


class Metrics:
    """Per-deployment requests, model errors and latency over a recent window.

    Touched only from the event loop (scoring and the async metrics routes), so no lock.
    """

    def __init__(self) -> None:
        self._recent: dict[str, deque[tuple[float, float, bool]]] = {}
        self._totals: dict[str, list[int]] = {}

    def record(self, deployment: str, latency_ms: float, error: bool) -> None:
        recent = self._recent.get(deployment)
        if recent is None:
            recent = self._recent[deployment] = deque(maxlen=METRICS_WINDOW_REQUESTS)
            self._totals[deployment] = [0, 0]
        recent.append((time.monotonic(), latency_ms, error))
        totals = self._totals[deployment]
        totals[0] += 1
        totals[1] += error

    def reset(self) -> None:
        self._recent.clear()
        self._totals.clear()

    def snapshot(self, deployments: Sequence[str]) -> dict[str, dict[str, float | int]]:
        since = time.monotonic() - METRICS_WINDOW_SECONDS
        report = {}
        for name in deployments:
            window = [r for r in self._recent.get(name, ()) if r[0] >= since]
            latencies = [r[1] for r in window if not r[2]]
            report[name] = {
                "requests": len(window),
                "errors": sum(r[2] for r in window),
                "p95_ms": float(np.percentile(latencies, 95)) if latencies else 0.0,
                "total_requests": self._totals.get(name, [0, 0])[0],
                "total_errors": self._totals.get(name, [0, 0])[1],
            }
        return report


@dataclass(frozen=True)
class CapturedRequest:
    deployment: DeploymentSpec
    request_id: str
    received: float
    batch: FeatureBatch
    probabilities: np.ndarray
    labels: np.ndarray
    mirrored: bool


class CaptureWriter:
    """Model inputs and outputs, one JSON line per row, per deployment and UTC day.

    Requests only append to a list; a background thread turns them into lines once a second
    (or sooner when many rows wait) and on shutdown, so capture costs scoring almost nothing.
    A crash loses at most the last second.
    """

    def __init__(
        self, directory: Path, flush_seconds: float = 1.0, flush_rows: int = 5_000
    ) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._pending: list[CapturedRequest] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def add(self, captured: CapturedRequest) -> None:
        with self._lock:
            self._pending.append(captured)
            self._pending_rows += captured.batch.n_rows
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a full disk must not take scoring down; say so in the log
                log.exception("data capture flush failed; rows were dropped")

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        files: dict[Path, list[bytes]] = {}
        for captured in pending:
            moment = datetime.fromtimestamp(captured.received, UTC)
            path = self.directory / captured.deployment.name / f"{moment:%Y-%m-%d}.jsonl"
            lines = files.setdefault(path, [])
            common = {
                "timestamp": moment.isoformat(timespec="milliseconds"),
                "request_id": captured.request_id,
                "deployment": captured.deployment.name,
                "model_name": captured.deployment.model_name,
                "model_version": captured.deployment.model_version,
                "mirrored": captured.mirrored,
            }
            head = orjson.dumps(common)[:-1] + b","  # the request's fields, encoded once
            outputs = zip(captured.probabilities.tolist(), captured.labels.tolist(), strict=True)
            for row, (inputs, (probability, label)) in enumerate(
                zip(captured.batch.rows(), outputs, strict=True)
            ):
                line = {"row": row, "inputs": inputs, "probability": probability, "label": label}
                lines.append(head + orjson.dumps(line)[1:])
        with self._write_lock:
            for path, lines in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as handle:
                    handle.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


# --- the endpoint ------------------------------------------------------------------------------


class EndpointServer:
    """One endpoint's deployments, routing, metrics and capture, behind the HTTP routes."""

    def __init__(self, state_dir: Path, port: int) -> None:
        state = read_state(state_dir)
        if state is None:
            raise FileNotFoundError(
                f"no {STATE_FILE} in {state_dir}; create the endpoint with "
                "LocalEndpoints.create_or_update_endpoint, which writes it"
            )
        self.state_dir = state_dir
        self.name = state.endpoint
        self.port = port
        self.pid = os.getpid()
        self._key = state.key
        self._authorization = f"Bearer {state.key}".encode()
        self._admin = threading.Lock()
        deployments = {}
        for name, spec in state.deployments.items():
            try:
                deployments[name] = load_deployment(spec)
                log.info(
                    "restored deployment %s (%s v%s)", name, spec.model_name, spec.model_version
                )
            except DeploymentLoadError as error:
                log.error("deployment %s did not load at restart: %s", name, error)
                deployments[name] = Deployment(spec, None, str(error))
        self.routing = Routing(deployments, state.traffic, state.mirror_traffic)
        self.metrics = Metrics()
        self.capture = CaptureWriter(state_dir / CAPTURE_DIR)
        self.save()
        gc.freeze()  # the models' objects are permanent: keep them out of every GC pass

    @property
    def scoring_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self._authorization)

    def save(self) -> None:
        routing = self.routing
        write_state(
            self.state_dir,
            EndpointState(
                endpoint=self.name,
                key=self._key,
                port=self.port,
                pid=self.pid,
                deployments=routing.specs(),
                traffic=routing.traffic,
                mirror_traffic=routing.mirror_traffic,
            ),
        )

    def describe(self) -> dict[str, Any]:
        routing = self.routing
        return {
            "endpoint": self.name,
            "scoring_uri": self.scoring_uri,
            "port": self.port,
            "pid": self.pid,
            "deployments": {n: d.describe() for n, d in routing.deployments.items()},
            "traffic": routing.traffic,
            "mirror_traffic": routing.mirror_traffic,
        }

    def put_deployment(self, spec: DeploymentSpec) -> Deployment:
        """Load first, swap after: a model that fails leaves the routing table untouched."""
        deployment = load_deployment(spec)
        with self._admin:
            routing = self.routing
            self.routing = Routing(
                {**routing.deployments, spec.name: deployment},
                routing.traffic,
                routing.mirror_traffic,
            )
            self.save()
        gc.freeze()
        log.info(
            "deployment %s serves %s v%s (%s)",
            spec.name,
            spec.model_name,
            spec.model_version,
            deployment.scorer.kind if deployment.scorer else "-",
        )
        return deployment

    def set_traffic(self, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int]) -> None:
        with self._admin:
            routing = self.routing
            check_traffic(routing.deployments, traffic, mirror_traffic)
            self.routing = Routing(routing.deployments, traffic, mirror_traffic)
            self.save()
        log.info("traffic %s mirror %s", dict(traffic), dict(mirror_traffic))

    def delete_deployment(self, name: str) -> None:
        with self._admin:
            routing = self.routing
            if name not in routing.deployments:
                raise TrafficError(404, f"endpoint {self.name} has no deployment {name!r}")
            if routing.traffic.get(name, 0) > 0 or routing.mirror_traffic.get(name, 0) > 0:
                raise TrafficError(
                    409,
                    f"deployment {name!r} still takes {routing.traffic.get(name, 0)}% of "
                    f"live and {routing.mirror_traffic.get(name, 0)}% of mirror traffic; shift "
                    "its traffic to another deployment first",
                )
            remaining = {n: d for n, d in routing.deployments.items() if n != name}
            self.routing = Routing(remaining, routing.traffic, routing.mirror_traffic)
            self.save()
        log.info("deployment %s deleted", name)

    def score(
        self, deployment: Deployment, batch: FeatureBatch, request_id: str, mirrored: bool
    ) -> tuple[list[float], list[int]]:
        """Probabilities and labels for every row; captures them. Raises on model failure."""
        if deployment.scorer is None:
            raise RuntimeError(f"deployment {deployment.name} is not loaded: {deployment.error}")
        probabilities = deployment.scorer.probabilities(batch)
        labels = (probabilities >= deployment.spec.threshold).astype(np.int8)
        self.capture.add(
            CapturedRequest(
                deployment.spec, request_id, time.time(), batch, probabilities, labels, mirrored
            )
        )
        return probabilities.tolist(), labels.tolist()

    async def score_async(
        self, deployment: Deployment, batch: FeatureBatch, request_id: str, mirrored: bool = False
    ) -> tuple[list[float], list[int]]:
        """`score`, on a worker thread for large batches: their tree walk runs without the GIL,
        so the event loop parses the next request meanwhile. Small ones stay on the loop,
        where a thread hop would cost more than the model."""
        if batch.n_rows >= THREADED_MIN_ROWS:
            return await run_in_threadpool(self.score, deployment, batch, request_id, mirrored)
        return self.score(deployment, batch, request_id, mirrored)

    async def mirror(
        self, targets: Sequence[Deployment], batch: FeatureBatch, request_id: str
    ) -> None:
        """Score a copy on each mirror target after the caller has its answer; failures are
        counted against the mirror deployment and never reach the caller."""
        for deployment in targets:
            started = time.perf_counter()
            try:
                await self.score_async(deployment, batch, request_id, mirrored=True)
                self.metrics.record(deployment.name, _ms_since(started), error=False)
            except Exception as error:  # the caller has its answer: count it, log it, go on
                self.metrics.record(deployment.name, _ms_since(started), error=True)
                log.warning(
                    "mirror deployment %s failed on request %s: %r",
                    deployment.name,
                    request_id,
                    error,
                )

    def close(self) -> None:
        self.capture.close()


def _request_id() -> str:
    """A UUID4 from the process's PRNG: unique enough to find a request in the capture, and
    unlike `uuid.uuid4()` no system call (and GIL hand-off) on every request."""
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


# --- HTTP ----------------------------------------------------------------------------------


class DeploymentRequest(BaseModel):
    model_name: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    model_path: str = Field(min_length=1)
    threshold: float = Field(0.5, ge=0.0, le=1.0)


class TrafficRequest(BaseModel):
    traffic: dict[str, int]
    mirror_traffic: dict[str, int] = Field(default_factory=dict)


def _json(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json(status, {"error": reason}, headers)


async def _read_body(request: Request) -> bytes:
    """The body, or RequestError(413) past MAX_BODY_BYTES by Content-Length or by count."""
    declared = request.headers.get("content-length", "")
    size, chunks = 0, []
    too_big = declared.isdigit() and int(declared) > MAX_BODY_BYTES
    async for chunk in request.stream():
        size += len(chunk)
        too_big = too_big or size > MAX_BODY_BYTES
        if too_big:
            chunks.clear()
            if size > _DRAIN_LIMIT:
                break
        else:
            chunks.append(chunk)
    if too_big:
        shown = int(declared) if declared.isdigit() else size
        raise RequestError(
            413,
            f"the body is {shown:,} bytes, more than the {MAX_BODY_BYTES:,} allowed; "
            "send fewer rows per request",
        )
    return b"".join(chunks)


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        raise TrafficError(
            422,
            f"{what} name {name!r} is not valid: start with a letter, then up to 31 "
            "letters, digits or hyphens",
        )


def create_app(server: EndpointServer) -> FastAPI:
    """The routes; the lifespan flushes data capture when uvicorn stops (SIGTERM too)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(
        title=f"online endpoint {server.name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    unauthorized = (
        "missing or wrong key: send 'Authorization: Bearer <key>' with the endpoint's key "
        "(LocalEndpoints.get_key)"
    )

    async def require_key(request: Request) -> None:
        """Runs before body validation, so a caller without the key learns nothing else."""
        if not server.authorized(request.headers.get("authorization")):
            raise StarletteHTTPException(401, unauthorized, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def body_error(_: Request, error: RequestValidationError) -> Response:
        reasons = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        ]
        return _error(422, "; ".join(reasons))

    @app.exception_handler(TrafficError)
    async def traffic_error(_: Request, error: TrafficError) -> Response:
        return _error(error.status, error.reason)

    @app.exception_handler(DeploymentLoadError)
    async def load_error(_: Request, error: DeploymentLoadError) -> Response:
        return _error(422, f"{error}; nothing was changed")

    @app.post("/score")
    async def score(request: Request) -> Response:
        started = time.perf_counter()
        if not server.authorized(request.headers.get("authorization")):
            return _error(401, unauthorized, {"WWW-Authenticate": "Bearer"})
        try:
            batch = parse_scoring_request(await _read_body(request))
        except RequestError as error:
            return _error(error.status, error.reason)
        routing = server.routing
        target = request.headers.get("azureml-model-deployment")
        mirrors: list[Deployment] = []
        if target:
            deployment = routing.deployments.get(target)
            if deployment is None:
                return _error(
                    404,
                    f"endpoint {server.name} has no deployment {target!r} (the "
                    f"azureml-model-deployment header); it has {sorted(routing.deployments)}",
                )
        else:
            deployment = routing.pick()
            if deployment is None:
                return _error(
                    503,
                    f"no deployment of {server.name} takes live traffic yet; set traffic "
                    "or target one with the azureml-model-deployment header",
                )
            mirrors = routing.mirrors()
        request_id = request.headers.get("x-request-id") or _request_id()
        try:
            probabilities, labels = await server.score_async(deployment, batch, request_id)
        except Exception as error:
            server.metrics.record(deployment.name, _ms_since(started), error=True)
            log.exception("deployment %s failed on request %s", deployment.name, request_id)
            return _error(
                500,
                f"deployment {deployment.name} failed to score: {type(error).__name__}: {error}",
                {"x-request-id": request_id},
            )
        spec = deployment.spec
        content = orjson.dumps(
            {
                "predictions": [
                    {"probability": p, "label": label}
                    for p, label in zip(probabilities, labels, strict=True)
                ],
                "deployment": spec.name,
                "model": {"name": spec.model_name, "version": spec.model_version},
            }
        )
        server.metrics.record(spec.name, _ms_since(started), error=False)
        return Response(
            content,
            media_type="application/json",
            headers={"x-request-id": request_id, "azureml-model-deployment": spec.name},
            background=BackgroundTask(server.mirror, mirrors, batch, request_id)
            if mirrors
            else None,
        )

    @app.get("/health/live")
    async def live() -> Response:
        return _json(200, {"status": "alive", "endpoint": server.name, "pid": server.pid})

    @app.get("/health/ready")
    async def ready() -> Response:
        routing = server.routing
        loaded = sorted(n for n, d in routing.deployments.items() if d.scorer is not None)
        live = sorted(n for n, p in routing.traffic.items() if p > 0)
        body = {"endpoint": server.name, "loaded": loaded, "live": live}
        if not loaded:
            return _json(503, {**body, "status": "not ready", "reason": "no deployment loaded"})
        return _json(200, {**body, "status": "ready"})

    admin = APIRouter(prefix="/admin", dependencies=[Depends(require_key)])

    @admin.put("/deployments/{name}")
    def put_deployment(name: str, body: DeploymentRequest) -> Response:
        _check_name(name, "deployment")
        spec = DeploymentSpec(
            name, body.model_name, body.model_version, body.model_path, body.threshold
        )
        try:
            deployment = server.put_deployment(spec)
        except DeploymentLoadError as error:
            raise DeploymentLoadError(f"deployment {name!r} was not created: {error}") from None
        return _json(200, deployment.describe())

    @admin.delete("/deployments/{name}")
    def delete_deployment(name: str) -> Response:
        server.delete_deployment(name)
        return _json(200, server.describe())

    @admin.put("/traffic")
    def put_traffic(body: TrafficRequest) -> Response:
        server.set_traffic(body.traffic, body.mirror_traffic)
        return _json(200, server.describe())

    @admin.get("/state")
    async def state() -> Response:
        return _json(200, server.describe())

    @admin.get("/metrics")
    async def metrics() -> Response:
        names = sorted(server.routing.deployments)
        return _json(
            200,
            {
                "window_seconds": METRICS_WINDOW_SECONDS,
                "window_requests": METRICS_WINDOW_REQUESTS,
                "deployments": server.metrics.snapshot(names),
            },
        )

    @admin.post("/metrics/reset")
    async def reset_metrics() -> Response:
        server.metrics.reset()
        return _json(200, {"reset": True})

    app.include_router(admin)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = EndpointServer(args.state_dir.resolve(), args.port)
    config = uvicorn.Config(
        create_app(server),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    runner = uvicorn.Server(config)
    runner.run()
    if not runner.started:
        server.close()
        log.error("could not listen on 127.0.0.1:%d (see above); the client retries", args.port)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
