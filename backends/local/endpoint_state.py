"""What survives a crash of a local endpoint server: its key, deployments, traffic and mirror in
`state.json`, rewritten atomically on every change, plus the processes it last ran (so a
restarted server can stop any its predecessor left behind).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

STATE_FILE = "state.json"
LOG_FILE = "server.log"
CODE_DIR = "code"
"""Code snapshots, in the endpoint's folder: a deployment runs the snapshot it was deployed with."""
INSTANCES_DIR = "deployments"
"""One folder per inference server started: its model layout and its log."""
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
"""Endpoint and deployment names: AML's rule (letter first, letters, digits, hyphens)."""


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment runs, as an Azure ML deployment states it: the model, the scoring
    script's code snapshot, the inference environment and the environment variables. Enough to
    start it again after a restart."""

    name: str
    model_name: str
    model_version: str
    model_path: str
    code: str = ""
    """The code snapshot folder (score.py and its modules), the server's working directory."""
    environment: str = ""
    """The inference venv whose `bin/azmlinfsrv` serves the script."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """The container's environment variables: the deployment YAML's and the model's."""
    request_timeout_ms: int = 5_000
    start_timeout_s: float = 310.0
    threshold: float | None = None
    """Only in state written before deployments ran the scoring script (see `is_legacy`)."""

    @property
    def is_legacy(self) -> bool:
        """Recorded by the in-process server that scored models itself: no script to run yet."""
        return not self.code

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DeploymentSpec:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class DeploymentProcess:
    """A deployment's inference server as last started: its pid (and process group), port
    and instance folder."""

    pid: int
    port: int
    instance: str


@dataclass(frozen=True)
class EndpointState:
    """The endpoint's durable state, shared by the server (writer) and the client (reader)."""

    endpoint: str
    key: str
    port: int | None = None
    pid: int | None = None
    deployments: Mapping[str, DeploymentSpec] = field(default_factory=dict)
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    processes: Mapping[str, DeploymentProcess] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = {
            "endpoint": self.endpoint,
            "key": self.key,
            "port": self.port,
            "pid": self.pid,
            "deployments": {
                n: {k: v for k, v in asdict(d).items() if v is not None}
                for n, d in self.deployments.items()
            },
            "traffic": dict(self.traffic),
            "mirror_traffic": dict(self.mirror_traffic),
            "processes": {n: asdict(p) for n, p in self.processes.items()},
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> EndpointState:
        raw = orjson.loads(data)
        return cls(
            endpoint=raw["endpoint"],
            key=raw["key"],
            port=raw.get("port"),
            pid=raw.get("pid"),
            deployments={
                n: DeploymentSpec.from_json(d) for n, d in raw.get("deployments", {}).items()
            },
            traffic=raw.get("traffic", {}),
            mirror_traffic=raw.get("mirror_traffic", {}),
            processes={n: DeploymentProcess(**p) for n, p in raw.get("processes", {}).items()},
        )


def read_state(state_dir: Path) -> EndpointState | None:
    """The endpoint's state, or None if it was never created."""
    path = state_dir / STATE_FILE
    return EndpointState.from_json(path.read_bytes()) if path.is_file() else None


def write_state(state_dir: Path, state: EndpointState) -> None:
    """Write-then-rename, mode 0600 (it holds the key): a crash mid-write leaves the old file."""
    temporary = state_dir / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(state.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, state_dir / STATE_FILE)
