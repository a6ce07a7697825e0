"""Backends do the work behind one set of Protocols; the topology file picks which one."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from backends.base import (
    AuditTrail,
    BatchScoring,
    Endpoints,
    Infrastructure,
    ModelRegistry,
    Workspace,
)
from backends.topology import load_topology

BACKENDS = {"local": "backends.local", "azure": "backends.azure"}


def _backend() -> ModuleType:
    name = load_topology().backend
    try:
        return import_module(BACKENDS[name])
    except KeyError:
        raise ValueError(
            f"backend {name!r} is not available; choose one of {sorted(BACKENDS)} "
            "in environments.yaml (or MLOPS_BACKEND)"
        ) from None


def workspace(environment: str) -> Workspace:
    """The workspace of an environment ("dev", "test", "prod") on the configured backend."""
    topology = load_topology()
    return _backend().open_workspace(topology.environment(environment), topology)


def shared_registry() -> ModelRegistry:
    """The one registry shared by all environments."""
    return _backend().open_shared_registry(load_topology())


def endpoints(environment: str) -> Endpoints:
    """The online endpoints of an environment's workspace."""
    return _backend().open_endpoints(workspace(environment))


def batch_scoring(environment: str) -> BatchScoring:
    """The batch endpoint and inbox of an environment's workspace."""
    return _backend().open_batch_scoring(workspace(environment))


def infrastructure() -> Infrastructure:
    """Bicep deployments for every environment and the shared registry."""
    return _backend().open_infrastructure(load_topology())


def audit_trail() -> AuditTrail:
    """The append-only audit trail: a JSONL file locally, append blobs in a WORM container on
    Azure."""
    return _backend().open_audit_trail(load_topology())


def stop_local_servers() -> list[str]:
    """Stop the endpoint servers the local backend started under this checkout's local root
    (`mlops server stop`); on Azure there are none, and the local root is simply empty."""
    from backends.local.endpoints import stop_all

    stopped: list[str] = []
    for directory in (load_topology().local_root / "workspaces").glob("*"):
        stopped += stop_all(directory)
    return stopped
