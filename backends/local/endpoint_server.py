"""The local stand-in for an AML managed online endpoint: the endpoint in front, and one Azure ML
inference server (`azmlinfsrv`) per deployment behind it, running the very scoring script a
managed online deployment runs.

`python -m backends.local.endpoint_server --state-dir DIR --port P` serves one endpoint on
127.0.0.1. Everything that must survive a crash (key, deployments, traffic, mirror) is in
`DIR/state.json`, rewritten atomically on every change, so a restarted process comes back with
the same deployments (started again) and traffic.

The front does what Azure's endpoint does and nothing the script does: key auth, traffic
weights, mirrored copies, the `azureml-model-deployment` header, the body size limit, the
`x-request-id` (made up when the caller sent none, and forwarded, so the collected correlation
id is the caller's request id). The deployment's body is passed through as the script wrote it;
a non-200 status reaches the caller as Azure's endpoint passes it on: 424, with the container's
status in `ms-azureml-model-error-statuscode` and its phrase in `ms-azureml-model-error-reason`
("If your model container returns a non-200 response, Azure returns a 424", Troubleshooting
online endpoints, HTTP status codes).

Routes (all but /health need `Authorization: Bearer <key>`):
  POST   /score                      proxied to a deployment's azmlinfsrv
  GET    /health/live, /health/ready
  PUT    /admin/deployments/{name}   start a deployment; 0% traffic until told otherwise
  DELETE /admin/deployments/{name}   refused while it has live or mirror traffic
  PUT    /admin/traffic              {"traffic": {...}, "mirror_traffic": {...}}
  GET    /admin/state
  GET    /admin/metrics?start=S&end=E   requests, errors, p95 per deployment over [S, E) (epoch
                                     seconds), and `covered_until`: complete up to there
  PUT    /admin/metrics/delay        {"seconds": D}: figures for a moment become visible only D
                                     seconds later, rehearsing Azure Monitor's ingestion latency
                                     on a laptop (0, the default: at once; not kept in state.json)

The parts: endpoint_state.py (state.json), deployment_process.py (one azmlinfsrv),
data_collector.py (its collector sidecar), routing.py (traffic and mirror), serving_metrics.py
(what health checks read); Azure's traffic rules are backends/traffic_rules.py, shared with the
azure backend and the fake. This module holds the endpoint and its HTTP routes.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import importlib.util
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.local.data_collector import BLOB_DATASTORE, DataCollector
from backends.local.deployment_process import (
    DeploymentStartFailed,
    InferenceServer,
    instance_name,
    stop_leftover,
    upgraded,
)
from backends.local.endpoint_state import (
    CODE_DIR,
    INSTANCES_DIR,
    NAME_PATTERN,
    STATE_FILE,
    DeploymentSpec,
    EndpointState,
    read_state,
    write_state,
)
from backends.local.routing import Deployment, Routing
from backends.local.serving_metrics import Metrics
from backends.serving_package import SERVING_DIR
from backends.traffic_rules import RequestRefused, check_deletable, check_traffic

log = logging.getLogger("endpoint_server")
MIRROR_IN_FLIGHT = 64
"""Mirrored copies waiting for an answer beyond this are dropped: a slow mirror target must
not pile up work in the endpoint that live traffic depends on."""
_DRAIN_LIMIT = 64 * 1024 * 1024
"""An oversized body is read and discarded up to this size so the client gets its 413 instead
of a reset connection; beyond it the connection is dropped."""
_NOT_PASSED_BACK = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)


def _request_contract() -> Any:
    """The scoring script's request contract module (its body limit is the endpoint's too)."""
    path = SERVING_DIR / "src" / "request_contract.py"
    spec = importlib.util.spec_from_file_location("serving_request_contract", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


REQUEST_CONTRACT = _request_contract()
MAX_BODY_BYTES: int = REQUEST_CONTRACT.MAX_BODY_BYTES


# --- the endpoint ------------------------------------------------------------------------------


class EndpointServer:
    """One endpoint's deployments (inference server processes), routing, metrics and mirror."""

    def __init__(self, state_dir: Path, port: int, blob_root: Path | None = None) -> None:
        state = read_state(state_dir)
        if state is None:
            raise FileNotFoundError(
                f"no {STATE_FILE} in {state_dir}; create the endpoint with "
                "LocalEndpoints.create_or_update_endpoint, which writes it"
            )
        self.state_dir = state_dir
        self.blob_root = blob_root or state_dir.parent.parent / BLOB_DATASTORE
        self.name = state.endpoint
        self.port = port
        self.pid = os.getpid()
        self._recorded = state
        self._key = state.key
        self._authorization = f"Bearer {state.key}".encode()
        self._admin = asyncio.Lock()
        self._mirrors: set[asyncio.Task[None]] = set()
        self.routing = Routing({}, {}, {})
        self.metrics = Metrics()
        self.http = httpx.AsyncClient(
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                # a request's headers and body go out in two writes; over a kept-alive
                # connection the body would wait for the delayed ACK of the headers (~40 ms).
                # gunicorn's sync workers close every connection, so today this is a guard
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
        )

    @property
    def scoring_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self._authorization)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every recorded deployment again (after stopping what a crashed predecessor
        left running), before the endpoint listens: it answers only once they are up."""
        state = self._recorded
        for name, process in state.processes.items():
            if stop_leftover(process, self.state_dir):
                log.info("stopped deployment %s (pid %d) left by a previous run", name, process.pid)
            shutil.rmtree(self.state_dir / INSTANCES_DIR / process.instance, ignore_errors=True)
        specs = list(state.deployments.values())
        started = await asyncio.gather(
            *(self._restart(spec) for spec in specs), return_exceptions=True
        )
        deployments = {}
        for spec, result in zip(specs, started, strict=True):
            if isinstance(result, Deployment):
                deployments[spec.name] = result
                log.info("restored %s (%s v%s)", spec.name, spec.model_name, spec.model_version)
            else:
                log.error("deployment %s did not start again: %s", spec.name, result)
                deployments[spec.name] = Deployment(spec, None, None, str(result))
        self.routing = Routing(deployments, state.traffic, state.mirror_traffic)
        self.save()

    async def _restart(self, spec: DeploymentSpec) -> Deployment:
        if spec.is_legacy:
            spec = await asyncio.to_thread(upgraded, spec, self.state_dir / CODE_DIR)
        return await self._start_deployment(spec)

    async def _start_deployment(self, spec: DeploymentSpec) -> Deployment:
        """A collector sidecar, then the inference server, healthy; or DeploymentStartFailed
        with nothing left running."""
        instance = instance_name(spec.name)
        collector = DataCollector(self.blob_root, self.name, spec.name, instance)
        await collector.start()
        server = None
        try:
            for attempt in (1, 2):
                server = InferenceServer.launch(
                    spec, self.state_dir / INSTANCES_DIR / instance, collector.port
                )
                try:
                    took = await server.until_healthy(self.http)
                    log.info(
                        "%s (pid %d) answered GET / %.1f s after start", spec.name, server.pid, took
                    )
                    return Deployment(spec, server, collector)
                except DeploymentStartFailed:
                    if attempt == 1 and server.port_was_taken():
                        continue  # another process took the free port first: once more
                    raise
            raise AssertionError("unreachable")
        except BaseException:
            if server is not None:
                await server.stop()
            await collector.stop()
            raise

    async def _retire(self, deployment: Deployment) -> None:
        """Stop a deployment that no longer routes: let requests it holds finish first."""
        server = deployment.server
        if server is not None:
            deadline = time.monotonic() + deployment.spec.request_timeout_ms / 1000 + 1
            while server.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await server.stop()
            log.info("stopped %s (pid %d)", deployment.name, server.pid)
        if deployment.collector is not None:
            await deployment.collector.stop()
        if server is not None:
            shutil.rmtree(server.instance_dir, ignore_errors=True)

    async def close(self) -> None:
        """Stop every deployment (their collectors write what they buffered)."""
        for task in list(self._mirrors):
            task.cancel()
        deployments = list(self.routing.deployments.values())
        await asyncio.gather(*(self._stop(d) for d in deployments), return_exceptions=True)
        await self.http.aclose()

    @staticmethod
    async def _stop(deployment: Deployment) -> None:
        if deployment.server is not None:
            await deployment.server.stop()
        if deployment.collector is not None:
            await deployment.collector.stop()

    # --- state --------------------------------------------------------------------------------

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
                processes={n: d.server.record for n, d in routing.deployments.items() if d.server},
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

    # --- admin --------------------------------------------------------------------------------

    async def put_deployment(self, spec: DeploymentSpec) -> Deployment:
        """Start first, swap after: a deployment that fails to start leaves the routing table
        untouched. A replaced deployment is stopped once the new one routes."""
        deployment = await self._start_deployment(spec)
        async with self._admin:
            routing = self.routing
            replaced = routing.deployments.get(spec.name)
            self.routing = Routing(
                {**routing.deployments, spec.name: deployment},
                routing.traffic,
                routing.mirror_traffic,
            )
            self.save()
        log.info(
            "deployment %s serves %s v%s (pid %d, port %d)",
            spec.name,
            spec.model_name,
            spec.model_version,
            deployment.server.pid if deployment.server else -1,
            deployment.server.port if deployment.server else -1,
        )
        if replaced is not None:
            await self._retire(replaced)
        return deployment

    async def set_traffic(
        self, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int]
    ) -> None:
        async with self._admin:
            routing = self.routing
            check_traffic(
                self.name,
                routing.deployments,
                traffic,
                mirror_traffic,
                not_running=[n for n, d in routing.deployments.items() if not d.ready],
            )
            self.routing = Routing(routing.deployments, traffic, mirror_traffic)
            self.save()
        log.info("traffic %s mirror %s", dict(traffic), dict(mirror_traffic))

    async def delete_deployment(self, name: str) -> None:
        async with self._admin:
            routing = self.routing
            deployment = routing.deployments.get(name)
            if deployment is None:
                raise RequestRefused(404, f"endpoint {self.name} has no deployment {name!r}")
            check_deletable(self.name, name, routing.traffic, routing.mirror_traffic)
            remaining = {n: d for n, d in routing.deployments.items() if n != name}
            self.routing = Routing(remaining, routing.traffic, routing.mirror_traffic)
            self.save()
        await self._retire(deployment)
        log.info("deployment %s deleted", name)

    # --- scoring ------------------------------------------------------------------------------

    async def forward(
        self, deployment: Deployment, body: bytes, headers: Mapping[str, str], query: str = ""
    ) -> Response:
        """The deployment's own answer to the request, or the endpoint's when it cannot be
        reached in time; every outcome is counted (5xx, timeouts and failures as errors). The
        query string goes with it (the scoring script's `?explain=true`)."""
        started = time.perf_counter()
        server = deployment.server
        if server is None:
            self.metrics.record(deployment.name, _ms_since(started), error=True)
            return _error(
                503,
                f"deployment {deployment.name} is not running ({deployment.error}); redeploy "
                "it or shift its traffic",
            )
        timeout_ms = deployment.spec.request_timeout_ms
        server.in_flight += 1
        try:
            reply = await self.http.post(
                f"{server.base_url}/score" + (f"?{query}" if query else ""),
                content=body,
                headers=headers,
                timeout=timeout_ms / 1000,
            )
        except httpx.TimeoutException:
            self.metrics.record(deployment.name, _ms_since(started), error=True)
            return _error(
                408,
                f"deployment {deployment.name} did not answer within {timeout_ms} ms "
                "(request_timeout_ms); send fewer rows per request or retry",
            )
        except httpx.HTTPError as error:
            self.metrics.record(deployment.name, _ms_since(started), error=True)
            log.warning("deployment %s could not be reached: %r", deployment.name, error)
            return _error(
                502,
                f"deployment {deployment.name} could not be reached ({type(error).__name__}); "
                "retry, and see its log if it persists",
            )
        finally:
            server.in_flight -= 1
        self.metrics.record(deployment.name, _ms_since(started), error=reply.status_code >= 500)
        passed = {k: v for k, v in reply.headers.items() if k.lower() not in _NOT_PASSED_BACK}
        if reply.status_code == 200:
            return Response(reply.content, 200, passed)
        passed["ms-azureml-model-error-statuscode"] = str(reply.status_code)
        passed["ms-azureml-model-error-reason"] = _phrase(reply.status_code)
        return Response(reply.content, MODEL_ERROR_STATUS, passed)

    async def mirror(
        self, targets: Sequence[Deployment], body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Send a copy to each mirror target after the caller has its answer; the copy's
        outcome is counted against the mirror deployment and never reaches the caller."""
        for deployment in targets:
            if len(self._mirrors) >= MIRROR_IN_FLIGHT:
                log.warning(
                    "mirror copy to %s dropped: %d in flight", deployment.name, MIRROR_IN_FLIGHT
                )
                continue
            task = asyncio.create_task(self._mirror_copy(deployment, body, headers))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)

    async def _mirror_copy(
        self, deployment: Deployment, body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            await self.forward(deployment, body, headers)
        except Exception:  # the caller has its answer: log it, go on
            log.exception("mirror copy to %s failed", deployment.name)


MODEL_ERROR_STATUS = 424
"""What a caller gets when the deployment's container answers anything but 200."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _request_id() -> str:
    """A UUID4 from the process's PRNG: unique enough to find a request in collected data, and
    unlike `uuid.uuid4()` no system call on every request."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


# --- HTTP ----------------------------------------------------------------------------------


class DeploymentRequest(BaseModel):
    """What a deployment runs (see DeploymentSpec)."""

    model_name: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    model_path: str = Field(min_length=1)
    code: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)
    request_timeout_ms: int = Field(5_000, gt=0)
    start_timeout_s: float = Field(310.0, gt=0)


class TrafficRequest(BaseModel):
    traffic: dict[str, int]
    mirror_traffic: dict[str, int] = Field(default_factory=dict)


class MetricsDelayRequest(BaseModel):
    """How many seconds after a moment its figures become visible (Azure Monitor's ingestion
    latency, rehearsed)."""

    seconds: float = Field(ge=0, allow_inf_nan=False)


def _json(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    """The endpoint's own refusals, in the shape the scoring script and azmlinfsrv use."""
    return _json(status, {"message": reason}, headers)


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, or BodyTooLarge past MAX_BODY_BYTES by Content-Length or by count."""
    declared = request.headers.get("content-length", "")
    size, chunks = 0, list[bytes]()
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
        raise BodyTooLarge(
            f"the body is {shown:,} bytes, more than the {MAX_BODY_BYTES:,} allowed; "
            "send fewer rows per request"
        )
    return b"".join(chunks)


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        raise RequestRefused(
            422,
            f"{what} name {name!r} is not valid: start with a letter, then up to 31 "
            "letters, digits or hyphens",
        )


def create_app(server: EndpointServer) -> FastAPI:
    """The routes; the lifespan starts the deployments before the endpoint listens and stops
    them when uvicorn stops (SIGTERM too)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.close()

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

    @app.exception_handler(RequestRefused)
    async def refused(_: Request, error: RequestRefused) -> Response:
        return _error(error.status, error.reason)

    @app.post("/score")
    async def score(request: Request) -> Response:
        if not server.authorized(request.headers.get("authorization")):
            return _error(401, unauthorized, {"WWW-Authenticate": "Bearer"})
        try:
            body = await _read_body(request)
        except BodyTooLarge as error:
            return _error(413, str(error))
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
        forwarded = {
            "content-type": request.headers.get("content-type", "application/json"),
            "x-request-id": request_id,
        }
        response = await server.forward(deployment, body, forwarded, request.url.query)
        response.headers["x-request-id"] = request_id
        response.headers["azureml-model-deployment"] = deployment.name
        if mirrors:
            response.background = BackgroundTask(server.mirror, mirrors, body, forwarded)
        return response

    @app.get("/health/live")
    async def live() -> Response:
        return _json(200, {"status": "alive", "endpoint": server.name, "pid": server.pid})

    @app.get("/health/ready")
    async def ready() -> Response:
        routing = server.routing
        loaded = sorted(n for n, d in routing.deployments.items() if d.ready)
        live = sorted(n for n, p in routing.traffic.items() if p > 0)
        body = {"endpoint": server.name, "loaded": loaded, "live": live}
        if not loaded:
            return _json(503, {**body, "status": "not ready", "reason": "no deployment runs"})
        return _json(200, {**body, "status": "ready"})

    admin = APIRouter(prefix="/admin", dependencies=[Depends(require_key)])

    @admin.put("/deployments/{name}")
    async def put_deployment(name: str, body: DeploymentRequest) -> Response:
        _check_name(name, "deployment")
        spec = DeploymentSpec(name=name, **body.model_dump())
        try:
            deployment = await server.put_deployment(spec)
        except DeploymentStartFailed as error:
            return _error(422, f"deployment {name!r} was not created: {error}; nothing was changed")
        return _json(200, deployment.describe())

    @admin.delete("/deployments/{name}")
    async def delete_deployment(name: str) -> Response:
        await server.delete_deployment(name)
        return _json(200, server.describe())

    @admin.put("/traffic")
    async def put_traffic(body: TrafficRequest) -> Response:
        await server.set_traffic(body.traffic, body.mirror_traffic)
        return _json(200, server.describe())

    @admin.get("/state")
    async def state() -> Response:
        return _json(200, server.describe())

    @admin.get("/metrics")
    async def metrics(start: float, end: float) -> Response:
        if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
            return _error(
                422,
                f"the window [start={start}, end={end}) is empty or not finite: start must be "
                "before end (epoch seconds)",
            )
        window = server.metrics.window(start, end)
        return _json(
            200,
            {
                "start": window.start,
                "end": window.end,
                "covered_until": window.covered_until,
                "deployments": {n: f.as_json() for n, f in window.deployments.items()},
            },
        )

    @admin.put("/metrics/delay")
    async def put_metrics_delay(body: MetricsDelayRequest) -> Response:
        server.metrics.delay = body.seconds
        log.info("metrics delay %.3f s", body.seconds)
        return _json(200, {"seconds": server.metrics.delay})

    app.include_router(admin)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--blob-root",
        type=Path,
        default=None,
        help="the workspace blob datastore folder collected data goes to",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every response waits ~40 ms for the client's delayed ACK
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # before the deployments start: a taken port fails fast and the client retries
        listener.bind(("127.0.0.1", args.port))
    except OSError as error:
        log.error("could not listen on 127.0.0.1:%d (%s); the client retries", args.port, error)
        return 3
    blob_root = args.blob_root.resolve() if args.blob_root else None
    server = EndpointServer(args.state_dir.resolve(), args.port, blob_root)
    config = uvicorn.Config(
        create_app(server),
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
