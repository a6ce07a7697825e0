"""The data collector sidecar of a local deployment, and reading back what it wrote.

On Azure ML a sidecar beside each deployment receives what the scoring script's
`azureml-ai-monitoring` Collector posts (`POST /modeldata/log`, headers `ce-type:
azureml.inference.<collection>`, `ce-x-request-id`, `ce-time`, `ce-model-version`,
`ce-collect-data-type`, `ce-agent`; body the rows as JSON records) and writes one JSON line per
post into the workspace blob datastore, in hourly files per collection and instance. Here the
endpoint server runs one such sidecar per deployment instance on 127.0.0.1 and writes the same
lines (`backends.collected_data.event_line`) into `<workspace>/workspaceblobstore/`, in the same
layout, so `read_collected` and the azure backend read one format.

Posts are answered at once and only buffered; a thread appends the buffered lines every half
second and on shutdown, so collection costs the request path a buffer append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from backends.collected_data import (
    COLLECTIONS,
    ROLLED_HOUR,
    collected_rows,
    collection_folder,
    counted_as_mirrored,
    event_line,
    hourly_file,
    parse_events,
)
from backends.local.endpoint_state import EndpointState

log = logging.getLogger("endpoint_server")
BLOB_DATASTORE = "workspaceblobstore"
"""The workspace's default blob datastore, where Azure's collector writes (a folder here)."""
COLLECT_PATH = "/modeldata/log"
EVENT_PREFIX = "azureml.inference."


class _Sidecar(uvicorn.Server):
    """A uvicorn server that shares the endpoint server's event loop and signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DataCollector:
    """One deployment instance's collector sidecar: an HTTP listener on a loopback port of its
    own (the port the deployment gets as AZUREML_MDC_PORT) writing hourly JSONL files."""

    def __init__(
        self,
        blob_root: Path,
        endpoint: str,
        deployment: str,
        instance: str,
        flush_seconds: float = 0.5,
    ) -> None:
        self.blob_root = blob_root
        self.endpoint = endpoint
        self.deployment = deployment
        self.instance = instance
        self.source = f"/onlineEndpoints/{endpoint}/deployments/{deployment}/instances/{instance}"
        self.flush_seconds = flush_seconds
        self._pending: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="collector", daemon=True)
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only then (else ~40 ms per answer)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._server = _Sidecar(
            uvicorn.Config(
                self,
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen (on the running loop) and start the writer; returns the port."""
        self._thread.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises why it did not start
        return self.port

    async def stop(self) -> None:
        """Stop listening, then write everything buffered."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._socket.close()
        self._closed.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10)
        self.flush()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI: accept one collection post, answer 200 once it is buffered."""
        if scope["method"] != "POST" or scope["path"] != COLLECT_PATH:
            await _answer(send, 404, f"only POST {COLLECT_PATH} is served here")
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        collection = headers.get("ce-type", "").removeprefix(EVENT_PREFIX)
        if collection not in COLLECTIONS:
            await _answer(send, 400, f"ce-type names no known collection ({COLLECTIONS})")
            return
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            await _answer(send, 400, "the body is not JSON records")
            return
        now = datetime.now(UTC)
        line = event_line(
            collection,
            body,
            headers.get("ce-x-request-id", ""),
            self.source,
            _event_time(headers.get("ce-time"), now),
            model_version=headers.get("ce-model-version", "default"),
            collect_data_type=headers.get("ce-collect-data-type", "pandas.core.frame.DataFrame"),
            agent=headers.get("ce-agent", "azureml-ai-monitoring/1.0.0"),
        )
        folder = collection_folder(self.endpoint, self.deployment, collection)
        with self._lock:
            self._pending.append((hourly_file(folder, now, self.instance), line))
        await _answer(send, 200, "collected")

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # a full disk must not take serving down; say so in the log
                log.exception("collected data of %s were dropped", self.deployment)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        files: dict[str, list[bytes]] = {}
        for relative, line in pending:
            files.setdefault(relative, []).append(line)
        with self._write_lock:
            for relative, lines in files.items():
                path = self.blob_root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("ab") as handle:
                    handle.write(b"".join(lines))


async def _answer(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _event_time(ce_time: str | None, default: datetime) -> datetime:
    """The collector's `ce-time` (epoch seconds of the correlation context)."""
    try:
        return datetime.fromtimestamp(float(ce_time or ""), UTC)
    except (ValueError, OverflowError, OSError):
        return default


# --- reading back ------------------------------------------------------------------------------


def read_collected(blob_root: Path, state: EndpointState, since: datetime) -> list[dict[str, Any]]:
    """Rows collected by the endpoint's current deployments since `since`, one per scored
    input row, joined to their outputs on the correlation id (`collected_rows`); a deployment
    taking mirror and no live traffic counts as mirrored (`counted_as_mirrored`). As on Azure,
    a deployment's rows carry the model version it serves now."""
    rows: list[dict[str, Any]] = []
    for name, spec in sorted(state.deployments.items()):
        events = {
            collection: parse_events(
                _lines(blob_root / collection_folder(state.endpoint, name, collection), since),
                since,
            )
            for collection in COLLECTIONS
        }
        rows.extend(
            collected_rows(
                events["model_inputs"],
                events["model_outputs"],
                name,
                spec.model_version,
                counted_as_mirrored(name, state.traffic, state.mirror_traffic),
            )
        )
    return rows


def _lines(folder: Path, since: datetime) -> Iterator[bytes]:
    """The lines of the folder's hourly files from the hour of `since` on."""
    first_hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*.jsonl")):
        rolled = ROLLED_HOUR.search(path.as_posix())
        if rolled is None:
            continue
        year, month, day, hour_of_day = (int(rolled[k]) for k in "ymdh")
        hour = datetime(year, month, day, hour_of_day, tzinfo=UTC)
        if hour >= first_hour:
            with path.open("rb") as handle:
                for line in handle:
                    if line.endswith(b"\n"):  # not a line the sidecar is still appending
                        yield line
