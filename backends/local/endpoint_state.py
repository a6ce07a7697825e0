"""What survives a crash of a local endpoint server: its key, deployments, traffic and mirror in
`state.json`, rewritten atomically on every change.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

STATE_FILE = "state.json"
LOG_FILE = "server.log"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
"""Endpoint and deployment names: AML's rule (letter first, letters, digits, hyphens)."""


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment serves; enough to load it again after a restart."""

    name: str
    model_name: str
    model_version: str
    model_path: str
    threshold: float = 0.5


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

    def to_json(self) -> bytes:
        document = {
            "endpoint": self.endpoint,
            "key": self.key,
            "port": self.port,
            "pid": self.pid,
            "deployments": {n: vars(d) for n, d in self.deployments.items()},
            "traffic": dict(self.traffic),
            "mirror_traffic": dict(self.mirror_traffic),
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
            deployments={n: DeploymentSpec(**d) for n, d in raw.get("deployments", {}).items()},
            traffic=raw.get("traffic", {}),
            mirror_traffic=raw.get("mirror_traffic", {}),
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
