"""The compute behind the fake's managed online deployments: what Azure ML runs for a deployment
with a scoring script, run here for real.

When a deployment provisions (and the fake's serving is switched on, see scoring.py), the fake
does what the service does with the deployment it was sent:

- downloads the code asset the SDK uploaded (the deployment's `codeConfiguration.codeId`), the
  model files of the model reference (workspace or registry storage) and the conda file of the
  environment asset the SDK registered;
- builds or reuses a virtual environment from that conda file (`inference_venv`, once per
  content hash), as Azure builds the environment's image;
- starts Azure ML's inference server (`azmlinfsrv`, the server of Azure ML's inference images)
  on the scoring script with the variables Azure sets in the container: AZUREML_MODEL_DIR in
  Azure's layout (`.../azureml-models/<name>/<version>/<registered folder>`), the deployment's
  environment variables, AZUREML_ENTRY_SCRIPT, AML_APP_ROOT, and AZUREML_MDC_ENABLED/HOST/PORT
  pointing at a data-collector sidecar when the deployment enables a collection;
- runs that sidecar: it receives what azureml-ai-monitoring's Collector posts
  (`POST /modeldata/log`, headers `ce-type: azureml.inference.<collection>`,
  `ce-x-request-id`, ...) and appends one collected-data line per post to the hourly file of
  the collection's folder in the workspace blob container (backends/collected_data.py).

The server is ready when its liveness route (`GET /`) answers 200, which it does once a worker
has run `init()`; a server that exits first (the script's import or `init()` failed) fails the
deployment's operation with the tail of its log, as Azure's ResourceNotReady error ("User
container has crashed or terminated", the troubleshooting guide for online endpoints) points at
the container log. Sources: "Deploy and score a machine learning model by using an online
endpoint" and "Collect production data from models for real-time inferencing" (Azure ML docs),
the inference server's own code and the recorded deployment's environment variables
(test_online_deployment_create.json).

Not reproduced: instance counts above one, probe timings (readiness is polled, not probed on
the YAML's schedule), request timeouts, the image build (a venv instead of a Docker image), and
the collector's batching of close requests and its delay before files appear.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from backends import collected_data
from backends.serving_package import inference_venv
from tests.azure.fake.state import Blob, ProvisioningFailed

READY_TIMEOUT_SECONDS = 300.0
"""How long a container may take to answer its liveness route (the YAML's liveness probe
allows 30 s + 30 x 10 s before the container is failed)."""
LOG_TAIL_LINES = 60
MODEL = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
BLOB_FOLDER = re.compile(
    r"https://(?P<account>[^.]+)\.blob\.core\.windows\.net(:443)?/(?P<rest>.+)$"
)
ASSET = re.compile(r"/(?P<kind>codes|environments)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$")
REGISTRY_ASSET = re.compile(r"azureml://registries/(?P<registry>[^/]+)/")


@dataclass
class Container:
    """One deployment's inference server (one instance) and its data-collector sidecar."""

    workspace: str
    endpoint: str
    deployment: str
    source: str  # the deployment's ARM id: the collected events' `source`
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    state: str = "Starting"  # Starting -> Ready | Failed
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None
    sidecar: ThreadingHTTPServer | None = None
    instance: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def log(self) -> Path:
        return self.workdir / "container.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class ContainerSpec:
    """What the service takes from the deployment and its assets to start a container,
    copied out of the fake's state under its lock."""

    code: dict[str, bytes]  # path inside the code asset -> content
    model_folder: str  # the registered folder's name
    model_files: dict[str, bytes]
    model_name: str
    model_version: str
    conda_file: str
    scoring_script: str
    variables: dict[str, str]
    collections: dict[str, dict[str, Any]]


class ContainerApi:
    """Mixed into FakeAzureML: starts, reads and stops deployment containers."""

    def _container_root(self) -> Path:
        if getattr(self, "_containers_dir", None) is None:
            self._containers_dir = tempfile.TemporaryDirectory(prefix="fake-aml-containers-")
        return Path(self._containers_dir.name)

    # --- what the deployment names, read from the fake's state ------------------------------

    def _container_spec(self, ws: Any, props: dict[str, Any]) -> ContainerSpec:
        """The code, model and environment files the deployment references (call under the
        lock). Raises ProvisioningFailed for an asset the service could not find."""
        code_id = str((props.get("codeConfiguration") or {}).get("codeId") or "")
        code = ASSET.search(code_id)
        if code is None or code["kind"] != "codes":
            raise ProvisioningFailed(
                "BadArgument", "The deployment has no code configuration: give it a scoring script"
            )
        code_asset = ws.codes.get(code["name"], {}).get(code["version"])
        if code_asset is None:
            raise ProvisioningFailed("BadArgument", f"Code asset {code_id} was not found.")
        code_files = self._code_files(code_asset["properties"]["codeUri"])
        conda = self._environment_conda(ws, str(props.get("environmentId") or ""))
        model_ref = str(props.get("model") or "")
        short = MODEL.search(model_ref)
        assert short, model_ref
        folder, model_files = self._model_files(ws, model_ref, short["name"], short["version"])
        script = str(props["codeConfiguration"].get("scoringScript") or "")
        collections = {
            name: settings
            for name, settings in (
                (props.get("dataCollector") or {}).get("collections") or {}
            ).items()
            if str(settings.get("dataCollectionMode", "")).lower() == "enabled"
        }
        return ContainerSpec(
            code=code_files,
            model_folder=folder,
            model_files=model_files,
            model_name=short["name"],
            model_version=short["version"],
            conda_file=str(conda),
            scoring_script=script,
            variables={k: str(v) for k, v in (props.get("environmentVariables") or {}).items()},
            collections=collections,
        )

    def _environment_conda(self, ws: Any, environment_id: str) -> str:
        """The conda file of the environment a deployment names, as the service builds its
        image from it. Raises ProvisioningFailed for one it could not find."""
        environment = ASSET.search(environment_id)
        # a registry's environment is sent as its azureml://registries/... id, which the SDK
        # leaves as it is (as the registry componentId in test_pipeline_job...create_with_
        # registries; no recording shows a deployment of one): read from that registry's store
        registry = REGISTRY_ASSET.match(environment_id)
        reg = self.registries.get(registry["registry"].lower()) if registry else None
        store = reg.environments if reg is not None else ws.environments
        found = (
            store.get(environment["name"], {}).get(environment["version"])
            if environment and environment["kind"] == "environments"
            else None
        )
        conda = (found or {}).get("properties", {}).get("condaFile")
        if not conda:
            raise ProvisioningFailed(
                "BadArgument",
                f"Environment {environment_id or '(none)'} was not found or has no conda file.",
            )
        return str(conda)

    def _code_files(self, code_uri: str) -> dict[str, bytes]:
        """A code asset's files: `codeUri` is the blob folder the SDK uploaded the snapshot to."""
        match = re.match(
            r"https://(?P<account>[^.]+)\.blob\.core\.windows\.net(:443)?/(?P<rest>.+)$", code_uri
        )
        if match is None:
            raise ProvisioningFailed(
                "BadArgument", f"Code asset path {code_uri} is not a blob folder."
            )
        container, _, prefix = match["rest"].partition("/")
        return self.files_under(match["account"], container, prefix.rstrip("/") + "/")

    def _model_files(
        self, ws: Any, model_ref: str, name: str, version: str
    ) -> tuple[str, dict[str, bytes]]:
        """(registered folder name, files) of a workspace or registry model version."""
        if model_ref.startswith("azureml://registries/"):
            registry = self.registries[model_ref.split("/")[3].lower()]
            uri = registry.models[name][version]["properties"]["modelUri"]
            account, container = registry.storage_account, registry.container
            prefix = uri.split(f"/{container}/", 1)[1]
        else:
            uri = ws.models[name][version]["properties"]["modelUri"]
            account, container = ws.storage_account, ws.container
            prefix = re.search(r"/paths/(?P<path>.*)$", uri)["path"]
        prefix = prefix.rstrip("/")
        return PurePosixPath(prefix).name, self.files_under(account, container, prefix + "/")

    # --- starting and stopping --------------------------------------------------------------

    def _start_container(self, ws: Any, resource: dict[str, Any], spec: ContainerSpec) -> Container:
        """Lay the files out, start the sidecar, then build the venv and start the server on
        a thread of its own (the caller holds the fake's lock)."""
        endpoint = resource["id"].split("/onlineEndpoints/")[1].split("/")[0]
        workdir = Path(
            tempfile.mkdtemp(prefix=f"{endpoint}-{resource['name']}-", dir=self._container_root())
        )
        container = Container(ws.name, endpoint, resource["name"], resource["id"], workdir)
        if spec.collections:
            container.sidecar = self._start_sidecar(ws, container, spec.collections)
        threading.Thread(target=self._run_container, args=(container, spec), daemon=True).start()
        return container

    def _run_container(self, container: Container, spec: ContainerSpec) -> None:
        try:
            self._boot(container, spec)
        except Exception as error:  # the container never got ready: that is the outcome
            container.error = f"{type(error).__name__}: {error}"
            container.state = "Failed"

    def _boot(self, container: Container, spec: ContainerSpec) -> None:
        workdir = container.workdir
        code = workdir / "onlinescoring"
        write_files(code, spec.code)
        model_dir = workdir / "azureml-models" / spec.model_name / spec.model_version
        write_files(model_dir / spec.model_folder, spec.model_files)
        conda = workdir / "conda.yml"
        conda.write_text(spec.conda_file)
        with container.log.open("ab") as log:
            log.write(b"building the environment from the deployment's conda file\n")
        venv = inference_venv(conda)
        runtime = workdir / "runtime"  # gunicorn's control socket: one per server
        runtime.mkdir(mode=0o700)
        container.port = _free_port()
        environment = {
            "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",  # the log in the order things happened
            "TMPDIR": str(workdir),
            "XDG_RUNTIME_DIR": str(runtime),
            **spec.variables,
            "AZUREML_MODEL_DIR": str(model_dir),
            "AZUREML_ENTRY_SCRIPT": spec.scoring_script,
            "AML_APP_ROOT": str(code),
        }
        if container.sidecar is not None:
            environment |= {
                "AZUREML_MDC_ENABLED": "true",
                "AZUREML_MDC_HOST": "127.0.0.1",
                "AZUREML_MDC_PORT": str(container.sidecar.server_address[1]),
            }
        if container.state == "Stopped":  # deleted while its environment was being built
            return
        with container.log.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(venv / "bin" / "azmlinfsrv"),
                    "--entry_script",
                    spec.scoring_script,
                    "--port",
                    str(container.port),
                ],
                cwd=code,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its gunicorn workers are stopped with it, by group
            )
        container.process = process
        if container.state == "Stopped":
            _stop_process(process)
            return
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(timeout=2) as probe:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    container.error = f"the inference server exited with {process.returncode}"
                    container.state = "Failed"
                    return
                if container.state == "Stopped":
                    return
                try:
                    if probe.get(container.url + "/").status_code == 200:
                        container.ready_seconds = time.monotonic() - container.started
                        container.state = "Ready"
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        container.error = f"the liveness route did not answer within {READY_TIMEOUT_SECONDS:g} s"
        container.state = "Failed"
        _stop_process(process)

    def _container_failure(self, container: Container) -> ProvisioningFailed:
        """What the deployment's operation reports for a container that never got ready."""
        return ProvisioningFailed(
            "ResourceNotReady",
            f"User container has crashed or terminated: {container.error}. Container logs "
            f"(last {LOG_TAIL_LINES} lines):\n{container.log_tail()}",
        )

    def _stop_container(self, container: Container | None) -> None:
        if container is None:
            return
        container.state = "Stopped" if container.state == "Starting" else container.state
        if container.process is not None:
            _stop_process(container.process)
        if container.sidecar is not None:
            container.sidecar.shutdown()
            container.sidecar.server_close()
            container.sidecar = None

    def stop_containers(self) -> None:
        """Stop every deployment's server and sidecar (by pid / server), and drop their files."""
        for container in [*self.containers.values(), *self._failed_containers.values()]:
            self._stop_container(container)
        self.containers.clear()
        self._failed_containers.clear()
        if getattr(self, "_containers_dir", None) is not None:
            self._containers_dir.cleanup()
            self._containers_dir = None

    # --- the data-collector sidecar ---------------------------------------------------------

    def _start_sidecar(
        self, ws: Any, container: Container, collections: dict[str, dict[str, Any]]
    ) -> ThreadingHTTPServer:
        fake = self

        class Sidecar(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?")[0] != "/modeldata/log":
                    return self._answer(404, b"not found")
                collection = self.headers.get("ce-type", "").removeprefix("azureml.inference.")
                settings = collections.get(collection)
                if settings is not None:
                    fake._collect(ws, container, collection, settings, body, self.headers)
                self._answer(200, b"")

            def _answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Sidecar)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _collect(
        self,
        ws: Any,
        container: Container,
        collection: str,
        settings: dict[str, Any],
        body: bytes,
        headers: Any,
    ) -> None:
        """One post, one line in this hour's file of this instance, in the collection's folder
        (the data asset the SDK registered for it, `dataId`, else the default folder)."""
        now = datetime.now(UTC)
        line = collected_data.event_line(
            collection,
            body,
            headers.get("ce-x-request-id") or str(uuid.uuid4()),
            container.source,
            now,
            model_version=headers.get("ce-model-version") or "default",
            collect_data_type=headers.get("ce-collect-data-type") or "pandas.core.frame.DataFrame",
            agent=headers.get("ce-agent") or "azureml-ai-monitoring",
        )
        with self._lock:
            folder = self._collection_folder(
                ws, container.endpoint, container.deployment, collection, settings
            )
            name = collected_data.hourly_file(folder, now, container.instance)
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
            found = ws.data.get(asset["name"], {}).get(asset["version"])
            uri = (found or {}).get("properties", {}).get("dataUri", "")
            path = re.search(r"/datastores/workspaceblobstore/paths/(?P<path>.+)$", uri)
            if path:
                return path["path"].strip("/")
        return collected_data.collection_folder(endpoint, deployment, collection)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the server's process group by its pid (it leads its own session, so its
    gunicorn workers go with it), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(1)


def write_files(root: Path, files: Mapping[str, bytes]) -> None:
    """Lay out an asset's files (a code snapshot, a model's folder) under `root`, as the
    service mounts them in a container."""
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
