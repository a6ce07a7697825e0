"""The scoring script: the serving contract, in Azure ML's documented `init()` / `run()` form.

The same file runs in Azure ML's inference server (`azmlinfsrv`, from
`azureml-inference-server-http`) on a managed online deployment and, on a laptop, in the very
same server started by the local backend, so request and response shapes, validation, labels and
data collection have one definition.

Request: `{"input_data": {"columns": [...], "data": [[...], ...]}}` (split) or
`{"input_data": [{"age": 71, ...}, ...]}` (records), raw fields as the data contract defines them.
Response: `{"predictions": [{"probability": p, "label": 0|1}, ...], "model": {"name", "version"}}`,
the label being `probability >= threshold` (model_scoring.predicted_labels), the threshold chosen
at evaluation and given to the deployment as MODEL_THRESHOLD. Every bad request gets a 4xx with
`{"message": reason}` from this script (the inference server's own errors have the same shape),
and the server keeps serving.

Explanations, on request only: `POST /score?explain=true` adds, per row, the features that
pushed its score up or down most (`?explain=true&explain_top=K`, K from 1 to the number of
features, default 5), as log-odds contributions that add up exactly:

    "explanation": {"method": "tree path attributions (Saabas)", "units": "log-odds",
                    "base_value": b, "top": K},
    "predictions": [{"probability": p, "label": l, "log_odds": m,
                     "contributions": [{"feature": "age", "value": 83, "contribution": 0.41},
                                       ...K of them, largest |contribution| first],
                     "other_features": r}, ...]

with b + the K contributions + r = m = logit(p) (model_scoring.py says what the method promises
and what it does not). A query parameter, not a body field, because the body is the model's
input as Azure ML's `input_data` layouts define it (and what data collection, mirroring and
batch scoring read): asking for an explanation changes the answer's shape, not the rows. Azure
ML's inference server hands `run()` the whole HTTP request (`@rawhttp`), query string included.
A request without `explain` (or with `explain=false`) runs exactly as before; a bad value gets a
400 naming it; a deployment whose model is served through the plain pipeline answers 422.

Settings (environment variables the deployment sets): AZUREML_MODEL_DIR (Azure ML's), MODEL_NAME,
MODEL_VERSION, MODEL_THRESHOLD; AZUREML_MDC_* for the data collector sidecar.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse
from model_scoring import (
    Contributions,
    ExplanationUnavailable,
    Scorer,
    decision_threshold,
    load_scorer,
    predicted_labels,
)
from request_contract import MAX_BODY_BYTES, FeatureBatch, RequestError, parse_scoring_request

from data_checks.readmission_schema import FEATURES

log = logging.getLogger("score")
COLLECTIONS = ("model_inputs", "model_outputs")
"""The collection names Azure ML's model monitoring reads (and the deployment enables)."""


class Served(NamedTuple):
    """What init() loaded: the scorer, the label rule's threshold, the model's identity.
    (Not a dataclass: the server imports this file without registering it as a module.)"""

    scorer: Scorer
    threshold: float
    model: dict[str, str]
    inputs: Any  # azureml.ai.monitoring.Collector, or None when collection is off
    outputs: Any


_served: Served | None = None


def init() -> None:
    """Load and smoke-test the model once per worker. Raising here stops the container (the
    deployment never becomes ready, so it never gets traffic)."""
    global _served
    model_dir = Path(os.environ["AZUREML_MODEL_DIR"])
    threshold = decision_threshold(os.environ)
    scorer = load_scorer(model_dir)
    inputs, outputs = _collectors()
    _served = Served(
        scorer=scorer,
        threshold=threshold,
        model={
            "name": os.environ.get("MODEL_NAME", model_dir.parent.name),
            "version": os.environ.get("MODEL_VERSION", model_dir.name),
        },
        inputs=inputs,
        outputs=outputs,
    )
    log.info(
        "serving %s with the %s scorer (threshold %.4f, explanations %s)",
        _served.model,
        scorer.kind,
        threshold,
        "on request" if scorer.explains else "unavailable",
    )


def _collectors() -> tuple[Any, Any]:
    """Azure ML's data collector clients, when the deployment enables collection: they post
    each collection to the sidecar at AZUREML_MDC_HOST:AZUREML_MDC_PORT."""
    if os.environ.get("AZUREML_MDC_ENABLED", "false").lower() != "true":
        return None, None
    from azureml.ai.monitoring import Collector

    def dropped(error: Exception) -> None:
        log.warning("data collection dropped a record: %s", error)

    return (
        Collector(name="model_inputs", on_error=dropped),
        Collector(name="model_outputs", on_error=dropped),
    )


def _reply(status: int, content: Any, headers: dict[str, str] | None = None) -> AMLResponse:
    return AMLResponse(
        orjson.dumps(content), status, {"Content-Type": "application/json", **(headers or {})}
    )


def _refuse(status: int, reason: str) -> AMLResponse:
    return _reply(status, {"message": reason})


EXPLAIN_TOP = 5
"""Contributions per row when a request asks for an explanation without `explain_top`."""
EXPLANATION_METHOD = "tree path attributions (Saabas)"


def _explain_top(request: Any, n_features: int) -> int | None:
    """How many contributions per row the request asks for, or None when it asks for none.

    Raises RequestError (400) for a value that is not `true`/`false`, an `explain_top` that is
    not a whole number from 1 to the number of features, either given twice, or `explain_top`
    without `explain=true`."""
    if not request.query_string:  # the default path: no query string, nothing parsed
        return None
    flags, tops = request.args.getlist("explain"), request.args.getlist("explain_top")
    if len(flags) > 1 or len(tops) > 1:
        raise RequestError(400, "give explain and explain_top at most once each")
    flag = flags[0].strip().lower() if flags else "false"
    if flag not in ("true", "false"):
        raise RequestError(
            400,
            f"explain={flags[0]!r} is neither true nor false; add ?explain=true to get each "
            "row's top contributing features",
        )
    if flag == "false":
        if tops:
            raise RequestError(400, "explain_top needs explain=true (?explain=true&explain_top=K)")
        return None
    if not tops:
        return min(EXPLAIN_TOP, n_features)
    text = tops[0].strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= n_features):
        raise RequestError(
            400, f"explain_top={tops[0]!r} is not a whole number from 1 to {n_features}"
        )
    return int(text)


def _explained(
    predictions: list[dict[str, Any]], contributions: Contributions, batch: FeatureBatch, top: int
) -> dict[str, Any]:
    """Each prediction gains its log-odds, its `top` largest contributions (by size, with the
    feature's value as sent) and the sum of the others; returns the answer's `explanation`."""
    values = contributions.values
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top]
    shown = np.take_along_axis(values, order, axis=1)
    others = values.sum(axis=1) - shown.sum(axis=1)
    names = contributions.features
    for row, prediction in enumerate(predictions):
        prediction["log_odds"] = float(contributions.log_odds[row])
        prediction["contributions"] = [
            {
                "feature": names[column],
                "value": batch.columns[names[column]][row],
                "contribution": float(value),
            }
            for column, value in zip(order[row].tolist(), shown[row].tolist(), strict=True)
        ]
        prediction["other_features"] = float(others[row])
    return {
        "method": EXPLANATION_METHOD,
        "units": "log-odds",
        "base_value": contributions.base_value,
        "top": top,
    }


@rawhttp
def run(request: Any) -> AMLResponse:
    """Score one request: validate every row against the contract, score, label, collect
    (and, when the query string asks, explain)."""
    if request.method != "POST":
        return _refuse(405, f"{request.method} is not supported; POST the rows as JSON")
    served = _served
    if served is None:
        return _refuse(503, "the model is not loaded yet; retry shortly")
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        return _refuse(
            413,
            f"the body is {declared:,} bytes, more than the {MAX_BODY_BYTES:,} allowed; "
            "send fewer rows per request",
        )
    try:
        top = _explain_top(request, len(FEATURES))
        batch = parse_scoring_request(request.get_data(cache=False))
    except RequestError as error:
        return _refuse(error.status, error.reason)
    explained = None
    if top is not None:
        try:
            explained = served.scorer.contributions(batch)
        except ExplanationUnavailable as why:
            return _refuse(422, str(why))
    probabilities = served.scorer.probabilities(batch)
    labels = predicted_labels(probabilities, served.threshold)
    request_id = request.headers.get("x-request-id", "")
    if served.inputs is not None:
        _collect(served, batch, probabilities, labels, request_id)
    content: dict[str, Any] = {
        "predictions": [
            {"probability": p, "label": label}
            for p, label in zip(probabilities.tolist(), labels.tolist(), strict=True)
        ],
        "model": served.model,
    }
    if explained is not None and top is not None:
        content["explanation"] = _explained(content["predictions"], explained, batch, top)
    return _reply(200, content)


def _collect(
    served: Served, batch: Any, probabilities: np.ndarray, labels: np.ndarray, request_id: str
) -> None:
    """Inputs and outputs as two collections joined by one correlation id (the request id,
    so a collected row can be traced back to the call that sent it)."""
    import pandas as pd
    from azureml.ai.monitoring.context import BasicCorrelationContext

    context = BasicCorrelationContext(id=request_id or None)
    inputs = pd.DataFrame({name: list(values) for name, values in batch.columns.items()})
    context = served.inputs.collect(inputs, context)
    outputs = pd.DataFrame({"probability": probabilities, "label": labels.astype(int)})
    served.outputs.collect(outputs, context)
