"""The topology file: which backend, and what each environment and the shared registry are called.

Flows take an environment name ("dev", "test", "prod"); everything concrete lives here, so the
same flow code runs against the laptop or a subscription with one setting changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "environments.yaml"


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    workspace: str
    resource_group: str
    subscription_id: str
    location: str
    compute: str


@dataclass(frozen=True)
class RegistrySpec:
    name: str
    resource_group: str
    subscription_id: str
    location: str


@dataclass(frozen=True)
class Topology:
    backend: str
    local_root: Path
    environments: dict[str, EnvironmentSpec]
    shared_registry: RegistrySpec

    def environment(self, name: str) -> EnvironmentSpec:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise KeyError(
                f"unknown environment {name!r}: the topology file names {known}"
            ) from None


def load_topology(path: Path | None = None) -> Topology:
    """Read environments.yaml; MLOPS_TOPOLOGY, MLOPS_BACKEND and MLOPS_ROOT override it."""
    path = Path(os.environ.get("MLOPS_TOPOLOGY", path or DEFAULT_TOPOLOGY))
    raw = yaml.safe_load(path.read_text())
    root = Path(os.environ.get("MLOPS_ROOT", raw["local"]["root"]))
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    envs = {name: EnvironmentSpec(name=name, **spec) for name, spec in raw["environments"].items()}
    return Topology(
        backend=os.environ.get("MLOPS_BACKEND", raw["backend"]),
        local_root=root,
        environments=envs,
        shared_registry=RegistrySpec(**raw["shared_registry"]),
    )
