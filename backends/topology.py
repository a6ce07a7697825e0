"""The topology file: which backend, and what each environment and the shared registry are called.

Flows take an environment name ("dev", "test", "prod"); everything concrete lives here, so the
same flow code runs against the laptop or a subscription with one setting changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOPOLOGY = REPO_ROOT / "environments.yaml"
TOPOLOGY_VARIABLE = "mlops_topology"  # the Prefect Variable `mlops config push` writes
USER_ASSIGNED_IDENTITY = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]{1,90}"
    r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[-\w]{3,128}$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    workspace: str
    resource_group: str
    subscription_id: str
    location: str
    compute: str
    endpoint_identity: str | None = None
    """Resource ID of the user-assigned identity the environment's online endpoints run under
    (infra/ creates it as id-<project>-<env>-endpoint and grants its roles). None: endpoints
    get a system-assigned identity, which Azure ML grants pull rights on the workspace's own
    registry and storage only, so they cannot serve models from the shared registry."""
    registers_pipeline_assets: bool = False
    """True for the one environment (dev) that registers the working tree's components and
    environments and promotes them after a passed pipeline and an approval; every other
    environment runs only the shared registry's versions."""

    def __post_init__(self) -> None:
        if self.endpoint_identity is not None and not USER_ASSIGNED_IDENTITY.match(
            self.endpoint_identity
        ):
            raise ValueError(
                f"environments.{self.name}.endpoint_identity is {self.endpoint_identity!r}, not "
                "the resource ID of a user-assigned identity: /subscriptions/<id>/resourceGroups"
                "/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name> "
                "(the endpointIdentityId output of the environment's infra deployment)"
            )


@dataclass(frozen=True)
class RegistrySpec:
    name: str
    resource_group: str
    subscription_id: str
    location: str


@dataclass(frozen=True)
class OrchestrationSpec:
    """Where the flows run on Azure and what they keep: the container groups prefect-azure's
    ACI worker starts, the registry their image is pulled from, the identity they run under,
    and the storage account that holds Prefect's results and the audit trail (infra/shared.bicep
    creates all of it in the shared resource group)."""

    resource_group: str
    subscription_id: str
    location: str
    container_registry: str
    """Azure Container Registry name; the flows' image is <name>.azurecr.io/<image>."""
    image: str
    """Repository and tag of the flows' image in that registry, e.g. readmission-flows:latest."""
    flows_identity: str
    """Resource ID of the user-assigned identity every flow container runs under (and pulls
    its image with): the only identity the flows have on Azure."""
    storage_account: str
    results_container: str
    """Blob container of Prefect's persisted results (read back after a suspension)."""
    audit_container: str
    """Blob container of the audit trail, under a time-based immutability (WORM) policy."""

    def __post_init__(self) -> None:
        if not USER_ASSIGNED_IDENTITY.match(self.flows_identity):
            raise ValueError(
                f"orchestration.flows_identity is {self.flows_identity!r}, not the resource ID "
                "of a user-assigned identity (the flowsIdentityId output of infra/shared.bicep)"
            )

    @property
    def registry_server(self) -> str:
        return f"{self.container_registry}.azurecr.io"

    @property
    def image_uri(self) -> str:
        return f"{self.registry_server}/{self.image}"

    @property
    def account_url(self) -> str:
        return f"https://{self.storage_account}.blob.core.windows.net"


@dataclass(frozen=True)
class Topology:
    backend: str
    local_root: Path
    environments: dict[str, EnvironmentSpec]
    shared_registry: RegistrySpec
    orchestration: OrchestrationSpec | None = None
    """Azure only: where the container work pool runs the flows. None: no azure pool."""

    def require_orchestration(self) -> OrchestrationSpec:
        if self.orchestration is None:
            raise ValueError(
                "the topology has no `orchestration` section: the azure work pool, its result "
                "storage and the audit trail on Azure need one (see environments.yaml)"
            )
        return self.orchestration

    def environment(self, name: str) -> EnvironmentSpec:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise KeyError(
                f"unknown environment {name!r}: the topology file names {known}"
            ) from None


def load_topology(path: Path | None = None) -> Topology:
    """The topology: the file MLOPS_TOPOLOGY names, else the Prefect Variable
    MLOPS_TOPOLOGY_VARIABLE names (when it is set on the server), else environments.yaml.
    MLOPS_BACKEND and MLOPS_ROOT override single settings for one process."""
    raw, where = _read_raw(path)
    return topology_from(raw, where)


def _read_raw(path: Path | None) -> tuple[dict[str, Any], Path]:
    if "MLOPS_TOPOLOGY" not in os.environ and path is None:
        name = os.environ.get("MLOPS_TOPOLOGY_VARIABLE")
        if name:
            from prefect.variables import Variable

            value = Variable.get(name)
            if value is not None:
                if not isinstance(value, dict):
                    raise ValueError(
                        f"the Prefect Variable {name!r} must hold the topology as a JSON object "
                        "(write it with `mlops config push`)"
                    )
                return value, DEFAULT_TOPOLOGY
    path = Path(os.environ.get("MLOPS_TOPOLOGY", path or DEFAULT_TOPOLOGY))
    return yaml.safe_load(path.read_text()), path


def topology_from(raw: dict[str, Any], where: Path) -> Topology:
    """Build (and so validate) a topology; relative local roots are relative to `where`."""
    try:
        root = Path(os.environ.get("MLOPS_ROOT", raw["local"]["root"]))
        envs = {
            name: EnvironmentSpec(name=name, **spec) for name, spec in raw["environments"].items()
        }
        registry = RegistrySpec(**raw["shared_registry"])
        orchestration = (
            OrchestrationSpec(**raw["orchestration"]) if raw.get("orchestration") else None
        )
        backend = os.environ.get("MLOPS_BACKEND", raw["backend"])
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"the topology from {where} is incomplete or has an unknown key ({error}): "
            "compare it with environments.yaml"
        ) from None
    if not root.is_absolute():
        root = (where.parent / root).resolve()
    return Topology(
        backend=backend,
        local_root=root,
        environments=envs,
        shared_registry=registry,
        orchestration=orchestration,
    )
