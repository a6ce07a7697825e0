"""Real HTTP scoring for the fake's managed online endpoints, and the Azure Monitor metrics
the requests leave behind.

`FakeAzureML.serve_scoring()` starts a loopback HTTP server; endpoints provisioned after that
get `http://127.0.0.1:<port>/<endpoint>/score` as their scoring URI, so callers that use plain
httpx (the integration tests, the rollout's canary probes) reach it like the real service:
Entra bearer token required (one the fake's credential issued), the `azureml-model-deployment`
header pins a deployment, bad requests get 4xx with a reason, and rows are scored with the
model files the deployment's model version holds in the fake's storage (loaded as the local
backend's endpoint server loads them). Every request is counted per deployment; the
`Microsoft.Insights/metrics` route answers from those counts.

A deployment created with a data collector gets what Azure instruments an MLflow deployment
with: each scored request is logged to the workspace blob store as one JSON line per enabled
collection (`model_inputs`: the rows sent, `model_outputs`: what was answered, sharing a
`correlationid`) under `<collection folder>/yyyy/MM/dd/HH/<instance>.jsonl`, the collection
folder being the data asset the SDK registered for it (by default
`modelDataCollector/<endpoint>/<deployment>/<collection>`). Not reproduced: the collector's
batching of close requests into one line, its delay before files appear, `sampling_rate`
below 1, other rolling rates, payload (`request`/`response`) logging and custom datastores.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.azure.fake.http import PROVIDER, Reply, SeenRequest, arm_error
from tests.azure.fake.state import Blob

MAX_BODY_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Served:
    endpoint: str
    deployment: str
    at: float  # epoch seconds
    status: int
    latency_ms: float


class ScoringApi:
    """Mixed into FakeAzureML."""

    def crash_when_live(self, endpoint: str, deployment: str, share: int) -> None:
        """`deployment`'s container fails every request (a 500, counted in its Azure Monitor
        metrics) once it takes `share` percent of `endpoint`'s live traffic: a model that is
        fine on a mirror and at 10% but falls over under load. `crashes.clear()` heals it."""
        self.crashes[(endpoint, deployment)] = share

    def serve_scoring(self) -> str:
        """Start the loopback scoring server (once); its base URL."""
        if getattr(self, "_scoring_server", None) is None:
            self.served: list[Served] = []
            self._scorers: dict[str, Any] = {}
            self._model_dirs = tempfile.TemporaryDirectory(prefix="fake-aml-models-")
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._scoring_server = server
        return f"http://127.0.0.1:{self._scoring_server.server_address[1]}"

    def stop_scoring(self) -> None:
        server = getattr(self, "_scoring_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._model_dirs.cleanup()
            self._scoring_server = None

    def scoring_uri_for(self, name: str, location: str) -> str:
        if getattr(self, "_scoring_server", None) is not None:
            return f"{self.serve_scoring()}/{name}/score"
        return f"https://{name}.{location}.inference.ml.azure.com/score"

    # --- one scoring request ---------------------------------------------------------------

    def score_http(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        from backends.local.request_schema import RequestError, parse_scoring_request

        started = time.perf_counter()
        match = re.fullmatch(r"/(?P<endpoint>[^/]+)/score", path)
        if match is None:
            return 404, {"error": f"no route {path}"}
        name = match["endpoint"]
        with self._lock:
            ws = next((w for w in self.workspaces.values() if name in w.endpoints), None)
            if ws is None:
                return 404, {"error": f"endpoint {name} not found"}
            auth = headers.get("authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:] in self.credential.issued.values()):
                return 401, {"error": "missing or invalid Entra token (auth_mode aad_token)"}
            props = ws.endpoints[name]["properties"]
            live = [d for d, pct in props["traffic"].items() if pct > 0]
            target = headers.get("azureml-model-deployment") or (
                max(live, key=lambda d: props["traffic"][d]) if live else None
            )
            deployment = ws.deployments.get(name, {}).get(target or "")
            if deployment is None:
                return 424 if target is None else 404, {
                    "error": f"endpoint {name} has no deployment {target!r} taking requests"
                }
            model_ref = deployment["properties"]["model"]
            crash_at = self.crashes.get((name, target or ""))
            crashed = crash_at is not None and props["traffic"].get(target, 0) >= crash_at
            tags = deployment.get("tags") or {}
            collector = deployment["properties"].get("dataCollector") or {}
            source = deployment["id"]
        if len(body) > MAX_BODY_BYTES:
            return self._count(name, target, 413, started, {"error": "request body too large"})
        try:
            batch = parse_scoring_request(body)
        except RequestError as error:
            return self._count(name, target, error.status, started, {"error": error.reason})
        try:
            if crashed:
                raise MemoryError(f"{target} ran out of memory at {crash_at}% of the traffic")
            scorer = self._scorer(ws, model_ref)
            probabilities = scorer.probabilities(batch)
        except Exception as error:  # the container failed: a 5xx, counted as an error
            return self._count(name, target, 500, started, {"error": repr(error)})
        labels = (probabilities >= 0.5).astype(int)
        outputs = [
            {"probability": float(p), "label": int(label)}
            for p, label in zip(probabilities, labels, strict=True)
        ]
        self._collect(ws, name, target, source, collector, list(batch.rows()), outputs)
        return self._count(
            name,
            target,
            200,
            started,
            {
                "predictions": outputs,
                "deployment": target,
                "model": {"name": tags.get("model_name"), "version": tags.get("model_version")},
            },
        )

    def _count(self, endpoint: str, deployment: str, status: int, started: float, body: dict):
        latency = (time.perf_counter() - started) * 1000
        with self._lock:
            self.served.append(Served(endpoint, deployment, time.time(), status, latency))
        return status, body

    def _collect(
        self,
        ws: Any,
        endpoint: str,
        deployment: str,
        source: str,
        collector: dict,
        inputs: list[dict],
        outputs: list[dict],
    ) -> None:
        """Log one scored request as the data collector does: a CloudEvents-style JSON line
        per enabled collection, appended to this hour's file of this (one) instance."""
        collections = collector.get("collections") or {}
        now = datetime.now(UTC)
        correlation = str(uuid.uuid4())
        for collection, data in (("model_inputs", inputs), ("model_outputs", outputs)):
            settings = collections.get(collection) or {}
            if str(settings.get("dataCollectionMode", "")).lower() != "enabled":
                continue
            body = json.dumps(data, separators=(",", ":"))
            event = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": source,
                "type": f"azureml.inference.{collection}",
                "datacontenttype": "application/json",
                "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": data,
                "correlationid": correlation,
                "xrequestid": correlation,
                "modelversion": "default",
                "collectdatatype": "pandas.core.frame.DataFrame",
                "agent": "azureml-ai-monitoring/0.1.0b4",
                "contentrange": f"bytes 0-{len(body) - 1}/{len(body)}",
            }
            folder = self._collection_folder(ws, endpoint, deployment, collection, settings)
            instance = uuid.uuid5(uuid.NAMESPACE_URL, source)
            name = f"{folder}/{now:%Y/%m/%d/%H}/{instance}.jsonl"
            line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
            with self._lock:
                blobs = self.blobs.setdefault((ws.storage_account, ws.container), {})
                if name in blobs:
                    blobs[name].data += line
                else:
                    blobs[name] = Blob(line)

    def _collection_folder(
        self, ws: Any, endpoint: str, deployment: str, collection: str, settings: dict
    ) -> str:
        """The folder of the data asset the collection names (`dataId`), else the default."""
        asset = re.search(
            r"/data/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", str(settings.get("dataId") or "")
        )
        if asset:
            with self._lock:
                found = ws.data.get(asset["name"], {}).get(asset["version"])
            uri = (found or {}).get("properties", {}).get("dataUri", "")
            path = re.search(r"/datastores/workspaceblobstore/paths/(?P<path>.+)$", uri)
            if path:
                return path["path"].strip("/")
        return f"modelDataCollector/{endpoint}/{deployment}/{collection}"

    def _scorer(self, ws: Any, model_ref: str) -> Any:
        """Load the model files the deployment's model version points at, once per version."""
        from backends.local.endpoint_server import load_scorer

        if model_ref in self._scorers:
            return self._scorers[model_ref]
        short = re.search(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", model_ref)
        assert short, model_ref
        with self._lock:
            if model_ref.startswith("azureml://registries/"):
                registry = self.registries[model_ref.split("/")[3].lower()]
                uri = registry.models[short["name"]][short["version"]]["properties"]["modelUri"]
                account, container = registry.storage_account, registry.container
                prefix = uri.split(f"/{container}/", 1)[1]
            else:
                uri = ws.models[short["name"]][short["version"]]["properties"]["modelUri"]
                account, container = ws.storage_account, ws.container
                prefix = re.search(r"/paths/(?P<path>.*)$", uri)["path"]
            files = self.files_under(account, container, prefix.rstrip("/") + "/")
        folder = Path(self._model_dirs.name) / re.sub(r"[^\w.-]", "_", model_ref)
        for relative, data in files.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        # the uploaded folder keeps its own name under the asset path: find the MLmodel
        mlmodel = next(folder.rglob("MLmodel"))
        scorer = load_scorer(mlmodel.parent)
        self._scorers[model_ref] = scorer
        return scorer

    # --- Azure Monitor metrics ---------------------------------------------------------------

    def _metrics(
        self, request: SeenRequest, sub: str, rg: str, ws: str, endpoint: str, name: str
    ) -> Reply:
        """RequestsPerMinute (Total, split by statusCodeClass) and RequestLatency_P95
        (Average) of one deployment over `timespan`, as one data point."""
        found = self._ws(sub, rg, ws)
        if found is None or name not in found.deployments.get(endpoint, {}):
            return arm_error(404, "ResourceNotFound", f"deployment {name} not found")
        start, _, end = request.query.get("timespan", "/").partition("/")
        since = datetime.fromisoformat(start).timestamp() if start else 0.0
        until = datetime.fromisoformat(end).timestamp() if end else time.time()
        served = [
            s
            for s in getattr(self, "served", [])
            if s.endpoint == endpoint and s.deployment == name and since <= s.at <= until
        ]
        stamp = datetime.fromtimestamp(since or time.time(), UTC).isoformat()
        by_class: dict[str, int] = {}
        for s in served:
            by_class[f"{s.status // 100}xx"] = by_class.get(f"{s.status // 100}xx", 0) + 1
        latencies = sorted(s.latency_ms for s in served)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else 0
        values = []
        for metric in request.query.get("metricnames", "").split(","):
            if metric == "RequestsPerMinute":
                series = [
                    {
                        "metadatavalues": [
                            {"name": {"value": "statusCodeClass"}, "value": code_class}
                        ],
                        "data": [{"timeStamp": stamp, "total": float(count)}],
                    }
                    for code_class, count in sorted(by_class.items())
                ]
            elif metric == "RequestLatency_P95":
                series = [{"metadatavalues": [], "data": [{"timeStamp": stamp, "average": p95}]}]
            else:
                return arm_error(400, "BadRequest", f"Failed to find metric {metric}")
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
                "timespan": request.query.get("timespan", ""),
                "interval": "PT1M",
                "value": values,
                "namespace": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
                "resourceregion": found.location,
            },
        )


def _handler(fake: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms a request, most of a rollout's probing time)
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, reply = fake.score_http(self.path, headers, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if reply.get("deployment"):
                self.send_header("azureml-model-deployment", str(reply["deployment"]))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
