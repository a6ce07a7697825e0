"""Backends do the work behind one set of Protocols; the topology file picks which one."""

from __future__ import annotations

from importlib import import_module

from backends.base import Workspace
from backends.topology import load_topology

BACKENDS = {"local": "backends.local"}


def workspace(environment: str) -> Workspace:
    """The workspace of an environment ("dev", "test", "prod") on the configured backend."""
    topology = load_topology()
    spec = topology.environment(environment)
    try:
        module = import_module(BACKENDS[topology.backend])
    except KeyError:
        raise ValueError(
            f"backend {topology.backend!r} is not available; choose one of {sorted(BACKENDS)} "
            "in environments.yaml (or MLOPS_BACKEND)"
        ) from None
    return module.open_workspace(spec, topology)
