"""The Azure container work pool: its base job template as prefect-azure's worker renders it,
the setup against the session's Prefect server, and prefect.yaml's azure deployments."""

from __future__ import annotations

import asyncio
import json
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect_azure.workers.container_instance import (
    AzureContainerJobConfiguration,
    AzureContainerWorker,
)

from backends.topology import load_topology
from mlops_cli.azure_orchestration import (
    CREDENTIALS_BLOCK,
    IMAGE_WORKDIR,
    PREFECT_FILE,
    RESULTS_BLOCK,
    TEMPLATE_FILE,
    WORK_POOL,
    WORK_POOL_TYPE,
    azure_deployments,
    base_job_template,
    deploy_to_azure_pool,
    setup_azure_orchestration,
)

ORCHESTRATION = load_topology().require_orchestration()
AZURE_ENV = {
    "MLOPS_BACKEND": "azure",
    "MLOPS_TOPOLOGY_VARIABLE": "mlops_topology",
    "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"azure-blob-storage-container/{RESULTS_BLOCK}",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}
DOCUMENTED_CHANGES = {  # infra/prefect/README.md: the template's only departures from the default
    ("variables", "properties", "entrypoint", "default"),
    ("variables", "properties", "entrypoint", "description"),
    ("variables", "properties", "cpu", "default"),
    ("variables", "properties", "cpu", "description"),
    ("variables", "properties", "memory", "default"),
    ("variables", "properties", "memory", "description"),
}


def differences(ours: Any, theirs: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return {
            found
            for key in ours.keys() | theirs.keys()
            for found in differences(ours.get(key), theirs.get(key), (*path, key))
        }
    return set() if ours == theirs else {path}


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The ARM template the worker would deploy for a flow run with these job variables."""
    configuration = asyncio.run(
        AzureContainerJobConfiguration.from_template_and_values(template, job_variables)
    )
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="run"))
    assert configuration.task_watch_poll_interval == job_variables.get(
        "task_watch_poll_interval", 5.0
    )
    return configuration.arm_template["resources"][0]


def azure_job_variables() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_FILE.read_text())["definitions"]["azure"]["work_pool"][
        "job_variables"
    ]


def test_the_template_departs_from_the_workers_default_only_where_documented() -> None:
    ours = json.loads(TEMPLATE_FILE.read_text())
    assert differences(ours, AzureContainerWorker.get_default_base_job_template()) == (
        DOCUMENTED_CHANGES
    )
    for name in ("entrypoint", "cpu", "memory"):
        assert f"`{name}`" in (TEMPLATE_FILE.parent / "README.md").read_text()


def test_a_flow_container_pulls_and_runs_under_the_flows_identity_without_a_password() -> None:
    group = render(
        base_job_template(ORCHESTRATION),
        {**azure_job_variables(), "task_watch_poll_interval": 0.5},
    )
    container = group["properties"]["containers"][0]["properties"]
    assert container["image"] == "crreadmissionflows.azurecr.io/readmission-flows:latest"
    assert container["command"] == ["prefect", "flow-run", "execute"]  # no Prefect-image script
    assert container["resources"]["requests"] == {"cpu": 2.0, "memoryInGB": 4.0}
    assert group["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": {ORCHESTRATION.flows_identity: {}},
    }
    assert group["properties"]["imageRegistryCredentials"] == [
        {"server": "crreadmissionflows.azurecr.io", "identity": ORCHESTRATION.flows_identity}
    ]
    env = {item["name"]: item.get("value") for item in container["environmentVariables"]}
    assert {key: env[key] for key in AZURE_ENV} == AZURE_ENV
    assert "AZURE_CLIENT_ID" not in env  # one identity: the managed identity endpoint's default
    assert not [item for item in container["environmentVariables"] if "secureValue" in item]


def test_setup_makes_the_blocks_and_the_pool_and_is_safe_to_rerun() -> None:
    first = setup_azure_orchestration()
    again = setup_azure_orchestration()
    assert first == again
    assert first.results_block == AZURE_ENV["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]
    with get_client(sync_client=True) as client:
        credentials = client.read_block_document_by_name(
            CREDENTIALS_BLOCK, "azure-blob-storage-credentials", include_secrets=True
        )
        results = client.read_block_document_by_name(
            RESULTS_BLOCK, "azure-blob-storage-container", include_secrets=True
        )
        pool = client.read_work_pool(WORK_POOL)
    assert {k: v for k, v in credentials.data.items() if v is not None} == {
        "account_url": "https://streadmissionflows.blob.core.windows.net"
    }  # no connection string, client secret or key: DefaultAzureCredential
    assert results.data["container_name"] == "prefect-results"
    assert results.block_document_references["credentials"]["block_document"]["id"] == str(
        credentials.id
    )
    assert pool.type == WORK_POOL_TYPE
    defaults = {
        name: spec.get("default")
        for name, spec in pool.base_job_template["variables"]["properties"].items()
    }
    assert defaults["resource_group_name"] == "rg-readmission-shared"
    assert defaults["subscription_id"] == ORCHESTRATION.subscription_id
    assert defaults["identities"] == [ORCHESTRATION.flows_identity]
    assert defaults["keep_container_group"] is False
    group = render(pool.base_job_template, azure_job_variables())  # as the worker gets it
    assert group["properties"]["imageRegistryCredentials"][0]["identity"] == (
        ORCHESTRATION.flows_identity
    )


def test_every_deployment_runs_on_the_azure_pool_with_blob_results_and_the_images_code() -> None:
    local = yaml.safe_load(PREFECT_FILE.read_text())
    azure = azure_deployments()
    # all but infra, which creates role assignments: the flows identity may not (by design)
    assert [d["name"] for d in azure["deployments"]] == [
        d["name"] for d in local["deployments"] if d["name"] != "infra"
    ]
    assert azure["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}
    ]
    for deployment in azure["deployments"]:
        assert deployment["work_pool"]["name"] == WORK_POOL
        assert deployment["work_pool"]["job_variables"]["env"] == AZURE_ENV
    for deployment in local["deployments"]:  # the laptop's deployments are unchanged
        assert deployment["work_pool"]["name"] == "mlops-local"
        assert deployment["work_pool"]["job_variables"]["env"] == {
            "MLOPS_TOPOLOGY_VARIABLE": "mlops_topology"
        }
    assert "/opt/mlops" in (PREFECT_FILE.parent / "Dockerfile").read_text()


def test_the_azure_env_names_prefect_settings_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings

    for key, value in AZURE_ENV.items():
        monkeypatch.setenv(key, value)
    results = Settings().results
    assert results.default_storage_block == f"azure-blob-storage-container/{RESULTS_BLOCK}"
    assert results.persist_by_default is True


def test_prefect_deploy_puts_a_deployment_on_the_azure_pool(tmp_path: Path) -> None:
    setup_azure_orchestration()
    document = yaml.safe_load(PREFECT_FILE.read_text())
    document["deployments"] = [
        {**d, "name": "rollback-on-aci-test"}
        for d in document["deployments"]
        if d["name"] == "rollback"
    ]
    renamed = tmp_path / "prefect.yaml"  # a name no other test deploys
    renamed.write_text(yaml.safe_dump(document))
    result = deploy_to_azure_pool(prefect_file=renamed)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("rollback/rollback-on-aci-test")
        client.delete_deployment(deployment.id)
    assert deployment.work_pool_name == WORK_POOL
    assert deployment.job_variables["env"] == AZURE_ENV
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}
    ]


def test_an_unknown_deployment_name_deploys_nothing() -> None:
    with pytest.raises(ValueError, match="no deployment \\['relase'\\]"):
        deploy_to_azure_pool(["release", "relase"])


DOCKERFILE = PREFECT_FILE.parent / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in logical.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_holds_every_path_the_flows_read_and_installs_from_the_lock() -> None:
    instructions = dockerfile_instructions()
    copied = [
        source.rstrip("/")
        for kind, arguments in instructions
        if kind == "COPY"
        for source in arguments.split()[:-1]
    ]
    repo = PREFECT_FILE.parent
    assert [source for source in copied if not (repo / source).exists()] == []
    packages = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    runtime = {name.rstrip("*") for name in packages} | {"components", "config", "infra"}
    assert runtime | {"environments.yaml", "pyproject.toml"} <= set(copied)
    ignored = {line.strip().rstrip("/") for line in (repo / ".dockerignore").read_text().split()}
    assert not ignored & set(copied)
    runs = [arguments for kind, arguments in instructions if kind == "RUN"]
    lock = next(
        i for i, run in enumerate(runs) if "pip install --compile -r requirements.lock" in run
    )
    project = next(i for i, run in enumerate(runs) if "pip install --no-deps -e ." in run)
    assert lock < project  # the lock decides every version; the project adds no dependency
    assert "compileall" in runs[project]
    assert ("WORKDIR", IMAGE_WORKDIR) in instructions
    assert instructions[-1][0] == "USER" and instructions[-1][1] not in {"root", "0"}
    assert "ENTRYPOINT" not in {kind for kind, _ in instructions}
    env = " ".join(arguments for kind, arguments in instructions if kind in {"ENV", "ARG"})
    for secret in ("KEY", "SECRET", "PASSWORD", "CONNECTION_STRING", "TOKEN"):
        assert secret not in env.upper()
