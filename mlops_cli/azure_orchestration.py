"""The Prefect side of running the flows on Azure: prefect-azure's Azure Container Instances
work pool, the blocks its runs use, and the deployments moved onto it.

`setup_azure_orchestration(topology)` is the one call that makes (or updates; safe to re-run)
everything on the Prefect server from the topology's `orchestration` section:

- block `azure-blob-storage-credentials/mlops-storage`: the storage account's URL and nothing
  else, so prefect-azure authenticates with `DefaultAzureCredential` (in a flow container, the
  flows identity through the container's managed identity endpoint); no key, no connection
  string, no client secret;
- block `azure-blob-storage-container/mlops-results` (`RESULTS_BLOCK`): the results container on
  that account, the result storage of every deployment on the pool (prefect.yaml sets
  PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK to it), so a suspended run resumes in a new container;
- work pool `mlops-aci` (`WORK_POOL`) of type `azure-container-instance`, from the repo's base
  job template (infra/prefect/aci-base-job-template.json, see infra/prefect/README.md) with the
  variable defaults filled from the topology: resource group, subscription, the flows identity
  as the container group's only identity, the image in the registry, and the registry pulled with
  that identity (prefect-azure's `ACRManagedIdentity`: server + identity, no password).

`ACRManagedIdentity` is a plain pydantic model in prefect-azure 0.4.13, not a block (there is no
block type to save it as), so the pool's `image_registry` default holds it inline.

`azure_deployment_file()` / `deploy_to_azure_pool()` deploy prefect.yaml's deployments onto the
pool with the `definitions.azure` section of prefect.yaml in place of each one's work pool and
pull steps: the deployment list exists once, and `prefect deploy --all` keeps deploying it to the
local process pool. The names stay the same (flows/retrain.py starts `release/release`), so a
Prefect server runs the lifecycle on one pool at a time.

The topology itself reaches the flows as before, through `mlops config push` (the Prefect
Variable MLOPS_TOPOLOGY_VARIABLE names).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backends.topology import REPO_ROOT, OrchestrationSpec, Topology, load_topology

TEMPLATE_FILE = REPO_ROOT / "infra" / "prefect" / "aci-base-job-template.json"
PREFECT_FILE = REPO_ROOT / "prefect.yaml"
WORK_POOL = "mlops-aci"
WORK_POOL_TYPE = "azure-container-instance"  # prefect-azure's AzureContainerWorker.type
CREDENTIALS_BLOCK = "mlops-storage"
RESULTS_BLOCK = "mlops-results"
IMAGE_WORKDIR = "/opt/mlops"
"""Where the Dockerfile puts the code; the azure deployments' pull step changes into it."""


@dataclass(frozen=True)
class OrchestrationSetup:
    """What `setup_azure_orchestration` made or updated on the Prefect server."""

    work_pool: str
    credentials_block: str
    results_block: str
    """`block-type-slug/name`: the value of PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK."""
    image: str
    resource_group: str
    identity: str

    def lines(self) -> list[str]:
        return [
            f"block azure-blob-storage-credentials/{self.credentials_block} "
            "(account URL only: DefaultAzureCredential)",
            f"block {self.results_block} (result storage of the azure deployments)",
            f"work pool {self.work_pool} ({WORK_POOL_TYPE}): image {self.image}, "
            f"resource group {self.resource_group}, identity {self.identity.rsplit('/', 1)[-1]}",
        ]


def base_job_template(orchestration: OrchestrationSpec) -> dict[str, Any]:
    """The repo's base job template with the topology's values as the variables' defaults
    (the pool's form in the UI shows them; a deployment's job_variables may override them)."""
    template = json.loads(TEMPLATE_FILE.read_text())
    defaults = {
        "image": orchestration.image_uri,
        "resource_group_name": orchestration.resource_group,
        "subscription_id": orchestration.subscription_id,
        "identities": [orchestration.flows_identity],
        "image_registry": {
            "registry_url": orchestration.registry_server,
            "identity": orchestration.flows_identity,
        },
    }
    properties = template["variables"]["properties"]
    for name, value in defaults.items():
        properties[name]["default"] = value
    return template


def save_result_storage(orchestration: OrchestrationSpec) -> str:
    """Save the credentials and results-container blocks; return the results block's slug."""
    from prefect_azure import AzureBlobStorageCredentials
    from prefect_azure.blob_storage import AzureBlobStorageContainer

    credentials = AzureBlobStorageCredentials(account_url=orchestration.account_url)
    credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    results = AzureBlobStorageContainer(
        container_name=orchestration.results_container, credentials=credentials
    )
    results.save(RESULTS_BLOCK, overwrite=True)
    return f"{results.get_block_type_slug()}/{RESULTS_BLOCK}"


def save_work_pool(orchestration: OrchestrationSpec) -> None:
    """Create the ACI work pool, or replace its base job template when it exists."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=WORK_POOL,
                type=WORK_POOL_TYPE,
                description="The lifecycle's flows in Azure Container Instances, under the "
                "flows identity (mlops azure setup).",
                base_job_template=base_job_template(orchestration),
            ),
            overwrite=True,
        )


def setup_azure_orchestration(topology: Topology | None = None) -> OrchestrationSetup:
    """Make or update the blocks and the work pool from the topology (PREFECT_API_URL must
    point at the server). Idempotent: running it again replaces them with the same values."""
    orchestration = (topology or load_topology()).require_orchestration()
    results = save_result_storage(orchestration)
    save_work_pool(orchestration)
    return OrchestrationSetup(
        work_pool=WORK_POOL,
        credentials_block=CREDENTIALS_BLOCK,
        results_block=results,
        image=orchestration.image_uri,
        resource_group=orchestration.resource_group,
        identity=orchestration.flows_identity,
    )


def azure_deployments(prefect_file: Path = PREFECT_FILE) -> dict[str, Any]:
    """prefect.yaml with its deployments on the azure pool (all but `definitions.azure.leave_out`):
    `definitions.azure.work_pool` and `definitions.azure.pull` replace each one's work pool and
    the pull steps."""
    document = yaml.safe_load(prefect_file.read_text())
    azure = document["definitions"]["azure"]
    moved = copy.deepcopy(document)
    moved["pull"] = copy.deepcopy(azure["pull"])
    left_out = set(azure.get("leave_out", ()))
    moved["deployments"] = [d for d in moved["deployments"] if d["name"] not in left_out]
    for deployment in moved["deployments"]:
        deployment["work_pool"] = copy.deepcopy(azure["work_pool"])
        deployment.pop("pull", None)
    return moved


def deploy_to_azure_pool(
    names: list[str] | None = None,
    prefect_file: Path = PREFECT_FILE,
    project_root: Path = REPO_ROOT,
) -> subprocess.CompletedProcess[str]:
    """`prefect deploy` the azure variants (all, or the named ones) from the project root
    (entrypoints are relative to it)."""
    document = azure_deployments(prefect_file)
    known = [deployment["name"] for deployment in document["deployments"]]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"{prefect_file} has no deployment {unknown}; it has {known}")
    with tempfile.TemporaryDirectory(prefix="mlops-azure-deploy-") as folder:
        azure_file = Path(folder) / "prefect.azure.yaml"
        azure_file.write_text(yaml.safe_dump(document, sort_keys=False))
        selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
        return subprocess.run(
            [
                str(Path(sys.executable).with_name("prefect")),
                "--no-prompt",
                "deploy",
                *selection,
                "--prefect-file",
                str(azure_file),
            ],
            cwd=project_root,
            capture_output=True,
            text=True,
        )
