"""One `MLClient` per workspace and one for the shared registry, built from the topology.

The connection (credential, an optional azure-core transport, retry settings, deadlines) comes
from a module-level factory, so tests swap in a fake of the Azure REST API at the HTTP layer
(`set_connection_factory`) and production code never branches on being tested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from azure.ai.ml import MLClient
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport

from backends.azure.credentials import default_credential
from backends.azure.retries import Deadlines, RetrySettings
from backends.topology import EnvironmentSpec, RegistrySpec


@dataclass(frozen=True)
class AzureConnection:
    """Everything an MLClient needs besides the resource names."""

    credential: TokenCredential
    transport: HttpTransport | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)
    deadlines: Deadlines = field(default_factory=Deadlines)

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**self.retry.client_kwargs(), "show_progress": False}
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return kwargs


@cache
def _default_connection() -> AzureConnection:
    """One DefaultAzureCredential per process: it caches tokens, and finding one (e.g. asking
    the az CLI) costs a second or more, so every client shares it."""
    return AzureConnection(credential=default_credential())


_factory: Callable[[], AzureConnection] = _default_connection


def set_connection_factory(factory: Callable[[], AzureConnection] | None) -> None:
    """Use `factory` for every client built from now on (None restores DefaultAzureCredential)."""
    global _factory
    _factory = factory or _default_connection


def connection() -> AzureConnection:
    return _factory()


def quiet_sdk_logs() -> None:
    """azure-ai-ml announces experimental classes and prints progress; not news to a user."""
    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def workspace_client(spec: EnvironmentSpec, conn: AzureConnection) -> MLClient:
    quiet_sdk_logs()
    return MLClient(
        conn.credential,
        subscription_id=spec.subscription_id,
        resource_group_name=spec.resource_group,
        workspace_name=spec.workspace,
        **conn.client_kwargs(),
    )


def registry_client(spec: RegistrySpec, conn: AzureConnection) -> MLClient:
    """A registry client: the SDK discovers the registry's region and data-plane host itself
    (subscription and resource group are taken from that discovery, as the SDK documents)."""
    quiet_sdk_logs()
    return MLClient(
        conn.credential,
        subscription_id=spec.subscription_id,
        resource_group_name=spec.resource_group,
        registry_name=spec.name,
        **conn.client_kwargs(),
    )
