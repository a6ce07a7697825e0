"""A workspace's online endpoints on the local backend: one endpoint server process per
endpoint, which runs one Azure ML inference server (`azmlinfsrv`) per deployment.

The endpoint server (`backends/local/endpoint_server.py`) runs detached, in its own session, so
an endpoint outlives the flow that created it, as an AML endpoint outlives its deployment job.
Its durable state is `<workspace>/endpoints/<name>/state.json`; a server that crashed (or
was stopped by `make stop`) is started again on the same state by the next call that needs
it, so callers never see the difference beyond the restart time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from filelock import FileLock

if TYPE_CHECKING:
    import pandas as pd

from backends.local.data_collector import BLOB_DATASTORE
from backends.local.endpoint_state import (
    CODE_DIR,
    LOG_FILE,
    NAME_PATTERN,
    EndpointState,
    read_state,
    write_state,
)
from backends.local.pipeline_assets import conda_file_of
from backends.processes import alive, command_line, stop_process
from backends.traffic_rules import RequestRefused
from records.serving import (
    DeploymentFailed,
    DeploymentHealth,
    DeploymentInfo,
    EndpointInfo,
    ServingMetrics,
)
from records.workspace import ModelVersion

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_MODULE = "backends.local.endpoint_server"
LOCK_FILE = ".lock"
"""One starter at a time per endpoint, across processes (two flows, a test and a CLI)."""


class EndpointNotFound(LookupError):
    """The endpoint was never created in this workspace (or was deleted)."""


class EndpointStartFailed(RuntimeError):
    """The server process did not become healthy; the message points at its log."""


@dataclass(frozen=True)
class EndpointProcess:
    """An endpoint's server process as last recorded, and whether it answers now."""

    name: str
    state_dir: Path
    pid: int | None
    port: int | None
    running: bool

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LocalEndpoints:
    """The `Endpoints` Protocol for one local workspace, plus start/stop/status helpers."""

    def __init__(
        self,
        workspace_dir: Path,
        start_timeout: float = 120.0,
        request_timeout: float = 300.0,
    ) -> None:
        # absolute, so every caller names the state dir the same way in the server's command
        # line, which is how a pid is recognised as this endpoint's server
        self.workspace_dir = Path(workspace_dir).resolve()
        self.root = self.workspace_dir / "endpoints"
        self.blob_root = self.workspace_dir / BLOB_DATASTORE
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout

    # --- the Endpoints Protocol -------------------------------------------------------------

    def create_or_update_endpoint(self, name: str) -> EndpointInfo:
        """Create the endpoint (key made once, stored 0600) and make sure its server runs."""
        _check_name(name, "endpoint")
        state_dir = self.state_dir(name)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(state_dir / LOCK_FILE):
            if read_state(state_dir) is None:
                write_state(state_dir, EndpointState(endpoint=name, key=secrets.token_urlsafe(32)))
            self._ensure_running(name)
        return self._info(name, self._admin(name, "GET", "/admin/state"))

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        """None if never created; otherwise its state, restarting a crashed server first."""
        if read_state(self.state_dir(name)) is None:
            return None
        return self._info(name, self._admin(name, "GET", "/admin/state"))

    def create_or_update_deployment(
        self,
        endpoint: str,
        deployment: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None = None,
    ) -> DeploymentInfo:
        """Start the scoring script for the model in its own inference server, as the
        deployment YAML says; it gets 0% traffic until told.

        The label threshold is the model's `test_threshold` tag (chosen at evaluation).
        Raises DeploymentFailed with the reason (a bad tag, or the script's own error when the
        server did not come up); the endpoint's deployments and traffic are then unchanged.
        """
        from backends.local.deployment_process import deployment_spec

        _check_name(deployment, "deployment")
        code_root = self.state_dir(endpoint) / CODE_DIR
        if environment is None:
            spec = deployment_spec(deployment, model, model_dir, code_root)
        else:  # the stored environment version's conda file: the registry's, in test and prod
            conda = conda_file_of(environment, self.workspace_dir)
            spec = deployment_spec(deployment, model, model_dir, code_root, conda)
        body = {k: v for k, v in asdict(spec).items() if k not in ("name", "threshold")}
        try:
            reply = self._admin(
                endpoint,
                "PUT",
                f"/admin/deployments/{deployment}",
                body,
                timeout=max(self.request_timeout, spec.start_timeout_s + 30),
            )
        except RequestRefused as error:
            raise DeploymentFailed(
                f"deployment {deployment!r} of endpoint {endpoint!r} failed: {error.reason}"
            ) from None
        return _deployment_info(deployment, reply)

    def set_traffic(
        self, endpoint: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int] | None
    ) -> EndpointInfo:
        """Replace the traffic split. `mirror_traffic=None` means no mirroring: every call
        states the whole routing, so a shift can never inherit a stale mirror."""
        body = {"traffic": dict(traffic), "mirror_traffic": dict(mirror_traffic or {})}
        return self._info(endpoint, self._admin(endpoint, "PUT", "/admin/traffic", body))

    def serving_metrics(self, endpoint: str, start: datetime, end: datetime) -> ServingMetrics:
        """Requests, errors and p95 latency per deployment over [start, end), from the endpoint
        server's records of every answer (mirrored copies on the mirror deployment), and up to
        when they are complete: now, unless a metrics delay is rehearsed
        (`rehearse_metrics_delay`). The server keeps the last 2 hours (at most 500,000
        answers) in memory: older figures, or those from before a restart, are gone."""
        for moment, what in ((start, "start"), (end, "end")):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{what} {moment.isoformat()} has no timezone; pass an aware one")
        query = urlencode({"start": repr(start.timestamp()), "end": repr(end.timestamp())})
        reply = self._admin(endpoint, "GET", f"/admin/metrics?{query}")
        covered = reply["covered_until"]
        return ServingMetrics(
            endpoint=endpoint,
            start=start,
            end=end,
            covered_until=None if covered is None else datetime.fromtimestamp(covered, UTC),
            deployments={
                name: DeploymentHealth(
                    deployment=name,
                    requests=int(figures["requests"]),
                    errors=int(figures["errors"]),
                    p95_ms=None if figures["p95_ms"] is None else float(figures["p95_ms"]),
                )
                for name, figures in reply["deployments"].items()
            },
        )

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Delete a deployment with no traffic; deleting one that is gone is not an error.
        Refused (RequestRefused, 409) while it takes live or mirror traffic."""
        try:
            self._admin(endpoint, "DELETE", f"/admin/deployments/{deployment}")
        except RequestRefused as error:
            if error.status != 404:
                raise

    def delete_endpoint(self, name: str) -> None:
        """Stop the server and its deployments and remove the endpoint's state and key. The
        data its deployments collected stays in the workspace's blob datastore, as on Azure."""
        state_dir = self.state_dir(name)
        if not state_dir.exists():
            return
        with FileLock(state_dir / LOCK_FILE):
            self.stop(name)
        shutil.rmtree(state_dir, ignore_errors=True)

    def get_key(self, name: str) -> str:
        return self._state(name).key

    def read_capture(self, name: str, since: datetime) -> pd.DataFrame:
        """What the deployments' data collectors logged since `since` (empty if nothing): one
        row per scored input row, its fields joined with the script's `probability` and
        `label` for it, plus `deployment`, `model_version`, `mirrored`, `timestamp` and
        `request_id` (see backends.collected_data, the schema both backends share)."""
        import pandas as pd

        from backends.local.data_collector import read_collected

        state = read_state(self.state_dir(name))
        if state is None:
            return pd.DataFrame()
        rows = read_collected(self.blob_root, state, since.astimezone(UTC))
        return pd.DataFrame.from_records(rows)

    # --- local only: rehearsals -------------------------------------------------------------

    def rehearse_metrics_delay(self, endpoint: str, seconds: float) -> None:
        """Make the endpoint's metrics arrive `seconds` late, as Azure Monitor's do: what is
        answered at t shows in `serving_metrics` only from t + seconds (0: at once). For tests
        and rehearsals of a rollout's wait; a restarted server starts again at 0."""
        self._admin(endpoint, "PUT", "/admin/metrics/delay", {"seconds": seconds})

    # --- process helpers --------------------------------------------------------------------

    def state_dir(self, name: str) -> Path:
        _check_name(name, "endpoint")
        return self.root / name

    def list_endpoints(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/state.json"))

    def status(self, name: str) -> EndpointProcess:
        """Where the server was last recorded and whether it answers now (no restart)."""
        state = self._state(name)
        running = (
            state.pid is not None
            and state.port is not None
            and _is_server(state.pid, self.state_dir(name))
            and _answers(state.port, name)
        )
        return EndpointProcess(name, self.state_dir(name), state.pid, state.port, running)

    def start(self, name: str) -> EndpointProcess:
        """Make sure the endpoint's server runs (started or restarted on its saved state)."""
        state_dir = self.state_dir(name)
        self._state(name)
        with FileLock(state_dir / LOCK_FILE):
            return self._ensure_running(name)

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM (the server stops its deployments, whose collectors write what they
        buffered), then SIGKILL; True if one was running. Any deployment process still
        recorded as running afterwards is stopped too, by pid.

        The endpoint and its deployments stay: the next call that needs it starts it again.
        """
        from backends.local.deployment_process import stop_leftover

        state_dir = self.state_dir(name)
        state = read_state(state_dir)
        if state is None:
            return False
        running = state.pid is not None and _is_server(state.pid, state_dir)
        if running and state.pid is not None:
            stop_process(state.pid, timeout)
        for process in state.processes.values():
            stop_leftover(process, state_dir)
        return running

    # --- internals --------------------------------------------------------------------------

    def _state(self, name: str) -> EndpointState:
        state = read_state(self.state_dir(name))
        if state is None:
            raise EndpointNotFound(
                f"endpoint {name!r} does not exist in {self.root}; create it with "
                "create_or_update_endpoint"
            )
        return state

    def _ensure_running(self, name: str) -> EndpointProcess:
        """Caller holds the state dir lock. Reuse a healthy server, else (re)start one."""
        state_dir = self.state_dir(name)
        state = self._state(name)
        if state.pid is not None and state.port is not None and _is_server(state.pid, state_dir):
            if _wait_until_answers(state.pid, state.port, name, self.start_timeout):
                return EndpointProcess(name, state_dir, state.pid, state.port, True)
            stop_process(state.pid, 10.0)  # alive but not answering: hung, start afresh
        ports = [state.port] if state.port and _port_free(state.port) else []
        last_error = ""
        for port in [*ports, _free_port(), _free_port()]:
            pid = _spawn(state_dir, port)
            if _wait_until_answers(pid, port, name, self.start_timeout):
                return EndpointProcess(name, state_dir, pid, port, True)
            last_error = _log_tail(state_dir / LOG_FILE)
            if alive(pid):
                stop_process(pid, 10.0)
        raise EndpointStartFailed(
            f"the server of endpoint {name!r} did not start; see {state_dir / LOG_FILE}:\n"
            f"{last_error}"
        )

    def _admin(
        self,
        name: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One admin call, after making sure the server runs; 4xx/5xx -> the server's reason."""
        state_dir = self.state_dir(name)
        state = self._state(name)
        with FileLock(state_dir / LOCK_FILE):
            process = self._ensure_running(name)
        response = httpx.request(
            method,
            f"{process.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {state.key}"},
            timeout=timeout or self.request_timeout,
        )
        if response.status_code >= 400:
            try:
                reason = response.json()["message"]
            except (ValueError, KeyError, TypeError):
                reason = response.text
            raise RequestRefused(response.status_code, reason)
        return response.json()

    def _info(self, name: str, described: Mapping[str, Any]) -> EndpointInfo:
        deployments = tuple(
            _deployment_info(n, d) for n, d in sorted(described["deployments"].items())
        )
        return EndpointInfo(
            name=name,
            scoring_uri=described["scoring_uri"],
            deployments=deployments,
            traffic=dict(described["traffic"]),
            mirror_traffic=dict(described["mirror_traffic"]),
        )


def stop_all(workspace_dir: Path) -> list[str]:
    """Stop every endpoint server of a workspace (tests, `make stop`); returns the names that
    were running. State stays, so the endpoints come back on their next use."""
    endpoints = LocalEndpoints(workspace_dir)
    return [name for name in endpoints.list_endpoints() if endpoints.stop(name)]


def _deployment_info(name: str, described: Mapping[str, Any]) -> DeploymentInfo:
    return DeploymentInfo(
        name=name,
        model_name=described["model_name"],
        model_version=described["model_version"],
        state=described["state"],
    )


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"{what} name {name!r} is not valid: start with a letter, then up to 31 letters, "
            "digits or hyphens"
        )


def _spawn(state_dir: Path, port: int) -> int:
    """Start the server detached (own session, output to server.log), so it outlives us."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with (state_dir / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                SERVER_MODULE,
                "--state-dir",
                str(state_dir),
                "--port",
                str(port),
                "--blob-root",
                str(state_dir.parent.parent / BLOB_DATASTORE),
            ],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    """Free as uvicorn sees it (SO_REUSEADDR, so TIME_WAIT from a killed server is fine)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _is_server(pid: int, state_dir: Path) -> bool:
    """Alive and really this endpoint's server, not another process that reused the pid."""
    arguments = command_line(pid) if alive(pid) else None
    return arguments is not None and SERVER_MODULE in arguments and str(state_dir) in arguments


def _answers(port: int, name: str) -> bool:
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2.0)
        return reply.status_code == 200 and reply.json().get("endpoint") == name
    except (httpx.HTTPError, ValueError):
        return False


def _wait_until_answers(pid: int, port: int, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port, name):
            return True
        if not alive(pid):
            return False
        time.sleep(0.1)
    return False


def _log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
