"""One contract for both backends: what flows and tasks rely on from Workspace, ModelRegistry,
Endpoints and Infrastructure, run against the local backend for real and against the azure
backend through the real SDKs on the fake Azure REST API (tests/azure/fake_arm.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import backends.azure
import backends.local
from backends.pipeline_assets import (
    AssetsNotPromoted,
    PipelineAssets,
    component_name,
    registry_reference,
    working_tree_assets,
    workspace_references,
)
from backends.topology import Topology, load_topology
from backends.traffic_rules import RequestRefused
from records import aliases, lineage_tags
from records.serving import DeploymentFailed
from records.workspace import ModelVersion
from tests.azure.conftest import AzureUnderTest
from tests.azure.fake.http import Reply, SeenRequest
from tests.endpoints.models import save_broken_model, save_trained_model

REPO = Path(__file__).resolve().parents[2]
MODEL = "readmission"


@dataclass
class Backend:
    """A backend under contract, with the few hooks a test needs to arrange the world."""

    name: str
    module: ModuleType
    topology: Topology
    azure: AzureUnderTest | None

    def workspace(self, environment: str = "test") -> Any:
        return self.module.open_workspace(self.topology.environment(environment), self.topology)

    def registry(self) -> Any:
        return self.module.open_shared_registry(self.topology)

    def endpoints(self, environment: str = "test") -> Any:
        return self.module.open_endpoints(self.workspace(environment))

    def job_will_output(self, experiment: str, outputs: dict[str, Path]) -> None:
        """Azure: what the fake's job writes to storage. Local: the components write it."""
        if self.azure is not None:
            self.azure.fake.job_outputs[experiment] = outputs

    def stored_versions(self, kind: str, name: str, environment: str | None = None) -> list[str]:
        """The versions of a component or environment that a workspace (`environment`) or the
        shared registry (None) holds. Azure: the fake's state; local: the store's folders."""
        if self.azure is None:
            holder = self.workspace(environment) if environment else self.registry()
            folder = holder.assets.version_dir(kind, name, "x").parent
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        fake = self.azure.fake
        store = (
            fake.workspace(self.topology.environment(environment).workspace)
            if environment
            else fake.registries[self.topology.shared_registry.name.lower()]
        )
        return sorted(getattr(store, f"{kind}s").get(name, {}))

    def writes(self) -> int:
        """How many writes (anything but GET/HEAD) the fake Azure has answered; 0 locally."""
        if self.azure is None:
            return 0
        return sum(r.method not in ("GET", "HEAD") for r in self.azure.fake.requests)


@pytest.fixture(params=["local", "azure"])
def backend(request: pytest.FixtureRequest, mlops_root: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield Backend("local", backends.local, load_topology(), None)
        from backends.local.endpoints import stop_all

        for workspace in (mlops_root / "workspaces").glob("*"):
            stop_all(workspace)
    else:
        azure: AzureUnderTest = request.getfixturevalue("fake_azure")
        azure.fake.serve_scoring()  # deployments run the scoring script, as locally
        yield Backend("azure", backends.azure, azure.topology, azure)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline and component YAMLs, byte for byte, in a folder holding only what their
    snapshots need (`code: ./src` plus `additional_includes: [../data_checks]`)."""
    root = tmp_path_factory.mktemp("repo")
    for part in ("components", "data_checks"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".amlignore", root / ".amlignore")
    return root / "components" / "pipelines"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real MLflow model folder (as the training component writes it) and a broken copy,
    which fails the scoring script's init() on both backends."""
    root = tmp_path_factory.mktemp("contract-models")
    good = save_trained_model(root / "good", rows=800)
    return good, save_broken_model(good, root / "broken")


def csv(path: Path, rows: str) -> Path:
    path.write_text("age,readmitted_30d\n" + rows)
    return path


def register(workspace: Any, model_dir: Path, run: str) -> ModelVersion:
    return workspace.register_model(
        MODEL,
        str(model_dir),
        f"train-{run}",
        {lineage_tags.PIPELINE_RUN_ID: run, lineage_tags.GATE: "passed"},
        "test",
    )


def files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


# --- data ---------------------------------------------------------------------------------------


def test_a_data_asset_gets_a_new_version_only_when_its_content_changes(
    backend: Backend, tmp_path: Path
) -> None:
    workspace = backend.workspace("dev")
    first = workspace.register_data("readmissions", csv(tmp_path / "a.csv", "70,1\n"))
    again = workspace.register_data("readmissions", csv(tmp_path / "b.csv", "70,1\n"))
    changed = workspace.register_data("readmissions", csv(tmp_path / "c.csv", "71,0\n"))
    back = workspace.register_data("readmissions", csv(tmp_path / "d.csv", "70,1\n"))

    assert (first.version, again.version, changed.version, back.version) == ("1", "1", "2", "1")
    assert first.content_hash == again.content_hash != changed.content_hash
    assert again.path == first.path


# --- models -------------------------------------------------------------------------------------


def test_registering_the_same_pipeline_run_twice_makes_one_version(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    first = register(workspace, model_dirs[0], "run-a")
    retried = register(workspace, model_dirs[0], "run-a")
    other = register(workspace, model_dirs[0], "run-b")

    assert retried == first
    assert (first.version, other.version) == ("1", "2")
    assert [v.version for v in workspace.list_model_versions(MODEL)] == ["1", "2"]
    assert (
        first.tags[lineage_tags.PIPELINE_RUN_ID] == "run-a"
        and other.tags[lineage_tags.PIPELINE_RUN_ID] == "run-b"
    )
    assert workspace.list_model_versions("never-registered") == []


def test_an_alias_points_at_exactly_one_version(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    one, two = (register(workspace, model_dirs[0], run) for run in ("run-a", "run-b"))

    assert workspace.get_model(MODEL, aliases.CHAMPION) is None
    workspace.set_model_alias(MODEL, aliases.CHAMPION, one.version)
    workspace.set_model_alias(MODEL, aliases.CHALLENGER, two.version)
    assert workspace.get_model(MODEL, aliases.CHAMPION).version == "1"

    workspace.set_model_alias(MODEL, aliases.CHAMPION, two.version)
    workspace.set_model_alias(MODEL, aliases.CHAMPION, two.version)  # idempotent

    champion = workspace.get_model(MODEL, aliases.CHAMPION)
    assert champion.version == "2"
    assert set(champion.aliases) == {aliases.CHAMPION, aliases.CHALLENGER}
    assert not any(key.startswith("alias.") for key in champion.tags)
    held = {v.version: set(v.aliases) for v in workspace.list_model_versions(MODEL)}
    assert held == {"1": set(), "2": {aliases.CHAMPION, aliases.CHALLENGER}}


def test_model_path_holds_the_registered_files(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    version = register(workspace, model_dirs[0], "run-a")

    local = workspace.model_path(version)

    assert (local / "MLmodel").is_file()
    assert files(local) == files(model_dirs[0])


def test_promotion_copies_once_with_its_lineage_and_keeps_aliases_apart(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    registry = backend.registry()
    candidate = register(workspace, model_dirs[0], "run-a")
    workspace.set_model_alias(MODEL, aliases.CHAMPION, candidate.version)
    approval = {lineage_tags.SOURCE_WORKSPACE: workspace.name, lineage_tags.APPROVED_BY: "dr.who"}

    promoted = registry.promote(candidate, workspace.model_path(candidate), approval, "ok")
    retried = registry.promote(candidate, workspace.model_path(candidate), approval, "ok")

    assert retried == promoted
    assert [v.version for v in registry.list_model_versions(MODEL)] == [promoted.version]
    assert (
        promoted.tags[lineage_tags.PROMOTED_FROM] == f"{workspace.name}:{MODEL}:{candidate.version}"
    )
    assert promoted.tags[lineage_tags.APPROVED_BY] == "dr.who"
    assert promoted.tags[lineage_tags.PIPELINE_RUN_ID] == "run-a"
    assert promoted.tags[lineage_tags.SOURCE_RUN_ID] == "train-run-a"
    assert registry.get_model(MODEL, aliases.CHAMPION) is None  # the workspace's alias stays there
    registry.set_model_alias(MODEL, aliases.CHALLENGER, promoted.version)
    assert registry.get_model(MODEL, aliases.CHALLENGER).version == promoted.version
    assert files(registry.model_path(promoted)) == files(model_dirs[0])


# --- pipelines ----------------------------------------------------------------------------------


def validation_will_pass(backend: Backend, tmp_path: Path) -> Path:
    """The data validation job will report a pass; the sample it validates."""
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"passed": True}))
    backend.job_will_output("readmission-data-validation", {"validate.report": report})
    data = tmp_path / "sample.csv"
    from synthetic_data.readmissions import generate_readmissions

    generate_readmissions(200, seed=3).to_csv(data, index=False)
    return data


def test_a_pipeline_run_brings_its_named_outputs_home(
    backend: Backend, pipelines: Path, tmp_path: Path
) -> None:
    data = validation_will_pass(backend, tmp_path)

    run = backend.workspace("dev").run_pipeline(
        pipelines / "validate_data.yml", {"raw_data": str(data)}, run_name="validate sample"
    )

    assert run.status == "Completed"
    assert [s.name for s in run.steps] == ["validate"]
    assert run.step("validate").status == "Completed"
    assert (Path(run.outputs["report"]) / "report.json").is_file()
    assert run.outputs["validate.report"] == run.outputs["report"]


# --- pipeline assets ----------------------------------------------------------------------------


def test_pipeline_assets_are_registered_once_per_content_version(backend: Backend) -> None:
    assets = working_tree_assets()
    first = backend.workspace("dev").register_pipeline_assets(assets)
    writes = backend.writes()
    again = backend.workspace("dev").register_pipeline_assets(assets)  # a re-run, new process

    assert (
        again
        == first
        == workspace_references(backend.topology.environment("dev").workspace, assets)
    )
    assert backend.writes() == writes, "a second registration sent writes"
    for kind, asset in assets.each():
        assert backend.stored_versions(kind, asset.name, "dev") == [asset.version], asset.name
    assert {c.name for c in assets.components} == set(first.components)
    assert set(first.environments) == {"readmission-train", "readmission-inference"}


def test_publishing_pipeline_assets_to_the_shared_registry_is_idempotent(backend: Backend) -> None:
    assets = working_tree_assets()
    registry_name = backend.topology.shared_registry.name
    published = backend.registry().publish_pipeline_assets(assets)
    writes = backend.writes()
    again = backend.registry().publish_pipeline_assets(assets)

    assert again == published
    assert backend.writes() == writes, "a second publication sent writes"
    assert published.store == registry_name and published.digest == assets.digest
    for kind, asset in assets.each():
        assert backend.stored_versions(kind, asset.name) == [asset.version], asset.name
        references = published.components if kind == "component" else published.environments
        assert references[asset.name] == registry_reference(
            registry_name, kind, asset.name, asset.version
        )
    assert backend.registry().pipeline_asset_references(assets) == published


def test_references_to_an_unpromoted_component_change_are_refused_naming_it(
    backend: Backend,
) -> None:
    assets = working_tree_assets()
    registry = backend.registry()
    with pytest.raises(AssetsNotPromoted, match="train-dev"):
        registry.pipeline_asset_references(assets)  # nothing promoted yet
    registry.publish_pipeline_assets(assets)
    train = next(
        c
        for c in assets.components
        if c.name == component_name(REPO / "components" / "train_model.yml")
    )
    edited = dataclasses.replace(train, version="0" * 16)  # the working tree changed train
    changed = PipelineAssets(
        tuple(edited if c is train else c for c in assets.components), assets.environments
    )
    writes = backend.writes()

    with pytest.raises(AssetsNotPromoted) as refused:
        registry.pipeline_asset_references(changed)

    message = str(refused.value)
    assert f"component {train.name} version {'0' * 16}" in message
    assert "components/train_model.yml" in message and "train-dev" in message
    assert not any(c.name in message for c in assets.components if c.name != train.name), (
        "names only what is missing"
    )
    assert backend.writes() == writes, "resolving references writes nothing"


def test_a_pipeline_run_from_the_registry_runs_and_reports_its_components(
    backend: Backend, pipelines: Path, tmp_path: Path
) -> None:
    assets = working_tree_assets()
    backend.registry().publish_pipeline_assets(assets)
    references = backend.registry().pipeline_asset_references(assets)
    data = validation_will_pass(backend, tmp_path)

    run = backend.workspace("test").run_pipeline(
        pipelines / "validate_data.yml", {"raw_data": str(data)}, assets=references
    )

    validate = component_name(REPO / "components" / "validate_data.yml")
    assert run.status == "Completed"
    assert dict(run.components) == {"validate": references.components[validate]}
    assert run.components["validate"].startswith("azureml://registries/")
    assert (Path(run.outputs["report"]) / "report.json").is_file()
    if backend.azure is not None:  # what was submitted: the registry's ids, as they are
        submitted = [
            r.json()["properties"]["jobs"]
            for r in backend.azure.fake.requests
            if r.method == "PUT" and "/jobs/" in r.path
        ]
        assert [{s: j["componentId"] for s, j in jobs.items()} for jobs in submitted] == [
            dict(run.components)
        ]


# --- endpoints ----------------------------------------------------------------------------------


def test_blue_green_with_mirror_then_shift_then_cleanup(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    endpoints = backend.endpoints()
    one, two = (register(workspace, model_dirs[0], run) for run in ("run-a", "run-b"))

    assert endpoints.get_endpoint("readm-test") is None
    created = endpoints.create_or_update_endpoint("readm-test")
    assert created.deployments == () and created.serving() is None
    assert endpoints.create_or_update_endpoint("readm-test").name == "readm-test"  # idempotent

    blue = endpoints.create_or_update_deployment(
        "readm-test", "blue", one, workspace.model_path(one)
    )
    assert (blue.name, blue.model_version, blue.state) == ("blue", "1", "Succeeded")
    assert endpoints.set_traffic("readm-test", {"blue": 100}, None).serving() == "blue"

    endpoints.create_or_update_deployment("readm-test", "green", two, workspace.model_path(two))
    mirrored = endpoints.set_traffic("readm-test", {"blue": 100, "green": 0}, {"green": 20})
    assert live(mirrored.traffic) == {"blue": 100} and dict(mirrored.mirror_traffic) == {
        "green": 20
    }

    shifted = endpoints.set_traffic("readm-test", {"blue": 0, "green": 100}, None)
    assert shifted.serving() == "green" and live(shifted.mirror_traffic) == {}
    assert endpoints.get_key("readm-test")

    endpoints.delete_deployment("readm-test", "blue")
    endpoints.delete_deployment("readm-test", "blue")  # already gone: not an error
    remaining = endpoints.get_endpoint("readm-test")
    assert [(d.name, d.model_version) for d in remaining.deployments] == [("green", "2")]

    endpoints.delete_endpoint("readm-test")
    endpoints.delete_endpoint("readm-test")
    assert endpoints.get_endpoint("readm-test") is None


def test_a_deployment_that_fails_to_provision_leaves_traffic_on_the_old_one(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    endpoints = backend.endpoints()
    good = register(workspace, model_dirs[0], "run-a")
    broken = register(workspace, model_dirs[1], "run-broken")
    endpoints.create_or_update_endpoint("readm-fail")
    endpoints.create_or_update_deployment("readm-fail", "blue", good, workspace.model_path(good))
    endpoints.set_traffic("readm-fail", {"blue": 100}, None)

    with pytest.raises(DeploymentFailed, match="green"):
        endpoints.create_or_update_deployment(
            "readm-fail", "green", broken, workspace.model_path(broken)
        )

    after = endpoints.get_endpoint("readm-fail")
    assert live(after.traffic) == {"blue": 100} and after.serving() == "blue"
    endpoints.delete_endpoint("readm-fail")


# --- traffic rules (backends/traffic_rules.py: Azure's, on both backends and on the fake) -------

REFUSED_ROUTINGS = [
    pytest.param({"blue": 100, "teal": 0}, None, "no deployments \\['teal'\\]", id="names-exist"),
    pytest.param({"blue": 150, "green": -50}, None, "whole percent 0-100", id="whole-percents"),
    pytest.param({"blue": 90}, None, "adds up to 90%; it must add up to 100%", id="sum-100-or-0"),
    pytest.param(
        {"blue": 0, "green": 0}, {"blue": 10, "green": 10}, "one deployment", id="one-mirror"
    ),
    pytest.param({"blue": 100}, {"green": 60}, "mirror at most 50%", id="mirror-cap"),
    pytest.param({"blue": 50, "green": 50}, {"green": 10}, "never both", id="live-or-mirrored"),
]


def test_traffic_azure_refuses_is_refused_on_both_backends_naming_the_rule(
    backend: Backend, model_dirs: tuple[Path, Path]
) -> None:
    workspace = backend.workspace()
    endpoints = backend.endpoints()
    one, two = (register(workspace, model_dirs[0], run) for run in ("run-a", "run-b"))
    endpoints.create_or_update_endpoint("readm-rules")
    endpoints.create_or_update_deployment("readm-rules", "blue", one, workspace.model_path(one))
    endpoints.create_or_update_deployment("readm-rules", "green", two, workspace.model_path(two))
    endpoints.set_traffic("readm-rules", {"blue": 100}, None)
    before = endpoints.get_endpoint("readm-rules")

    for case in REFUSED_ROUTINGS:
        traffic, mirror, reason = case.values
        with pytest.raises(RequestRefused, match=reason):
            endpoints.set_traffic("readm-rules", traffic, mirror)
    with pytest.raises(RequestRefused, match="still takes 100% of live"):
        endpoints.delete_deployment("readm-rules", "blue")

    after = endpoints.get_endpoint("readm-rules")
    assert live(after.traffic) == live(before.traffic) == {"blue": 100}
    assert live(after.mirror_traffic) == {} and after.deployments == before.deployments
    disabled = endpoints.set_traffic("readm-rules", {"blue": 0, "green": 0}, None)
    assert live(disabled.traffic) == {} and disabled.serving() is None  # 0% disables traffic
    endpoints.delete_endpoint("readm-rules")


def test_the_fake_refuses_each_traffic_rule_as_azure_answers(
    fake_azure: AzureUnderTest, model_dirs: tuple[Path, Path]
) -> None:
    """Straight to the fake's REST API, past the backend's own check: each refused routing is
    a 400 UserError with a BadArgument detail whose message names the rule, and the endpoint
    keeps its routing; then traffic to a deployment that is not running, and deleting one that
    takes live traffic, are refused the same way. One endpoint for every case (a deployment
    starts an inference server: seconds each)."""
    endpoint = deployed_on_the_fake(fake_azure, model_dirs[0])

    for case in REFUSED_ROUTINGS:
        traffic, mirror, reason = case.values
        refused = put_routing(fake_azure, endpoint, traffic, mirror or {})
        assert refused.status == 400, case.id
        error = refused.body["error"]
        assert (error["code"], error["details"][0]["code"]) == ("UserError", "BadArgument")
        assert re.search(reason, error["details"][0]["message"]), case.id
        assert live(endpoint["properties"]["traffic"]) == {"blue": 100}, case.id

    ws = fake_azure.fake.workspace(fake_azure.topology.environment("test").workspace)
    ws.deployments["readm-rules"]["green"]["properties"]["provisioningState"] = "Failed"
    down = put_routing(fake_azure, endpoint, {"blue": 100}, {"green": 10})
    deleted = fake_request(fake_azure, "DELETE", f"{endpoint['id']}/deployments/blue")

    assert down.status == deleted.status == 400
    assert "['green'] are not running" in down.body["error"]["details"][0]["message"]
    assert "still takes 100% of live" in deleted.body["error"]["details"][0]["message"]
    assert set(ws.deployments["readm-rules"]) == {"blue", "green"}


def deployed_on_the_fake(azure: AzureUnderTest, model_dir: Path) -> dict[str, Any]:
    """Endpoint readm-rules with blue (100% live) and green (idle), made through the backend;
    the fake's stored endpoint resource."""
    workspace = backends.azure.open_workspace(azure.topology.environment("test"), azure.topology)
    endpoints = backends.azure.open_endpoints(workspace)
    model = register(workspace, model_dir, "run-a")
    endpoints.create_or_update_endpoint("readm-rules")
    for name in ("blue", "green"):
        endpoints.create_or_update_deployment("readm-rules", name, model, model_dir)
    endpoints.set_traffic("readm-rules", {"blue": 100}, None)
    stored = azure.fake.workspace(workspace.name).endpoints["readm-rules"]
    return stored


def put_routing(
    azure: AzureUnderTest, endpoint: dict[str, Any], traffic: dict, mirror: dict
) -> Reply:
    body = {
        "location": endpoint["location"],
        "identity": endpoint["identity"],
        "properties": endpoint["properties"] | {"traffic": traffic, "mirrorTraffic": mirror},
    }
    return fake_request(azure, "PUT", endpoint["id"], body)


def fake_request(azure: AzureUnderTest, method: str, path: str, body: Any = None) -> Reply:
    token = azure.credential.get_token("https://management.azure.com/.default").token
    url = f"https://management.azure.com{path}?api-version=2023-04-01-preview"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else b""
    return azure.fake.handle(SeenRequest(method, url, headers, data))


def live(weights: Any) -> dict[str, int]:
    """Weights above zero (Azure lists every deployment, with 0 for those without traffic)."""
    return {name: int(pct) for name, pct in dict(weights).items() if int(pct) > 0}


def test_infrastructure_plans_what_it_creates_then_converges(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # azure: the Bicep CLI stand-in (no Bicep CLI here; see test_infra_on_azure.py)
    monkeypatch.setenv(
        "MLOPS_BICEP", str(REPO / "tests" / "azure" / "fixtures" / "bicep" / "bicep")
    )
    if backend.azure is not None:  # the fake starts as infra left it: plan from nothing
        backend.azure.fake.arm_resources.clear()
    infra = backend.module.open_infrastructure(backend.topology)

    for environment in ("shared", "dev"):
        plan = infra.what_if(environment)
        assert plan.has_changes()
        assert {c.action for c in plan.changes} <= {"create", "unknown"}, plan.changes
        infra.deploy(environment)
        again = infra.what_if(environment)
        assert not again.has_changes(), [c for c in again.changes if c.action != "no change"]
