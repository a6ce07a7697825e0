"""The release flow end to end: real Prefect server, real endpoint processes, real registries.

The scenarios share one local backend and build on each other the way a team's week would:
a first approved release, a rejection (after invalid input), a timeout, a second release that
goes green, a rollback, and a release whose rollout fails its health check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.schemas.objects import StateType
from typer.testing import CliRunner

import backends
from audit import read_audit_log
from backends.local.endpoints import stop_all
from flows.release import release
from flows.rollback import rollback
from mlops_cli.main import app
from records import aliases, lineage_tags
from settings import config_dir, load_release_settings, load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import split_body
from tests.integration.release_helpers import (
    Approver,
    assert_refused_then_rejected,
    assert_test_endpoint_deleted,
    publish_working_tree_assets,
)

MODEL = load_training_settings().model_name
SETTINGS = load_release_settings()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):
    """One local backend for the module; every endpoint server is stopped at the end."""
    root = tmp_path_factory.mktemp("release") / "mlops"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLOPS_ROOT", str(root))
    # 8k-row samples: the champion comparison's noise is bigger than the default margin
    config = root.parent / "config"
    shutil.copytree(config_dir(), config)
    training = yaml.safe_load((config / "training.yaml").read_text())
    training["gate"]["champion_min_delta"] = -0.05
    (config / "training.yaml").write_text(yaml.safe_dump(training))
    patch.setenv("MLOPS_CONFIG_DIR", str(config))
    publish_working_tree_assets()
    yield root
    for workspace in (root / "workspaces").glob("*"):
        stop_all(workspace)
    patch.undo()


@pytest.fixture(scope="module")
def data(backend: Path) -> dict[str, str]:
    paths = {}
    for name, seed in (("first", 21), ("second", 22), ("third", 23), ("fourth", 24)):
        path = backend.parent / f"{name}.csv"
        generate_readmissions(8_000, seed=seed).to_csv(path, index=False)
        paths[name] = str(path)
    return paths


def run_release(data_path: str, approver: Approver | None, **kwargs):
    if approver is not None:
        approver.start()
    state = release(data_path=data_path, return_state=True, **kwargs)
    if approver is not None:
        approver.join(timeout=60)
        assert approver.error is None, approver.error
    return state


def prod():
    return backends.endpoints("prod").get_endpoint(SETTINGS.prod_endpoint)


def shared_versions() -> list[str]:
    return [v.version for v in backends.shared_registry().list_model_versions(MODEL)]


def score_prod(rows: int = 20) -> httpx.Response:
    endpoint = prod()
    key = backends.endpoints("prod").get_key(SETTINGS.prod_endpoint)
    features = generate_readmissions(rows, seed=5).drop(columns=["readmitted_30d"])
    return httpx.post(
        endpoint.scoring_uri,
        json=split_body(features),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


class ReleaseSettings(dict):
    """release.yaml of a config folder of the test's own, written back by `save`."""

    def __init__(self, path: Path) -> None:
        super().__init__(yaml.safe_load(path.read_text()))
        self.path = path

    def save(self) -> None:
        self.path.write_text(yaml.safe_dump(dict(self)))


def stricter_release_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReleaseSettings:
    """A copy of the module's config (its lenient training settings) that this test's
    releases read; the caller tightens release.yaml and saves it."""
    strict = tmp_path / "config"
    shutil.copytree(config_dir(), strict)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(strict))
    return ReleaseSettings(strict / "release.yaml")


def test_approved_release_is_promoted_and_serves_in_prod(backend: Path, data: dict) -> None:
    state = run_release(data["first"], Approver(approved=True, name_="alice"))

    assert state.type == StateType.COMPLETED, state.message
    promoted = state.result()
    registry = backends.shared_registry()
    assert shared_versions() == ["1"]
    champion = registry.get_model(MODEL, aliases.CHAMPION)
    assert champion is not None and champion.version == promoted.version
    assert champion.tags[lineage_tags.APPROVED_BY] == "alice"
    assert (
        champion.tags[lineage_tags.DATA_ASSET] == "readmissions"
        and champion.tags[lineage_tags.GIT_COMMIT]
    )
    endpoint = prod()
    assert dict(endpoint.traffic) == {"blue": 100}
    response = score_prod()
    assert response.status_code == 200
    assert response.json()["model"]["version"] == promoted.version
    assert_test_endpoint_deleted(state)
    actions = [(r.action, r.actor) for r in read_audit_log()]
    assert ("approved", "alice") in actions and ("promoted", "alice") in actions
    assert {"deployed", "traffic", "champion"} <= {a for a, _ in actions}

    # The promoted version's model card came along with its files, and shows the approval.
    card = CliRunner().invoke(app, ["card", MODEL, promoted.version])
    assert card.exit_code == 0, card.output
    assert f"in the shared registry {registry.name}" in card.output
    assert f"`{champion.tags[lineage_tags.DATA_SHA256]}`" in card.output
    assert "Approved for production by **alice** at " in card.output


def test_invalid_input_is_refused_then_a_rejection_promotes_nothing(
    backend: Path, data: dict
) -> None:
    traffic_before = dict(prod().traffic)
    approver = Approver(
        approved=False, name_="bob", reason="AUC gain too small", try_invalid_first=True
    )

    state = run_release(data["second"], approver)

    assert_refused_then_rejected(approver, state, rejected_by="bob")
    assert shared_versions() == ["1"]
    assert dict(prod().traffic) == traffic_before
    assert score_prod().status_code == 200
    assert ("rejected", "bob") in [(r.action, r.actor) for r in read_audit_log()]


def test_timed_out_approval_promotes_nothing(backend: Path, data: dict) -> None:
    state = run_release(data["second"], None, approval_timeout_seconds=3)

    # The server fails a run whose pause times out ("never resumed"); the flow's own message
    # goes to the audit log, where the timeout is recorded with what it means.
    assert state.type == StateType.FAILED
    timeouts = [r for r in read_audit_log() if r.action == "approval-timed-out"]
    assert len(timeouts) == 1 and "No approval decision within 3 s" in timeouts[0].reason
    assert "nothing was promoted" in timeouts[0].reason
    assert shared_versions() == ["1"]
    assert dict(prod().traffic) == {"blue": 100}


def test_second_release_goes_green_and_rollback_returns_blue(backend: Path, data: dict) -> None:
    state = run_release(data["third"], Approver(approved=True, name_="carol"))
    assert state.type == StateType.COMPLETED, state.message
    assert shared_versions() == ["1", "2"]
    endpoint = prod()
    assert dict(endpoint.traffic) == {"blue": 0, "green": 100}
    assert {d.name: d.model_version for d in endpoint.deployments} == {"blue": "1", "green": "2"}
    assert score_prod().json()["model"]["version"] == "2"

    back = rollback(reason="complaints from the ward", actor="dave", return_state=True)

    assert back.type == StateType.COMPLETED, back.message
    assert dict(prod().traffic)["blue"] == 100
    assert backends.shared_registry().get_model(MODEL, aliases.CHAMPION).version == "1"
    assert score_prod().json()["model"]["version"] == "1"
    assert ("rollback", "dave") in [(r.action, r.actor) for r in read_audit_log()]


def test_failing_health_check_mid_shift_returns_traffic_to_the_old_colour(
    backend: Path, data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stricter_release_settings(tmp_path, monkeypatch)
    settings["rollout"]["steps"][2]["max_p95_ms"] = 0.001  # the 50% step cannot pass
    settings.save()
    before = dict(prod().traffic)
    serving_colour = prod().serving()

    state = run_release(data["fourth"], Approver(approved=True, name_="erin"))

    assert state.type == StateType.FAILED
    assert "failed step 3 (50% live)" in str(state.result(raise_on_failure=False))
    assert dict(prod().traffic) == before and prod().serving() == serving_colour
    assert backends.shared_registry().get_model(MODEL, aliases.CHAMPION).version == "1"
    assert score_prod().status_code == 200


def test_failed_integration_tests_delete_the_test_endpoint_and_promote_nothing(
    backend: Path, data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stricter_release_settings(tmp_path, monkeypatch)
    settings["integration"]["p95_budget_ms"] = 0.001  # no endpoint answers that fast
    settings.save()
    versions, traffic = shared_versions(), dict(prod().traffic)

    state = run_release(data["fourth"], None)

    assert state.type == StateType.FAILED
    assert "latency" in str(state.result(raise_on_failure=False))
    assert_test_endpoint_deleted(state)
    assert shared_versions() == versions and dict(prod().traffic) == traffic
