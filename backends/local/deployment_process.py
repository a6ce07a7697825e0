"""One deployment as Azure ML runs it: the scoring script's code snapshot, in Azure ML's own
inference server (`azmlinfsrv` from the inference venv), with the deployment's environment
variables and the model laid out as Azure mounts it.

The endpoint server starts one of these per deployment and owns it: the process gets its own
process group (stopped with it) and, on Linux, SIGTERM when the endpoint server dies, so a
`kill -9` of the endpoint leaves no inference server behind. A restarted endpoint server also
stops any that a predecessor recorded in state.json (`stop_leftover`).

Notes on the server, seen here: it binds 0.0.0.0 (hard-coded in azmlinfsrv), so a deployment's
port answers on every interface without the endpoint's key; gunicorn 27 opens a control socket
at a path shared by every server of the user unless told not to (`--no-control-socket`); a
failing `init()` or import makes gunicorn exit ("Worker failed to boot"), which is how a model
that cannot load shows up.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backends.local.endpoint_state import DeploymentProcess, DeploymentSpec
from backends.processes import alive, command_line, stop_group, working_directory
from backends.serving_package import (
    CONDA_FILE,
    DEFAULT_THRESHOLD,
    SCORING_SCRIPT,
    code_snapshot,
    deployment_setting,
    deployment_template,
    deployment_variables,
    inference_venv,
)
from records import lineage_tags
from records.workspace import ModelVersion

SERVER_LOG = "azmlinfsrv.log"
MODEL_FOLDER = "model"
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
"""The only variables a deployment inherits from the endpoint server: a container starts clean,
so the project's PYTHONPATH, Prefect and MLflow settings must not leak into the script."""
_PROLOGUE = """
import ctypes, os, signal, sys
if sys.platform == "linux":
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the endpoint
    if os.getppid() != int(sys.argv[1]):
        sys.exit("the endpoint server exited before this deployment started")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit): .+")
_PORT_TAKEN = ("Connection in use", "Address already in use")


class DeploymentStartFailed(RuntimeError):
    """The inference server exited or did not answer its health probe in time; the message
    names the script's own error and the end of the server's log."""


def deployment_spec(
    name: str,
    model: ModelVersion,
    model_dir: Path,
    code_root: Path,
    conda_file: Path = CONDA_FILE,
) -> DeploymentSpec:
    """Everything the deployment YAML and the model say a deployment runs, resolved to local
    paths: the code snapshot under `code_root`, the inference venv (built on first use), the
    YAML's and the model's environment variables (DeploymentFailed on a bad threshold tag),
    the request timeout and the readiness probe's patience."""
    variables = deployment_variables(model)
    template = deployment_template()
    request = deployment_setting(template.request_settings, "request_settings")
    timeout = deployment_setting(request.request_timeout_ms, "request_settings.request_timeout_ms")
    probe = deployment_setting(template.readiness_probe, "readiness_probe")
    initial_delay = deployment_setting(probe.initial_delay, "readiness_probe.initial_delay")
    period = deployment_setting(probe.period, "readiness_probe.period")
    failures = deployment_setting(probe.failure_threshold, "readiness_probe.failure_threshold")
    code = code_snapshot(code_root)
    return DeploymentSpec(
        name=name,
        model_name=model.name,
        model_version=str(model.version),
        model_path=str(Path(model_dir).resolve()),
        code=str(code),
        environment=str(inference_venv(conda_file)),
        variables=variables,
        request_timeout_ms=int(timeout),
        start_timeout_s=float(initial_delay + period * failures),
    )


def upgraded(spec: DeploymentSpec, code_root: Path) -> DeploymentSpec:
    """A deployment recorded before deployments ran the scoring script, as it runs now (its
    threshold becomes the model's threshold setting)."""
    threshold = DEFAULT_THRESHOLD if spec.threshold is None else spec.threshold
    model = ModelVersion(
        spec.model_name,
        spec.model_version,
        spec.model_path,
        None,
        {lineage_tags.TEST_THRESHOLD: str(threshold)},
    )
    return deployment_spec(spec.name, model, Path(spec.model_path), code_root)


def azure_model_dir(spec: DeploymentSpec, into: Path) -> Path:
    """AZUREML_MODEL_DIR as Azure mounts a registered folder model:
    `<root>/azureml-models/<name>/<version>/<folder>`, here real folders of symlinked files
    (Path.rglob, which the script uses to find MLmodel, does not enter symlinked folders)."""
    version_dir = into / "azureml-models" / spec.model_name / spec.model_version
    source = Path(spec.model_path)
    target = version_dir / source.name
    target.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            mirrored = target / path.relative_to(source)
            if path.is_dir():
                mirrored.mkdir(exist_ok=True)
            elif not mirrored.exists():
                mirrored.symlink_to(path)
    return version_dir


@dataclass
class InferenceServer:
    """A running `azmlinfsrv` serving one deployment, owned by the endpoint server."""

    spec: DeploymentSpec
    instance_dir: Path
    process: subprocess.Popen[bytes]
    port: int
    launched: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    """Requests sent to it and not answered yet (a replaced deployment drains first)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.instance_dir / SERVER_LOG

    @property
    def record(self) -> DeploymentProcess:
        return DeploymentProcess(self.pid, self.port, self.instance_dir.name)

    @classmethod
    def launch(
        cls, spec: DeploymentSpec, instance_dir: Path, collector_port: int
    ) -> InferenceServer:
        """Start the server (returns at once; `until_healthy` waits for it). Must run on the
        endpoint server's main thread: the parent-death signal follows the thread that forks."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("deployments are started from the endpoint server's main thread")
        venv = Path(spec.environment)
        if not (venv / "bin" / "azmlinfsrv").is_file():
            raise DeploymentStartFailed(
                f"the inference environment {venv} has no azmlinfsrv; redeploy the model "
                "(LocalEndpoints.create_or_update_deployment builds it from conda.yml)"
            )
        if not (Path(spec.code) / SCORING_SCRIPT).is_file():
            raise DeploymentStartFailed(
                f"the code snapshot {spec.code} has no {SCORING_SCRIPT}; redeploy the model"
            )
        instance_dir.mkdir(parents=True, exist_ok=True)
        environment = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        environment["PATH"] = os.pathsep.join([str(venv / "bin"), environment.get("PATH", "")])
        environment.update(spec.variables)
        environment.update(
            {
                "AZUREML_MODEL_DIR": str(azure_model_dir(spec, instance_dir / MODEL_FOLDER)),
                "AZUREML_MDC_ENABLED": "true",
                "AZUREML_MDC_HOST": "127.0.0.1",
                "AZUREML_MDC_PORT": str(collector_port),
                "GUNICORN_CMD_ARGS": "--no-control-socket",
            }
        )
        port = _free_port()
        command = [
            str(venv / "bin" / "python"),
            "-c",
            _PROLOGUE,
            str(os.getpid()),
            str(venv / "bin" / "azmlinfsrv"),
            "--entry_script",
            SCORING_SCRIPT,
            "--port",
            str(port),
        ]
        with (instance_dir / SERVER_LOG).open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=spec.code,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        return cls(spec, instance_dir, process, port)

    async def until_healthy(self, http: httpx.AsyncClient) -> float:
        """Wait until `GET /` answers (init() has run in a worker); the seconds it took since
        launch. Raises DeploymentStartFailed with the script's error once the process exits."""
        deadline = time.monotonic() + self.spec.start_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise DeploymentStartFailed(self.exit_reason(code))
            if time.monotonic() > deadline:
                await self.stop()
                raise DeploymentStartFailed(
                    f"its inference server did not answer GET / within "
                    f"{self.spec.start_timeout_s:.0f} s (the readiness probe's patience); "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                reply = await http.get(f"{self.base_url}/", timeout=2.0)
                if reply.status_code == 200:
                    return time.monotonic() - self.launched
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    def port_was_taken(self) -> bool:
        text = _read(self.log_path)
        return any(taken in text for taken in _PORT_TAKEN)

    def exit_reason(self, code: int) -> str:
        """Why the server exited: the last exception the script (or its import) raised,
        else the end of the log."""
        lines = _read(self.log_path).splitlines()
        errors = [
            line
            for line in lines
            if _EXCEPTION_LINE.match(line) and not line.startswith("azureml_inference_server")
        ]
        if errors:
            return (
                f"its inference server exited (code {code}) before it answered its health "
                f"probe: {errors[-1]} (log: {self.log_path})"
            )
        tail = "\n".join([line for line in lines if line.strip()][-12:])
        return (
            f"its inference server exited (code {code}) before it answered its health "
            f"probe; {self.log_path} ends:\n{tail}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group (gunicorn finishes the requests it holds), then
        SIGKILL to whatever is left of it, workers that outlived their master included;
        waited for off the event loop, which goes on serving the other deployments."""
        await asyncio.to_thread(stop_group, self.pid, timeout, kill_survivors=True)


def stop_leftover(process: DeploymentProcess, endpoint_dir: Path, timeout: float = 10.0) -> bool:
    """Stop an inference server a previous endpoint server recorded, if it still runs and is
    really this endpoint's (its working directory is inside the endpoint's folder); by pid and
    process group, never by name. True if one was running."""
    if not _is_deployment_of(process.pid, endpoint_dir):
        return False
    stop_group(process.pid, timeout, kill_survivors=True)
    return True


def _is_deployment_of(pid: int, endpoint_dir: Path) -> bool:
    if not alive(pid):
        return False
    arguments, cwd = command_line(pid), working_directory(pid)
    if arguments is None or cwd is None:
        return False  # gone since, or not ours to inspect
    return any("azmlinfsrv" in argument for argument in arguments) and cwd.is_relative_to(
        endpoint_dir.resolve()
    )


def _free_port() -> int:
    """A port free on every interface, where azmlinfsrv binds."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 12) -> str:
    return "\n".join(_read(path).splitlines()[-lines:])


def instance_name(deployment: str) -> str:
    """A new instance's name, as Azure names a deployment's instances after it."""
    return f"{deployment}-{os.urandom(3).hex()}"
