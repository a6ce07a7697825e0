"""How a local deployment is laid out and remembered: the model where Azure mounts it, and the
state a restarted endpoint needs (including state written before deployments ran the script)."""

from __future__ import annotations

from pathlib import Path

import orjson

from backends.local.deployment_process import azure_model_dir
from backends.local.endpoint_state import DeploymentProcess, DeploymentSpec, EndpointState


def test_the_model_is_laid_out_as_azure_mounts_it_and_its_mlmodel_is_found(
    tmp_path: Path,
) -> None:
    model = tmp_path / "registry" / "readmission-v3"
    (model / "nested").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "nested" / "weights.bin").write_bytes(b"\0")
    spec = DeploymentSpec("blue", "readmission", "3", str(model), code="/code")

    model_dir = azure_model_dir(spec, tmp_path / "instance" / "model")

    assert model_dir == tmp_path / "instance/model/azureml-models/readmission/3"
    found = sorted(model_dir.rglob("MLmodel"))  # what the scoring script's lookup does
    assert found == [model_dir / "readmission-v3" / "MLmodel"]
    assert found[0].resolve() == model / "MLmodel"
    assert (
        model_dir / "readmission-v3/nested/weights.bin"
    ).resolve() == model / "nested/weights.bin"
    assert azure_model_dir(spec, tmp_path / "instance" / "model") == model_dir  # idempotent


def test_a_missing_model_folder_leaves_an_empty_version_folder_for_the_script_to_refuse(
    tmp_path: Path,
) -> None:
    spec = DeploymentSpec("blue", "readmission", "4", str(tmp_path / "missing"), code="/code")

    model_dir = azure_model_dir(spec, tmp_path / "model")

    assert list(model_dir.rglob("MLmodel")) == []


def test_state_round_trips_deployments_and_their_processes() -> None:
    spec = DeploymentSpec(
        "blue",
        "readmission",
        "3",
        "/models/3",
        code="/endpoint/code/abc",
        environment="/venvs/inference-x",
        variables={"WORKER_COUNT": "2", "MODEL_THRESHOLD": "0.3"},
        request_timeout_ms=5_000,
        start_timeout_s=310.0,
    )
    state = EndpointState(
        "ep",
        "key",
        port=8000,
        pid=42,
        deployments={"blue": spec},
        traffic={"blue": 100},
        processes={"blue": DeploymentProcess(4242, 9000, "blue-0a1b2c")},
    )

    again = EndpointState.from_json(state.to_json())

    assert again == state
    assert not again.deployments["blue"].is_legacy
    assert "threshold" not in orjson.loads(state.to_json())["deployments"]["blue"]


def test_state_from_before_deployments_ran_the_script_reads_as_legacy() -> None:
    written_before = orjson.dumps(
        {
            "endpoint": "ep",
            "key": "key",
            "port": 8000,
            "pid": 42,
            "deployments": {
                "blue": {
                    "name": "blue",
                    "model_name": "readmission",
                    "model_version": "2",
                    "model_path": "/models/2",
                    "threshold": 0.35,
                }
            },
            "traffic": {"blue": 100},
            "mirror_traffic": {},
        }
    )

    state = EndpointState.from_json(written_before)

    blue = state.deployments["blue"]
    assert blue.is_legacy and blue.threshold == 0.35 and state.processes == {}
