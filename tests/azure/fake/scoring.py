"""The front door of the fake's managed online endpoints, and the Azure Monitor metrics the
requests leave behind.

`FakeAzureML.serve_scoring()` starts a loopback HTTP server and switches the fake's compute on:
deployments provisioned after that run in containers.py (the deployment's own scoring script in
Azure ML's inference server), and endpoints get `http://127.0.0.1:<port>/<endpoint>/score` as
their scoring URI, so callers that use plain httpx (integration tests, the rollout's canary
probes, the traffic generator) reach them as they would reach Azure. What the front door does is
the service's part only; what a request gets back is the scoring script's:

- auth: an Entra bearer token the fake's credential issued (auth_mode aad_token), else 401;
- routing: the `azureml-model-deployment` header pins a deployment; otherwise a live deployment
  is drawn by the traffic weights, and requests drawn that way are copied to the mirror
  deployment at its mirror percentage in the background (the copy's answer is dropped); no
  deployment with positive weight: 404 ("Troubleshooting online endpoints", HTTP status codes);
- forwarding: the body and content type go to the deployment's server unchanged, with an
  `x-request-id` (the caller's, else one made up here, as the service generates one for
  tracing); its answer comes back with its headers and body, plus `azureml-model-deployment`,
  `azureml-model-session` and `x-request-id` (as the recorded scoring response,
  test_online_deployment_create.json, shows). A non-200 answer from the container reaches the
  caller as 424 with `ms-azureml-model-error-statuscode` / `-reason` headers and the
  container's body ("If your model container returns a non-200 response, Azure returns a
  424", same troubleshooting table; the table says nothing about the body, which is passed on);
- metrics: every answer is counted per deployment with its status code and the model's status
  code, and `Microsoft.Insights/metrics` on the endpoint answers RequestsPerMinute and
  RequestLatency_P95 split by deployment, statusCodeClass, statusCode and modelStatusCode (the
  endpoint-scope metrics and dimensions of "Monitor online endpoints"), aggregated per time
  grain and published only once a grain has ended and `metrics_ingestion_delay_seconds` have
  passed (the shape of Azure Monitor's Metrics - List REST API examples; see `_metrics`).

Fault switch (no source; a test's stand-in for a container that falls over under load):
`crash_when_live`. Test-only deviation (no source): metrics grains of seconds (`PTnS`; Azure's
smallest for these metrics is PT1M), so a test bakes a traffic step in seconds. Not reproduced:
request timeouts (408), the 429 concurrency limit, payload logging, bandwidth throttling, the
bodies of the front door's own refusals (401/404; answered `{"message": ...}` here,
undocumented).
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson

from tests.azure.fake.http import PROVIDER, Reply, SeenRequest, arm_error
from tests.azure.fake.state import BATCH_RECORDING, DEPLOYMENT_RECORDING, RouteSource

SCORE_PATH = re.compile(r"/(?P<endpoint>[^/]+)/score")
NOT_PASSED_BACK = {
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "date",
    "server",
}
DIMENSIONS = ("deployment", "statusCode", "statusCodeClass", "modelStatusCode")
INFERENCE = "https://{endpoint}.{region}.inference.ml.azure.com"
# what the front door follows (dispatched by host, outside FakeAzureML's route table)
FRONT_DOOR_SOURCES = (
    RouteSource(
        "POST", INFERENCE + "/score", "score_request", DEPLOYMENT_RECORDING + "#108", routed=False
    ),
    RouteSource(
        "POST",
        INFERENCE + "/score (the container answers non-200)",
        "score_request",
        None,
        "424 with ms-azureml-model-error-statuscode/-reason and the container's body: the "
        "'Troubleshooting online endpoints' status-code table says so; no recording shows it",
        routed=False,
    ),
    RouteSource(
        "POST",
        INFERENCE + "/score (no deployment takes traffic, no valid token)",
        "score_request",
        None,
        "404 / 401 with a {'message': ...} body: the status codes are the troubleshooting "
        "table's, the bodies undocumented; no recording shows either",
        routed=False,
    ),
    RouteSource(
        "POST",
        INFERENCE + "/score (a copy mirrored to the shadow deployment)",
        "score_request",
        None,
        "the copy goes to the mirror deployment with the caller's x-request-id (or the one made "
        "up for the live answer), so both deployments' collected data carry one correlation id "
        "(tasks/rollout/shadow.py pairs on it). 'Perform safe rollout of new deployments' says "
        "the mirrored percentage is copied and submitted to the shadow deployment and clients "
        "get only the live answer; 'Collect production data' says the collected correlationid "
        "is the id the script's correlation context carries. Neither, nor any recording, says "
        "which x-request-id the copy carries",
        routed=False,
    ),
    RouteSource(
        "POST", INFERENCE + "/jobs", "invoke_batch", BATCH_RECORDING + "#21,24", routed=False
    ),
)


@dataclass(frozen=True)
class Served:
    """One answered request, as Azure Monitor counts it: in the time grain `at` falls in, under
    its dimensions' values."""

    endpoint: str
    deployment: str
    at: float  # epoch seconds
    status: int  # what the caller got
    model_status: int | None  # what the container answered (None: it was not reached)
    latency_ms: float
    mirrored: bool = False

    def dimension(self, name: str) -> str:
        return {
            "deployment": self.deployment,
            "statusCode": str(self.status),
            "statusCodeClass": f"{self.status // 100}xx",
            "modelStatusCode": "" if self.model_status is None else str(self.model_status),
        }[name]


class ScoringApi:
    """Mixed into FakeAzureML."""

    metrics_ingestion_delay_seconds: float = 0.0
    """How long after a grain ends its metrics are published (Azure: a few minutes); tests
    set it to see a window that is not covered yet."""

    def crash_when_live(self, endpoint: str, deployment: str, share: int) -> None:
        """`deployment`'s container answers every request with a 500 (so the caller gets a 424
        and Azure Monitor counts a model 5xx) once it takes `share` percent of `endpoint`'s
        live traffic: a model that is fine on a mirror and at 10% but falls over under load.
        `crashes.clear()` heals it."""
        self.crashes[(endpoint, deployment)] = share

    @property
    def serving(self) -> bool:
        """Whether deployments run in containers (switched on by `serve_scoring`)."""
        return getattr(self, "_scoring_server", None) is not None

    def serve_scoring(self) -> str:
        """Start the loopback front door (once) and run deployments provisioned from now on in
        containers; the front door's base URL."""
        if getattr(self, "_scoring_server", None) is None:
            self.served: list[Served] = []
            self._forward = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
            self._mirror_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mirror")
            self._mirror_copies: list[Future[None]] = []
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._scoring_server = server
        return f"http://127.0.0.1:{self._scoring_server.server_address[1]}"

    def stop_scoring(self) -> None:
        """Stop the front door, every container and sidecar (by pid), and the mirror copies."""
        server = getattr(self, "_scoring_server", None)
        if server is not None:
            self._scoring_server = None
            server.shutdown()
            server.server_close()
            self._mirror_pool.shutdown(wait=True, cancel_futures=True)
            self._forward.close()
        self.stop_containers()

    def scoring_uri_for(self, name: str, location: str) -> str:
        if self.serving:
            return f"{self.serve_scoring()}/{name}/score"
        return f"https://{name}.{location}.inference.ml.azure.com/score"

    def is_scoring_request(self, request: SeenRequest) -> bool:
        if request.host.endswith(".inference.ml.azure.com"):
            return True
        server = getattr(self, "_scoring_server", None)
        return (
            server is not None
            and request.host == "127.0.0.1"
            and request.url.split("/")[2].endswith(f":{server.server_address[1]}")
        )

    def score_request(self, request: SeenRequest) -> Reply:
        """A scoring request that came through the SDK's transport (`online_endpoints.invoke`)."""
        if self.is_batch_invocation(request):  # `batch_endpoints.invoke`: batch.py
            return self.invoke_batch(request)
        path = request.path
        if request.host.endswith(".inference.ml.azure.com"):
            path = f"/{request.host.split('.')[0]}{path}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, reply_headers, body = self.score_http(path, headers, request.body)
        return Reply(status, body, reply_headers)

    # --- one scoring request ---------------------------------------------------------------

    def score_http(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request to an endpoint's scoring URI."""
        started = time.perf_counter()
        match = SCORE_PATH.fullmatch(path.split("?")[0])
        if match is None:
            return _refusal(404, f"no route {path}")
        name = match["endpoint"]
        with self._lock:
            ws = next((w for w in self.workspaces.values() if name in w.endpoints), None)
            if ws is None:
                return _refusal(404, f"endpoint {name} not found")
            auth = headers.get("authorization", "")
            if not self.accepts_token(auth):
                return _refusal(401, "missing or invalid Entra token (auth_mode aad_token)")
            props = ws.endpoints[name]["properties"]
            traffic = {d: int(p) for d, p in props["traffic"].items()}
            pinned = headers.get("azureml-model-deployment")
            mirrors: list[str] = []
            if pinned:
                target: str | None = pinned
                if pinned not in ws.deployments.get(name, {}):
                    return _refusal(404, f"endpoint {name} has no deployment {pinned!r}")
            else:
                target = _draw(traffic)
                if target is None:
                    return _refusal(
                        404, "The endpoint doesn't have any valid deployment with positive weight."
                    )
                mirrors = [
                    d
                    for d, pct in (props.get("mirrorTraffic") or {}).items()
                    if int(pct) > 0 and random.random() * 100 < int(pct)
                ]
            container = self.containers.get((ws.name.lower(), name, target))
            mirror_to = [(d, self.containers.get((ws.name.lower(), name, d))) for d in mirrors]
            crash_at = self.crashes.get((name, target))
            crashed = crash_at is not None and traffic.get(target, 0) >= crash_at
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        forwarded = {
            "Content-Type": headers.get("content-type", "application/json"),
            "x-request-id": request_id,
        }
        if headers.get("x-ms-client-request-id"):
            forwarded["x-ms-client-request-id"] = headers["x-ms-client-request-id"]
        status, reply_headers, content, model_status = self._forward_to(
            container, target, forwarded, body, crashed
        )
        reply_headers |= {
            "azureml-model-deployment": target,
            "azureml-model-session": target,
            "x-request-id": request_id,
            "Server": "azureml-frontdoor",
        }
        self._count(name, target, status, model_status, started)
        for deployment, copy_to in mirror_to:
            copied = self._mirror_pool.submit(
                self._mirror, name, deployment, copy_to, forwarded, body
            )
            with self._lock:
                self._mirror_copies.append(copied)
        return status, reply_headers, content

    def wait_for_mirror_copies(self, timeout: float = 30.0) -> None:
        """Until every mirrored copy sent so far has been answered (they run after the caller
        has its answer)."""
        with self._lock:
            pending = list(getattr(self, "_mirror_copies", []))
        wait(pending, timeout)

    def _forward_to(
        self,
        container: Any,
        deployment: str,
        headers: dict[str, str],
        body: bytes,
        crashed: bool = False,
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        """(status for the caller, headers, body, the container's own status or None)."""
        if container is None or container.state != "Ready":
            state = "not running" if container is None else container.state.lower()
            status, reply_headers, content = _refusal(
                503, f"deployment {deployment} has no ready container ({state})"
            )
            return status, reply_headers, content, None
        if crashed:
            model_status = 500
            content = orjson.dumps({"message": f"{deployment} ran out of memory"})
            reply_headers = {"Content-Type": "application/json"}
        else:
            try:
                answer = self._forward.post(container.url + "/score", content=body, headers=headers)
            except httpx.HTTPError as error:
                status, reply_headers, content = _refusal(
                    502, f"the container of {deployment} did not answer: {error!r}"
                )
                return status, reply_headers, content, None
            model_status = answer.status_code
            content = answer.content
            reply_headers = {
                k: v for k, v in answer.headers.items() if k.lower() not in NOT_PASSED_BACK
            }
        if model_status == 200:
            return 200, reply_headers, content, model_status
        reply_headers |= {
            "ms-azureml-model-error-statuscode": str(model_status),
            "ms-azureml-model-error-reason": _reason(model_status),
        }
        return 424, reply_headers, content, model_status

    def _mirror(
        self, endpoint: str, deployment: str, container: Any, headers: dict[str, str], body: bytes
    ) -> None:
        """A mirrored copy: scored and counted against the mirror deployment, answer dropped."""
        started = time.perf_counter()
        status, _, _, model_status = self._forward_to(container, deployment, headers, body)
        self._count(endpoint, deployment, status, model_status, started, mirrored=True)

    def _count(
        self,
        endpoint: str,
        deployment: str,
        status: int,
        model_status: int | None,
        started: float,
        mirrored: bool = False,
    ) -> None:
        latency = (time.perf_counter() - started) * 1000
        with self._lock:
            self.served.append(
                Served(endpoint, deployment, time.time(), status, model_status, latency, mirrored)
            )

    # --- Azure Monitor metrics ---------------------------------------------------------------

    def _metrics(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        """RequestsPerMinute (Total) and RequestLatency_P95 (Average) of one endpoint, per time
        grain of `interval` (ISO 8601, default PT1M) over `timespan` (`start/end`, ISO 8601;
        absent: the last hour), split by the dimensions `$filter` asks to split by
        (`dim eq '*'`) and restricted to the values it names (`dim eq 'value'`).

        As Azure Monitor does: requests are aggregated per grain, grains aligned to multiples
        of the grain since the epoch, one data point per grain and series stamped with the
        grain's start. A timespan that does not start or end on a grain is widened to whole
        grains and answered so (an assumption: the examples ask for whole grains only, as the
        backend does). A grain's figures are published once it has ended and
        `metrics_ingestion_delay_seconds` (Azure: a few minutes) have passed; until then, like
        a grain without requests, its data point holds only its timeStamp (the 2018-01-01
        GetMetric example's empty grains: no `average` where nothing was measured). A series
        exists for each combination of split values with published data (no split: one series,
        data or not). The p95 of a grain is over the latencies of the series' requests in it:
        split by statusCodeClass and modelStatusCode, a series that is not an error series
        holds only answers that were not errors. A malformed `interval`, `timespan` or
        `$filter` is answered 400.

        Sources: the endpoint-scope metrics and their dimensions in "Monitor online endpoints"
        (Azure ML docs); the Metrics - List examples of the Azure Monitor REST API (2023-10-01
        GetMetric: the response shape of the api-version the backend calls; 2018-01-01
        GetMetric: PT1M grains, grains without data); no recording.

        Test-only deviation (no source): Azure's smallest grain for these metrics is PT1M; the
        fake also accepts grains of seconds (PTnS), so tests can bake a traffic step in seconds.
        Not reproduced: the `FULL` and day grains, `top`/`orderby`, `AutoAdjustTimegrain`, and
        aggregations other than Total and Average (RequestsPerMinute always answers `total`,
        RequestLatency_P95 `average`)."""
        endpoint = name
        found = self._ws(sub, rg, ws)
        if found is None or endpoint not in found.endpoints:
            return arm_error(404, "ResourceNotFound", f"endpoint {endpoint} not found")
        interval = request.query.get("interval", "PT1M")
        grain = _grain_seconds(interval)
        if grain is None:
            return arm_error(400, "BadRequest", f"Invalid interval {interval!r} (ISO 8601)")
        now = time.time()
        span = _timespan(request.query.get("timespan"), now)
        if span is None:
            return arm_error(
                400, "BadRequest", f"Invalid timespan {request.query.get('timespan')!r}"
            )
        first = math.floor(span[0] / grain) * grain
        last = math.ceil(span[1] / grain) * grain
        split, only = [], {}
        for clause in filter(None, re.split(r"\s+and\s+", request.query.get("$filter", ""))):
            term = re.fullmatch(r"\s*(\w+)\s+eq\s+'([^']*)'\s*", clause)
            if term is None or term[1] not in DIMENSIONS:
                return arm_error(400, "BadRequest", f"Invalid $filter clause: {clause}")
            if term[2] == "*":
                split.append(term[1])
            else:
                only[term[1]] = term[2]
        published = now - self.metrics_ingestion_delay_seconds  # grains that ended by then
        served = [
            s
            for s in getattr(self, "served", [])
            if s.endpoint == endpoint
            and first <= s.at < last
            and _grain_start(s.at, grain) + grain <= published
            and all(s.dimension(k) == v for k, v in only.items())
        ]
        groups: dict[tuple[str, ...], dict[int, list[Served]]] = {} if split else {(): {}}
        for s in served:
            key = tuple(s.dimension(d) for d in split)
            groups.setdefault(key, {}).setdefault(_grain_start(s.at, grain), []).append(s)
        starts = range(first, last, grain)
        values = []
        for metric in request.query.get("metricnames", "").split(","):
            if metric not in ("RequestsPerMinute", "RequestLatency_P95"):
                return arm_error(400, "BadRequest", f"Failed to find metric {metric}")
            series = []
            for key, grains in sorted(groups.items()):
                names = dict(zip(split, key, strict=True)) | only
                series.append(
                    {
                        "metadatavalues": [
                            {"name": {"value": d, "localizedValue": d}, "value": v}
                            for d, v in names.items()
                        ],
                        "data": [_point(metric, start, grains.get(start, [])) for start in starts],
                    }
                )
            values.append(
                {
                    "id": f"{request.path}/{metric}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": metric, "localizedValue": metric},
                    "unit": "Count" if metric == "RequestsPerMinute" else "MilliSeconds",
                    "timeseries": series,
                    "errorCode": "Success",
                }
            )
        return Reply(
            200,
            {
                "cost": 0,
                "timespan": f"{_stamp(first)}/{_stamp(last)}",
                "interval": _duration(grain),
                "value": values,
                "namespace": f"{PROVIDER}/workspaces/onlineEndpoints",
                "resourceregion": found.location,
            },
        )


GRAIN = re.compile(r"PT(?P<n>\d+)(?P<unit>[HMS])")
UNIT_SECONDS = {"H": 3600, "M": 60, "S": 1}


def _grain_seconds(interval: str) -> int | None:
    """`PTnH`, `PTnM` or `PTnS` in seconds; None for anything else."""
    match = GRAIN.fullmatch(interval)
    if match is None or int(match["n"]) == 0:
        return None
    return int(match["n"]) * UNIT_SECONDS[match["unit"]]


def _duration(seconds: int) -> str:
    for unit in "HM":
        if seconds % UNIT_SECONDS[unit] == 0:
            return f"PT{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"PT{seconds}S"


def _timespan(text: str | None, now: float) -> tuple[float, float] | None:
    """`start/end` (ISO 8601 date-times; no zone: UTC) in epoch seconds, None if malformed or
    empty; absent: the last hour."""
    if text is None:
        return now - 3600, now
    start, slash, end = text.partition("/")
    try:
        bounds = [datetime.fromisoformat(t.strip()) for t in (start, end)] if slash else []
    except ValueError:
        return None
    if not bounds:
        return None
    since, until = (b if b.tzinfo else b.replace(tzinfo=UTC) for b in bounds)
    return (since.timestamp(), until.timestamp()) if until > since else None


def _grain_start(at: float, grain: int) -> int:
    return math.floor(at / grain) * grain


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _point(metric: str, start: int, members: list[Served]) -> dict[str, Any]:
    """One grain of one series: its start, and its value if anything was measured in it."""
    point: dict[str, Any] = {"timeStamp": _stamp(start)}
    if not members:
        return point
    if metric == "RequestsPerMinute":
        point["total"] = float(len(members))
    else:
        latencies = sorted(s.latency_ms for s in members)
        point["average"] = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return point


def _draw(traffic: dict[str, int]) -> str | None:
    """A live deployment drawn by its traffic weight, or None when none takes traffic."""
    live = [(d, p) for d, p in traffic.items() if p > 0]
    if not live:
        return None
    return random.choices([d for d, _ in live], weights=[p for _, p in live])[0]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _refusal(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, orjson.dumps({"message": message})


def _handler(fake: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "azureml-frontdoor"  # the Server header of the recorded answer
        sys_version = ""
        # headers and body go out in two writes: with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms a request, most of a rollout's probing time)
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply_headers, content = fake.score_http(self.path, headers, body)
            self.send_response(status)
            for key, value in reply_headers.items():
                if key.lower() != "server":  # send_response sent it
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
