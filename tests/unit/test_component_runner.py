"""The local component runner runs AML pipeline YAMLs as subprocesses, in dependency order."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from backends.local.component_runner import render_command
from backends.local.workspace import LocalWorkspace
from backends.topology import load_topology
from records.workspace import PipelineFailed

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pipeline"


@pytest.fixture
def workspace(mlops_root: Path) -> LocalWorkspace:
    topology = load_topology()
    return LocalWorkspace(topology.environment("dev"), topology.local_root)


def test_optional_block_is_dropped_when_its_input_is_unset() -> None:
    command = "python s.py --a ${{inputs.a}} $[[--b ${{inputs.b}}]] --out ${{outputs.o}}"
    assert render_command(command, {"a": 1, "b": None, "o": "/x"})[1:] == [
        "s.py",
        "--a",
        "1",
        "--out",
        "/x",
    ]
    assert render_command(command, {"a": 1, "b": "y z", "o": "/x"})[1:] == [
        "s.py",
        "--a",
        "1",
        "--b",
        "y z",
        "--out",
        "/x",
    ]


def test_missing_required_input_is_a_clear_error() -> None:
    with pytest.raises(PipelineFailed, match="'a' has no value"):
        render_command("python s.py --a ${{inputs.a}}", {})


def test_steps_run_in_dependency_order_with_outputs_wired(workspace: LocalWorkspace) -> None:
    run = workspace.run_pipeline(FIXTURES / "two_steps.yml", {})
    assert [s.name for s in run.steps] == ["first", "second"]
    assert (Path(run.outputs["result"]) / "text.txt").read_text() == "hello-world"
    for step in run.steps:
        assert "run id from the runner" in Path(step.log_path).read_text()


def test_step_runs_are_nested_under_the_pipeline_run(workspace: LocalWorkspace) -> None:
    run = workspace.run_pipeline(FIXTURES / "two_steps.yml", {})
    client = MlflowClient(workspace.tracking_uri)
    for step in run.steps:
        child = client.get_run(step.run_id)
        assert child.data.tags["mlflow.parentRunId"] == run.run_id
        assert child.info.status == "FINISHED"
    assert client.get_run(run.steps[1].run_id).data.metrics["length"] == len("hello-world")
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_failed_step_names_itself_and_its_log(workspace: LocalWorkspace) -> None:
    with pytest.raises(PipelineFailed) as error:
        workspace.run_pipeline(FIXTURES / "two_steps.yml", {"second_fails": "yes"})
    message = str(error.value)
    assert "step 'second'" in message and "code 3" in message
    assert "failing on purpose" in message and "std_log.txt" in message
    runs = MlflowClient(workspace.tracking_uri).search_runs(
        [workspace.experiment_id("runner-tests")]
    )
    assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}


def test_unknown_pipeline_input_is_refused(workspace: LocalWorkspace) -> None:
    with pytest.raises(PipelineFailed, match="no inputs named"):
        workspace.run_pipeline(FIXTURES / "two_steps.yml", {"typo": 1})


def test_data_asset_versions_follow_content(workspace: LocalWorkspace, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    first = workspace.register_data("d", data)
    assert workspace.register_data("d", data) == first
    data.write_text("a\n2\n")
    second = workspace.register_data("d", data)
    assert (first.version, second.version) == ("1", "2")
    assert first.content_hash != second.content_hash
