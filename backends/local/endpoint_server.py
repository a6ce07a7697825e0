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

The parts: endpoint_state.py (state.json), scoring.py (loading, smoke-testing and the compiled
fast path), routing.py (traffic and mirror), serving_metrics.py (what health checks read),
capture.py (data capture); this module holds the endpoint and its HTTP routes.
"""

from __future__ import annotations

import argparse
import gc
import hmac
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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

from backends.local.capture import CAPTURE_DIR, CapturedRequest, CaptureWriter
from backends.local.endpoint_state import (
    NAME_PATTERN,
    STATE_FILE,
    DeploymentSpec,
    EndpointState,
    read_state,
    write_state,
)
from backends.local.request_schema import (
    MAX_BODY_BYTES,
    FeatureBatch,
    RequestError,
    parse_scoring_request,
)
from backends.local.routing import (
    Deployment,
    Routing,
    TrafficError,
    check_traffic,
    load_deployment,
)
from backends.local.scoring import DeploymentLoadError
from backends.local.scoring import load_scorer as load_scorer  # re-exported for callers
from backends.local.serving_metrics import METRICS_WINDOW_REQUESTS, METRICS_WINDOW_SECONDS, Metrics

log = logging.getLogger("endpoint_server")
THREADED_MIN_ROWS = 256
"""Requests this large are scored on a worker thread (see EndpointServer.score_async)."""
_DRAIN_LIMIT = 64 * 1024 * 1024
"""An oversized body is read and discarded up to this size so the client gets its 413 instead
of a reset connection; beyond it the connection is dropped."""

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
