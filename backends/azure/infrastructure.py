"""The Bicep in infra/ on Azure: compile with the Bicep CLI, what-if and deploy through
Resource Manager (azure-mgmt-resource-deployments), at subscription scope.

Each parameter file names its template (`using '../main.bicep'`); both templates create their
own resource group, so a deployment is one subscription-scope deployment per environment with
a stable name (`mlops-<environment>`): re-running updates that deployment instead of piling up
new ones, and ARM's Incremental mode leaves resources the template does not mention alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.deployments import DeploymentsMgmtClient
from azure.mgmt.resource.deployments.models import (
    Deployment,
    DeploymentProperties,
    DeploymentWhatIf,
    DeploymentWhatIfProperties,
    WhatIfChange,
)

from backends.azure.clients import AzureConnection, connection, quiet_sdk_logs
from backends.azure.errors import AzureOperationFailed, explain
from backends.azure.retries import wait_for
from backends.infra_parameters import PARAMETERS_DIR, check_names_agree
from backends.topology import REPO_ROOT, Topology
from records.infra import InfraPlan, PlannedChange

BICEP_INSTALL = (
    "install it with `az bicep install` (puts it in ~/.azure/bin) or from "
    "https://learn.microsoft.com/azure/azure-resource-manager/bicep/install, or point "
    "MLOPS_BICEP at the binary"
)
USING = re.compile(r"^\s*using\s+'([^']+)'", re.MULTILINE)
# what ARM's what-if change types mean for the plan a person approves
ACTIONS = {
    "Create": "create",
    "Modify": "modify",
    "Delete": "delete",
    "Deploy": "redeploy",
    "NoChange": "no change",
    "Ignore": "no change",
    "Unsupported": "unknown",
}


class BicepCliMissing(RuntimeError):
    """The Bicep CLI is needed to turn infra/*.bicep into the ARM JSON Azure deploys."""


class InfraDeploymentFailed(AzureOperationFailed):
    """Resource Manager refused or failed a deployment; the message lists each failed resource."""


@dataclass(frozen=True)
class CompiledDeployment:
    parameter_file: Path
    template: dict[str, Any]
    parameters: dict[str, Any]

    def properties(self) -> dict[str, Any]:
        """Incremental: resources the template does not mention are left alone."""
        return {"mode": "Incremental", "template": self.template, "parameters": self.parameters}


def bicep_cli() -> str:
    """MLOPS_BICEP, else `bicep` on PATH, else the one `az bicep install` puts in ~/.azure/bin."""
    candidates = [
        os.environ.get("MLOPS_BICEP"),
        shutil.which("bicep"),
        str(Path.home() / ".azure" / "bin" / "bicep"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BicepCliMissing(f"the Bicep CLI was not found: {BICEP_INSTALL}")


def compile_parameters(parameter_file: Path) -> CompiledDeployment:
    """`bicep build` the template the parameter file uses, `bicep build-params` the values."""
    match = USING.search(parameter_file.read_text())
    if not match:
        raise ValueError(f"{parameter_file} has no `using '<template>.bicep'` line")
    template_file = (parameter_file.parent / match.group(1)).resolve()
    bicep = bicep_cli()
    with tempfile.TemporaryDirectory(prefix="bicep-") as out:
        template_json = Path(out) / "template.json"
        parameters_json = Path(out) / "parameters.json"
        for command in (
            [bicep, "build", str(template_file), "--outfile", str(template_json)],
            [bicep, "build-params", str(parameter_file), "--outfile", str(parameters_json)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
            if done.returncode != 0:
                raise RuntimeError(
                    f"`{' '.join(command[1:3])}` failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()}"
                )
        parameters = json.loads(parameters_json.read_text())
        return CompiledDeployment(
            parameter_file,
            json.loads(template_json.read_text()),
            parameters.get("parameters", {}),
        )


class AzureInfrastructure:
    """The Infrastructure Protocol on Resource Manager: one subscription per environment."""

    def __init__(self, topology: Topology, conn: AzureConnection) -> None:
        self.topology = topology
        self.conn = conn

    def _target(self, environment: str) -> tuple[str, str]:
        """(subscription, location) the environment's deployment runs in."""
        if environment == "shared":
            spec = self.topology.shared_registry
            return spec.subscription_id, spec.location
        env = self.topology.environment(environment)
        return env.subscription_id, env.location

    def _client(self, subscription: str) -> DeploymentsMgmtClient:
        quiet_sdk_logs()
        kwargs = {k: v for k, v in self.conn.client_kwargs().items() if k != "show_progress"}
        return DeploymentsMgmtClient(self.conn.credential, subscription, **kwargs)

    def _compiled(self, environment: str) -> CompiledDeployment:
        path = PARAMETERS_DIR / f"{environment}.bicepparam"
        if not path.exists():
            raise FileNotFoundError(f"no parameter file {path}: one per environment and shared")
        check_names_agree(self.topology, environment, path)
        return compile_parameters(path)

    def _prepared(
        self, environment: str
    ) -> tuple[DeploymentsMgmtClient, str, str, CompiledDeployment]:
        """(client, deployment name, location, compiled Bicep) of one environment."""
        compiled = self._compiled(environment)
        subscription, location = self._target(environment)
        return self._client(subscription), deployment_name(environment), location, compiled

    def what_if(self, environment: str) -> InfraPlan:
        return self._what_if(environment, *self._prepared(environment))

    def _what_if(
        self,
        environment: str,
        client: DeploymentsMgmtClient,
        name: str,
        location: str,
        compiled: CompiledDeployment,
    ) -> InfraPlan:
        request = DeploymentWhatIf(
            location=location, properties=DeploymentWhatIfProperties(**compiled.properties())
        )
        try:
            poller = client.deployments.begin_what_if_at_subscription_scope(name, request)
            result = wait_for(
                poller, self.conn.deadlines.lro_seconds, f"what-if of {name}", "the subscription"
            )
        except HttpResponseError as error:
            raise explain(f"what-if of the {environment} Bicep", error) from error
        if result.error is not None:
            raise InfraDeploymentFailed(
                f"what-if of the {environment} Bicep failed: {result.error.code}: "
                f"{result.error.message}"
            )
        changes = (result.properties.changes if result.properties else None) or []
        return InfraPlan(
            environment,
            str(compiled.parameter_file.relative_to(REPO_ROOT)),
            tuple(planned_change(c) for c in changes),
        )

    def deploy(self, environment: str) -> InfraPlan:
        """What-if (the plan the audit log records), then deploy; a failed deployment raises
        with each failed resource's error."""
        client, name, location, compiled = prepared = self._prepared(environment)
        plan = self._what_if(environment, *prepared)
        request = Deployment(
            location=location,
            properties=DeploymentProperties(**compiled.properties()),
            tags={"deployed-by": "mlops infra flow"},
        )
        try:
            poller = client.deployments.begin_create_or_update_at_subscription_scope(name, request)
            wait_for(
                poller,
                self.conn.deadlines.lro_seconds,
                f"deployment {name}",
                f"the subscription's deployments ({name})",
            )
        except HttpResponseError as error:
            raise self._failure(client, environment, name, error) from error
        return plan

    def _failure(
        self, client: DeploymentsMgmtClient, environment: str, name: str, error: HttpResponseError
    ) -> AzureOperationFailed:
        """The deployment's own error record names each failed resource; the poller's does not."""
        try:
            recorded = client.deployments.get_at_subscription_scope(name).properties
        except HttpResponseError:
            recorded = None
        failure = recorded.error if recorded is not None else None
        if failure is None:
            return explain(f"deploying the {environment} Bicep", error)
        details = "; ".join(
            f"{d.code}: {d.message} ({(d.target or '').rsplit('/', 1)[-1]})"
            for d in (failure.details or [])
        )
        return InfraDeploymentFailed(
            f"deployment {name} of the {environment} Bicep failed: {details or failure.message}. "
            "Resources deployed before the failure stay; fix the cause and re-run the infra flow "
            "(the deployment is incremental and converges).",
            status=error.status_code,
            code=failure.code,
        )


def deployment_name(environment: str) -> str:
    return f"mlops-{environment}"


def planned_change(change: WhatIfChange) -> PlannedChange:
    """One WhatIfChange as the plan shows it: resource name, type, action, changed properties."""
    resource_id = change.resource_id or ""
    parts = resource_id.split("/providers/")[-1].split("/")
    kind = "/".join([parts[0], *parts[1::2]]) if len(parts) > 1 else resource_id
    if "/resourceGroups/" in resource_id and "/providers/" not in resource_id:
        kind = "Microsoft.Resources/resourceGroups"
    name = resource_id.rstrip("/").rsplit("/", 1)[-1]
    detail = change.unsupported_reason or ", ".join(
        f"{d.path}: {d.before!r} -> {d.after!r}" for d in (change.delta or [])
    )
    change_type = str(getattr(change.change_type, "value", change.change_type))
    return PlannedChange(name, kind, ACTIONS.get(change_type, change_type), detail)


def open_infrastructure(topology: Topology) -> AzureInfrastructure:
    return AzureInfrastructure(topology, connection())
