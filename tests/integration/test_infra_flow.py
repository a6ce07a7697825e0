"""The infra flow on the local backend: lint, plan, approval before prod, idempotent deploy."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

from audit import read_audit_log
from flows.infra import deploy_infra
from tests.integration.release_helpers import decide_when_paused

pytestmark = pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov").exists(),
    reason="checkov venv missing: make checkov-venv",
)


def test_non_prod_environments_deploy_and_a_second_plan_changes_nothing(mlops_root: Path) -> None:
    state = deploy_infra(environment="dev", return_state=True)

    assert state.type == StateType.COMPLETED, state.message
    plans = state.result()
    assert [p.environment for p in plans] == ["shared", "dev"]
    assert all(c.action == "create" for p in plans for c in p.changes)
    assert (mlops_root / "workspaces" / "mlw-readmission-dev" / "mlflow.db").exists()
    assert (mlops_root / "registries" / "mlr-readmission-shared" / "mlflow.db").exists()

    again = deploy_infra(environment="dev", return_state=True).result()
    assert all(c.action == "no change" for p in again for c in p.changes)


def test_prod_waits_for_approval_and_a_rejection_deploys_nothing_there(mlops_root: Path) -> None:
    thread = decide_when_paused("infra", False, "ivan", "change window closed")
    state = deploy_infra(environment="prod", return_state=True)
    thread.join(timeout=10)

    assert state.type == StateType.CANCELLED
    assert "rejected by ivan" in state.message
    assert not (mlops_root / "workspaces" / "mlw-readmission-prod").exists()
    assert (mlops_root / "registries" / "mlr-readmission-shared").exists()
    assert "infra-deployed" in [r.action for r in read_audit_log()]
