"""The Bicep parameter files both backends deploy from, and the rule that their names agree with
the topology: the local backend provisions from them, the azure backend compiles and deploys
them, and both refuse a file whose names differ from `environments.yaml` before doing anything.
"""

from __future__ import annotations

import re
from pathlib import Path

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
