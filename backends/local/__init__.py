"""The local backend: MLflow stores, a component runner, endpoint servers on 127.0.0.1."""

from backends.local.workspace import LocalWorkspace, MlflowRegistry, open_workspace

__all__ = ["LocalWorkspace", "MlflowRegistry", "open_workspace"]
