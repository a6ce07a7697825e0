"""The azure backend: Azure ML workspaces, the shared registry and managed online endpoints
through azure-ai-ml, and the Bicep through Resource Manager, with DefaultAzureCredential only
(see credentials.py and clients.py)."""

from __future__ import annotations

from backends.azure.audit import AzureAuditTrail, open_audit_trail
from backends.azure.batch import AzureBatchScoring
from backends.azure.clients import connection
from backends.azure.endpoints import AzureEndpoints
from backends.azure.infrastructure import AzureInfrastructure, open_infrastructure
from backends.azure.registry import AzureSharedRegistry
from backends.azure.workspace import AzureWorkspace
from backends.topology import EnvironmentSpec, Topology


def open_workspace(spec: EnvironmentSpec, topology: Topology) -> AzureWorkspace:
    return AzureWorkspace(spec, topology, connection())


def open_shared_registry(topology: Topology) -> AzureSharedRegistry:
    return AzureSharedRegistry(topology.shared_registry, topology, connection())


def open_endpoints(workspace: AzureWorkspace) -> AzureEndpoints:
    return AzureEndpoints(workspace)


def open_batch_scoring(workspace: AzureWorkspace) -> AzureBatchScoring:
    return AzureBatchScoring(workspace)


__all__ = [
    "AzureAuditTrail",
    "AzureBatchScoring",
    "AzureEndpoints",
    "AzureInfrastructure",
    "AzureSharedRegistry",
    "AzureWorkspace",
    "open_audit_trail",
    "open_batch_scoring",
    "open_endpoints",
    "open_infrastructure",
    "open_shared_registry",
    "open_workspace",
]
