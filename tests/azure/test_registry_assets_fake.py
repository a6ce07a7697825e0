"""Components, environments and code in the shared registry, through the real SDK and the fake.

What the product's registry promotion of pipeline assets needs from the fake, as azure-ai-ml
1.35.2 sends it: a registry MLClient creates an environment (image + conda file) and a command
component whose code is a local folder and whose environment is that registry environment;
both read back and list; a workspace pipeline job may use the registry component by its
`azureml://registries/...` id, and one the registry does not hold is refused. The wire format
each route answers with follows the registry recordings (tests/azure/test_recordings.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.ai.ml import Input, MLClient, command, load_job
from azure.ai.ml.entities import Component, Environment, PipelineJob
from azure.core.exceptions import HttpResponseError

from backends.azure.clients import connection, registry_client, workspace_client
from tests.azure.conftest import AzureUnderTest

CONDA = """\
name: scoring
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - pip: [scikit-learn==1.9.1]
"""


def _environment(registry: MLClient, tmp_path: Path) -> Environment:
    conda = tmp_path / "conda.yaml"
    conda.write_text(CONDA)
    return registry.environments.create_or_update(
        Environment(
            name="readmission-train",
            version="3",
            image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
            conda_file=str(conda),
        )
    )


def _component(
    registry: MLClient, tmp_path: Path, environment: Environment, version: str
) -> Component:
    code = tmp_path / "src"
    code.mkdir(exist_ok=True)
    (code / "prep.py").write_text("print('prep')\n")
    step = command(
        name="prep_data",
        version=version,
        display_name="Prepare data",
        command="python prep.py --raw ${{inputs.raw}}",
        code=str(code),
        environment=environment.id,
        inputs={"raw": Input(type="uri_folder")},
    )
    return registry.components.create_or_update(step.component)


def test_registry_holds_environments_and_components_that_read_back(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    registry = registry_client(fake_azure.topology.shared_registry, connection())
    environment = _environment(registry, tmp_path)
    assert environment.id.endswith("/environments/readmission-train/versions/3")
    component = _component(registry, tmp_path, environment, "1")

    got = registry.components.get("prep_data", "1")
    assert got.id == component.id
    assert got.environment == environment.id
    name = fake_azure.topology.shared_registry.name
    assert got.code.startswith(f"azureml://registries/{name}/codes/")
    assert [c.version for c in registry.components.list("prep_data")] == ["1"]
    env = registry.environments.get("readmission-train", "3")
    assert "scikit-learn==1.9.1" in str(env.conda_file)
    assert [e.version for e in registry.environments.list("readmission-train")] == ["3"]
    assert not fake_azure.fake.unhandled


def _pipeline_job(tmp_path: Path, compute: str, component_id: str) -> PipelineJob:
    """A pipeline job with one step that uses a component by id, as a YAML pipeline says it."""
    source = tmp_path / "pipeline.yml"
    source.write_text(
        f"""\
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
experiment_name: registry-components
settings:
  default_compute: azureml:{compute}
jobs:
  prep:
    type: command
    component: {component_id}
    inputs:
      raw:
        type: uri_folder
        path: azureml://datastores/workspaceblobstore/paths/raw
"""
    )
    return load_job(source)


def test_workspace_pipeline_uses_a_registry_component_only_if_the_registry_holds_it(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    topology = fake_azure.topology
    registry = registry_client(topology.shared_registry, connection())
    component = _component(registry, tmp_path, _environment(registry, tmp_path), "1")
    spec = next(iter(topology.environments.values()))
    workspace = workspace_client(spec, connection())

    job = workspace.jobs.create_or_update(_pipeline_job(tmp_path, spec.compute, component.id))
    sent = [r for r in fake_azure.fake.requests if r.method == "PUT" and "/jobs/" in r.path]
    assert sent[-1].json()["properties"]["jobs"]["prep"]["componentId"] == component.id
    assert sent[-1].status == 201 and job.status

    missing = component.id.replace("/versions/1", "/versions/2")
    with pytest.raises(HttpResponseError, match="prep_data"):
        workspace.jobs.create_or_update(_pipeline_job(tmp_path, spec.compute, missing))
    assert not fake_azure.fake.unhandled
