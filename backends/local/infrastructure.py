"""The local side of the Bicep: provision the local workspaces from the same parameter files.

What-if compares what the parameter file asks for with what this machine has (a state file per
environment), the way ARM what-if compares a template with a resource group, so the plan a
person approves for prod reads the same locally and on Azure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from backends.base import InfraPlan, PlannedChange
from backends.local.workspace import LocalSharedRegistry, LocalWorkspace
from backends.topology import REPO_ROOT, Topology

PARAMETERS_DIR = REPO_ROOT / "infra" / "parameters"
PARAM_LINE = re.compile(r"^param\s+(\w+)\s*=\s*(.+?)\s*$")


def read_bicepparam(path: Path) -> dict[str, str | int | bool]:
    """Scalar `param name = value` lines (strings, numbers, booleans); objects are skipped."""
    values: dict[str, str | int | bool] = {}
    for line in path.read_text().splitlines():
        match = PARAM_LINE.match(line.strip())
        if not match:
            continue
        name, raw = match.groups()
        if raw.startswith("'") and raw.endswith("'"):
            values[name] = raw[1:-1]
        elif raw in ("true", "false"):
            values[name] = raw == "true"
        elif raw.lstrip("-").isdigit():
            values[name] = int(raw)
    return values


def check_names_agree(
    topology: Topology, environment: str, path: Path
) -> dict[str, str | int | bool]:
    """The parameter file's values, refused when its names differ from the topology's: the
    flows would look for resources the Bicep never made."""
    params = read_bicepparam(path)
    if environment == "shared":
        registry = topology.shared_registry
        expected = {"registryName": registry.name, "resourceGroupName": registry.resource_group}
        if (orchestration := topology.orchestration) is not None:  # shared.bicep makes it too
            expected |= {
                "resourceGroupName": orchestration.resource_group,
                "containerRegistryName": orchestration.container_registry,
                "flowsStorageAccountName": orchestration.storage_account,
                "resultsContainerName": orchestration.results_container,
                "auditContainerName": orchestration.audit_container,
                "flowsIdentityName": orchestration.flows_identity.rsplit("/", 1)[-1],
            }
    else:
        spec = topology.environment(environment)
        expected = {"workspaceName": spec.workspace, "resourceGroupName": spec.resource_group}
    for name, value in expected.items():
        if params.get(name) != value:
            raise ValueError(
                f"{path.name} sets {name} = {params.get(name)!r} but the topology says "
                f"{value!r}: make them agree before deploying"
            )
    return params


class LocalInfrastructure:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.state_dir = topology.local_root / "infra"

    def _desired(self, environment: str) -> tuple[Path, dict[str, dict]]:
        path = PARAMETERS_DIR / f"{environment}.bicepparam"
        if not path.exists():
            raise FileNotFoundError(f"no parameter file {path}: one per environment and shared")
        params = check_names_agree(self.topology, environment, path)
        if environment == "shared":
            expected = self.topology.shared_registry.name
            return path, {expected: {"kind": "registry", "location": params.get("location")}}
        spec = self.topology.environment(environment)
        desired = {
            spec.workspace: {"kind": "workspace", "location": params.get("location")},
            f"{spec.workspace}/{params.get('computeName')}": {
                "kind": "compute",
                "max_nodes": params.get("computeMaxNodeCount"),
            },
        }
        if params.get("deployEndpointIdentity"):
            desired[f"{spec.workspace}/endpoint-identity"] = {"kind": "identity"}
        return path, desired

    def _deployed(self, environment: str) -> dict[str, dict]:
        state = self.state_dir / f"{environment}.json"
        return json.loads(state.read_text()) if state.exists() else {}

    def what_if(self, environment: str) -> InfraPlan:
        path, desired = self._desired(environment)
        deployed = self._deployed(environment)
        changes = []
        for name, properties in desired.items():
            if name not in deployed:
                action, detail = "create", ""
            elif deployed[name] != properties:
                action, detail = "modify", f"{deployed[name]} -> {properties}"
            else:
                action, detail = "no change", ""
            changes.append(PlannedChange(name, properties["kind"], action, detail))
        return InfraPlan(environment, str(path.relative_to(REPO_ROOT)), tuple(changes))

    def deploy(self, environment: str) -> InfraPlan:
        """Create what the plan creates; idempotent (a second deploy changes nothing)."""
        plan = self.what_if(environment)
        _, desired = self._desired(environment)
        if environment == "shared":
            LocalSharedRegistry(self.topology.shared_registry, self.topology.local_root)
        else:
            LocalWorkspace(self.topology.environment(environment), self.topology.local_root)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{environment}.json").write_text(json.dumps(desired, indent=2))
        return plan


def open_infrastructure(topology: Topology) -> LocalInfrastructure:
    return LocalInfrastructure(topology)
