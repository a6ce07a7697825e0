"""The local backend: MLflow stores, a component runner, endpoint servers on 127.0.0.1."""

from pathlib import Path

from backends.local.audit import LocalAuditTrail, open_audit_trail
from backends.local.infrastructure import open_infrastructure
from backends.local.workspace import (
    LocalSharedRegistry,
    LocalWorkspace,
    MlflowRegistry,
    open_shared_registry,
    open_workspace,
)


def open_endpoints(workspace: LocalWorkspace):  # noqa: ANN201 - imported lazily
    """Endpoint servers of a workspace (imported on use: serving pulls in FastAPI)."""
    from backends.local.endpoints import LocalEndpoints

    return LocalEndpoints(Path(workspace.directory))


def open_batch_scoring(workspace: LocalWorkspace):  # noqa: ANN201 - imported lazily
    """The workspace's batch endpoints and inbox (imported on use: pyarrow, the pool)."""
    from backends.local.batch_endpoint import LocalBatchScoring
    from settings import load_batch_settings

    return LocalBatchScoring(Path(workspace.directory), load_batch_settings())


__all__ = [
    "LocalAuditTrail",
    "LocalSharedRegistry",
    "LocalWorkspace",
    "MlflowRegistry",
    "open_audit_trail",
    "open_batch_scoring",
    "open_endpoints",
    "open_infrastructure",
    "open_shared_registry",
    "open_workspace",
]
