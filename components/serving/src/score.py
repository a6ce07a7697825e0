"""The scoring script: the serving contract, in Azure ML's documented `init()` / `run()` form.

The same file runs in Azure ML's inference server (`azmlinfsrv`, from
`azureml-inference-server-http`) on a managed online deployment and, on a laptop, in the very
same server started by the local backend, so request and response shapes, validation, labels and
data collection have one definition.

Request: `{"input_data": {"columns": [...], "data": [[...], ...]}}` (split) or
`{"input_data": [{"age": 71, ...}, ...]}` (records), raw fields as the data contract defines them.
Response: `{"predictions": [{"probability": p, "label": 0|1}, ...], "model": {"name", "version"}}`,
the label being `probability >= threshold`, the threshold chosen at evaluation and given to the
deployment as MODEL_THRESHOLD. Every bad request gets a 4xx with `{"message": reason}` from this
script (the inference server's own errors have the same shape), and the server keeps serving.

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
from model_scoring import Scorer, load_scorer
from request_contract import MAX_BODY_BYTES, RequestError, parse_scoring_request

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
    threshold = float(os.environ.get("MODEL_THRESHOLD", "0.5"))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"MODEL_THRESHOLD={threshold} is not a probability in [0, 1]")
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
        "serving %s with the %s scorer (threshold %.4f)", _served.model, scorer.kind, threshold
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


@rawhttp
def run(request: Any) -> AMLResponse:
    """Score one request: validate every row against the contract, score, label, collect."""
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
        batch = parse_scoring_request(request.get_data(cache=False))
    except RequestError as error:
        return _refuse(error.status, error.reason)
    probabilities = served.scorer.probabilities(batch)
    labels = (probabilities >= served.threshold).astype(np.int8)
    request_id = request.headers.get("x-request-id", "")
    if served.inputs is not None:
        _collect(served, batch, probabilities, labels, request_id)
    content = {
        "predictions": [
            {"probability": p, "label": label}
            for p, label in zip(probabilities.tolist(), labels.tolist(), strict=True)
        ],
        "model": served.model,
    }
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
