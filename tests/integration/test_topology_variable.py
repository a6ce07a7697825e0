"""The topology as a Prefect Variable: `mlops config push` stores it, deployments read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.variables import Variable
from typer.testing import CliRunner

from backends.topology import DEFAULT_TOPOLOGY, load_topology
from mlops_cli.main import app

NAME = "mlops_topology_test"


@pytest.fixture
def variable(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MLOPS_TOPOLOGY_VARIABLE", NAME)
    monkeypatch.delenv("MLOPS_TOPOLOGY", raising=False)
    monkeypatch.delenv("MLOPS_BACKEND", raising=False)
    yield NAME
    Variable.unset(NAME)


def test_pushed_topology_is_what_flows_load_and_a_missing_one_falls_back(
    variable: str, tmp_path: Path
) -> None:
    assert load_topology().environments["prod"].workspace == "mlw-readmission-prod"  # the file

    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    raw["backend"] = "azure"
    raw["environments"]["prod"]["subscription_id"] = "11111111-2222-3333-4444-555555555555"
    edited = tmp_path / "environments.yaml"
    edited.write_text(yaml.safe_dump(raw))
    pushed = CliRunner().invoke(
        app, ["config", "push", "--file", str(edited), "--variable", variable]
    )
    assert pushed.exit_code == 0, pushed.output

    topology = load_topology()
    assert topology.backend == "azure"
    assert topology.environments["prod"].subscription_id.startswith("11111111")
    shown = CliRunner().invoke(app, ["config", "show"])
    assert "azure" in shown.output and "11111111" in shown.output

    Variable.unset(variable)
    assert load_topology().backend == "local"


def test_an_incomplete_topology_is_refused_before_it_is_stored(
    variable: str, tmp_path: Path
) -> None:
    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    del raw["shared_registry"]
    broken = tmp_path / "environments.yaml"
    broken.write_text(yaml.safe_dump(raw))

    pushed = CliRunner().invoke(
        app, ["config", "push", "--file", str(broken), "--variable", variable]
    )

    assert pushed.exit_code != 0
    assert "incomplete" in str(pushed.exception)
    assert Variable.get(variable) is None
