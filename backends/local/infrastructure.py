"""The local side of the Bicep: provision the local workspaces from the same parameter files.

What-if compares what the parameter file asks for with what this machine has (a state file per
environment), the way ARM what-if compares a template with a resource group, so the plan a
person approves for prod reads the same locally and on Azure.
"""

from __future__ import annotations

import json
from pathlib import Path

from backends.infra_parameters import PARAMETERS_DIR, check_names_agree
from backends.local.workspace import LocalSharedRegistry, LocalWorkspace
from backends.topology import REPO_ROOT, Topology
from records.infra import InfraPlan, PlannedChange


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
