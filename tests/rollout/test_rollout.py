"""The prod rollout on both backends: each step baked on the traffic it really served, judged
once the metrics cover the window, against fixed limits and the old deployment.

Local: the endpoint process's own counters (with Azure Monitor's lateness rehearsed where a
test asks). Azure: the real azure-ai-ml calls and Azure Monitor queries against the fake, whose
metrics come in grains published after an ingestion delay (grains of 1 s here, so a bake lasts
seconds; Azure's smallest is PT1M).

Users are a background thread sending single rows through the endpoint's normal route; the
candidate deployments are a second good model, a fragile one (fails on patients over 95, whom
only users send), a slow one (a 1,500-tree forest) and an inverted one (fast and error-free,
trained on inverted labels: only the mirror step's shadow comparison can tell).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.states import Cancelling
from typer.testing import CliRunner

import backends
import backends.azure
import backends.local
from audit import read_audit_log
from data_checks.readmission_schema import LABEL
from mlops_cli.main import app
from records import lineage_tags
from records.workspace import ModelVersion
from settings import config_dir, load_release_settings
from synthetic_data.readmissions import generate_readmissions
from tasks.release.integration_tests import split_body
from tasks.rollout.record import read_record
from tasks.rollout.steps import RolloutFailed, RolloutStopped, shift_traffic
from tasks.rollout.stop import stop_rollout, stop_rollout_of_cancelled_run
from tests.azure.conftest import AzureUnderTest, azure_under_test
from tests.endpoints.models import FRAGILE_AGE, save_fragile_model, save_trained_model
from tests.rollout.models import save_inverted_model, save_slow_model

ENDPOINT = "rollout"
BAKE = 3.0
TIMING = {
    "bake_seconds": BAKE,
    "max_bake_seconds": 4 * BAKE,
    "metrics_deadline_seconds": 40,
    "poll_seconds": 0.3,
    "canaries_per_second": 50,
    "endpoint_wait_seconds": 300,
}


@dataclass
class Stage:
    """One backend with an endpoint `rollout` whose blue serves v1, and candidates to roll out."""

    backend: str
    endpoints: Any
    models: dict[str, ModelVersion]
    model_dirs: dict[str, Path]
    canary_rows: str
    fake: Any = None

    def reset(self, candidate: str) -> None:
        """blue (v1) takes all traffic, green holds `candidate`, no rollout record left."""
        self.endpoints.set_traffic(ENDPOINT, {"blue": 100}, None)
        model = self.models[candidate]
        self.endpoints.create_or_update_deployment(
            ENDPOINT, "green", model, self.model_dirs[candidate]
        )
        stop_rollout("prod", ENDPOINT, "abort", "test", "clean slate")
        self.metrics_delay(self.usual_delay)

    @property
    def usual_delay(self) -> float:
        """Azure Monitor is always late (the fake: by a second); the laptop is not."""
        return 1.0 if self.fake is not None else 0.0

    def metrics_delay(self, seconds: float) -> None:
        if self.fake is not None:
            self.fake.metrics_ingestion_delay_seconds = seconds
        else:
            self.endpoints.rehearse_metrics_delay(ENDPOINT, seconds)

    def traffic(self) -> dict[str, int]:
        info = self.endpoints.get_endpoint(ENDPOINT)
        return {k: v for k, v in info.traffic.items() if v}


@dataclass
class Users:
    """Steady synthetic users: single rows through the normal route, `old` of them over 95,
    from `senders` threads (one thread's rate is bounded by the endpoint's latency)."""

    stage: Stage
    per_second: float = 15
    old_share: float = 0.0
    senders: int = 1
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        rows = generate_readmissions(400, seed=21).drop(columns=[LABEL])
        rows["age"] = rows["age"].clip(upper=FRAGILE_AGE)
        very_old = rows.sample(frac=self.old_share, random_state=3).index
        rows.loc[very_old, "age"] = FRAGILE_AGE + 3
        self.bodies = [split_body(rows.iloc[[i]]) for i in range(len(rows))]

    def _run(self, first: int) -> None:
        info = self.stage.endpoints.get_endpoint(ENDPOINT)
        key = self.stage.endpoints.get_key(ENDPOINT)
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
            sent = first
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    reply = http.post(info.scoring_uri, json=self.bodies[sent % len(self.bodies)])
                    self.answers.append(
                        (
                            time.time(),
                            reply.status_code,
                            reply.headers.get("azureml-model-deployment", "?"),
                        )
                    )
                sent += 1
                self._stop.wait(1 / self.per_second)

    @contextlib.contextmanager
    def running(self) -> Iterator[Users]:
        threads = [
            threading.Thread(target=self._run, args=(i * 97,), daemon=True)
            for i in range(self.senders)
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=30)

    def failed_after(self, moment: float) -> int:
        return sum(1 for at, status, _ in self.answers if at > moment and status >= 500)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rollout-models")
    return {
        "v1": save_trained_model(root / "v1", rows=1_500, seed=0),
        "v2": save_trained_model(root / "v2", rows=1_500, seed=4),
        "fragile": save_fragile_model(root / "fragile"),
        "slow": save_slow_model(root / "slow"),
        "inverted": save_inverted_model(root / "inverted"),
    }


def fast_rollout_config(folder: Path) -> Path:
    """A copy of config/ at `folder` whose rollouts bake for seconds on both backends (times in
    release.yaml are per backend), on the endpoint these tests use."""
    shutil.copytree(config_dir(), folder)
    release = yaml.safe_load((folder / "release.yaml").read_text())
    release["rollout"]["timing"] = {k: {"local": v, "azure": v} for k, v in TIMING.items()}
    release["prod_endpoint"] = ENDPOINT
    (folder / "release.yaml").write_text(yaml.safe_dump(release))
    return folder


@contextlib.contextmanager
def on_backend(
    backend: str, root: Path, config: Path, patch: pytest.MonkeyPatch
) -> Iterator[AzureUnderTest | None]:
    """The backend the flows will use, with the fast config; on azure the fake serves scoring
    and publishes each 1-s metrics grain a second late. Local endpoint servers stop at the end."""
    patch.setenv("MLOPS_ROOT", str(root))
    patch.setenv("MLOPS_CONFIG_DIR", str(config))
    azure = azure_under_test(patch) if backend == "azure" else contextlib.nullcontext()
    with azure as under_test:
        if under_test is not None:
            patch.setenv("MLOPS_BACKEND", "azure")
            patch.setenv("MLOPS_AZURE_METRICS_INTERVAL", "PT1S")
            under_test.fake.metrics_ingestion_delay_seconds = 1.0
            under_test.fake.serve_scoring()
        try:
            yield under_test
        finally:
            if under_test is None:
                from backends.local.endpoints import stop_all

                for directory in (root / "workspaces").glob("*"):
                    stop_all(directory)


@pytest.fixture(scope="module", params=["local", "azure"])
def stage(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dirs: dict[str, Path],
) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp(f"rollout-{request.param}") / "mlops"
    config = fast_rollout_config(tmp_path_factory.mktemp("rollout-config") / "config")
    canaries = tmp_path_factory.mktemp("canary-rows")
    rows = generate_readmissions(200, seed=8)
    rows["age"] = rows["age"].clip(upper=FRAGILE_AGE)  # canaries never send the fragile ages
    rows.to_parquet(canaries / "data.parquet")
    with (
        pytest.MonkeyPatch.context() as patch,
        on_backend(request.param, root, config, patch) as under_test,
    ):
        workspace = backends.workspace("prod")
        models = {
            name: workspace.register_model(
                "readmission",
                str(folder),
                f"rollout-{name}",
                {lineage_tags.PIPELINE_RUN_ID: f"rollout-{name}"},
                f"rollout test model {name}",
            )
            for name, folder in model_dirs.items()
        }
        endpoints = backends.endpoints("prod")
        endpoints.create_or_update_endpoint(ENDPOINT)
        endpoints.create_or_update_deployment(
            ENDPOINT, "blue", models["v1"], workspace.model_path(models["v1"])
        )
        endpoints.set_traffic(ENDPOINT, {"blue": 100}, None)
        yield Stage(
            request.param,
            endpoints,
            models,
            {name: workspace.model_path(model) for name, model in models.items()},
            str(canaries),
            under_test.fake if under_test is not None else None,
        )


@flow
def roll_out(candidate: ModelVersion, canary_rows: str, steps: list[dict] | None = None) -> Any:
    """The rollout task as the release runs it, with the test's settings."""
    settings = load_release_settings().rollout
    if steps is not None:
        settings = settings.model_copy(
            update={"steps": tuple(type(settings.steps[0])(**s) for s in steps)}
        )
    return shift_traffic("prod", ENDPOINT, "green", candidate, canary_rows, settings)


def latest_artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        artifacts = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifacts, f"no {key} artifact"
    return artifacts[0].data


def rollout_table() -> list[dict[str, Any]]:
    data = latest_artifact("rollout")
    return yaml.safe_load(data) if isinstance(data, str) else data


def test_a_rollout_under_steady_users_bakes_every_step_and_takes_over(stage: Stage) -> None:
    stage.reset("v2")
    started = time.monotonic()
    with Users(stage).running() as users:
        roll_out(stage.models["v2"], stage.canary_rows)
    took = time.monotonic() - started

    assert stage.traffic() == {"green": 100}
    assert read_record("prod", ENDPOINT).status == "done"
    rows = rollout_table()
    assert [r["traffic"] for r in rows] == ["mirror 20%", "10% live", "50% live", "100% live"]
    assert all(r["verdict"].startswith("healthy") for r in rows), rows
    assert took >= 4 * BAKE
    # live steps judged users' requests too, not only canaries: users reached green
    assert any(d == "green" for _, status, d in users.answers if status == 200)
    for row in rows[1:]:
        total, _, split = row["new requests (live/mirrored/canary)"].partition(" ")
        live = int(split.strip("()").split("/")[0])
        assert int(total) >= 20 and live > 0, row
    assert users.failed_after(0) == 0


def test_a_deployment_failing_only_on_users_requests_is_rolled_back_at_10_percent(
    stage: Stage,
) -> None:
    stage.reset("fragile")
    # every user is over 95, from three senders: about 2.5 failures a second reach green at
    # 10%, so a 3-s bake sees none with a chance under 1e-3 (with 0.3 of one sender's users
    # it was ~1 expected failure, and CI once saw none)
    with Users(stage, per_second=15, old_share=1.0, senders=3).running() as users:
        with pytest.raises(RolloutFailed, match=r"failed step 1 \(10% live\)"):
            roll_out(
                stage.models["fragile"],
                stage.canary_rows,
                steps=[{"traffic": 10}, {"traffic": 50}, {"traffic": 100}],
            )
        rolled_back = time.time()
        time.sleep(2)

    assert stage.traffic() == {"blue": 100}
    assert users.failed_after(rolled_back + 0.5) == 0
    assert read_record("prod", ENDPOINT).status == "rolled-back"
    # the canaries alone (patients up to 95) never failed: the users' requests decided it
    row = rollout_table()[0]
    assert "error rate" in row["verdict"]


def test_a_candidate_whose_mirrored_answers_diverge_is_stopped_before_live_traffic_moves(
    stage: Stage,
) -> None:
    stage.reset("inverted")
    stopped = r"failed step 1 \(mirror 20%\): shadow labels"
    # the mirror step's absolute p95 limit raised: the candidate is fast, but a loaded test
    # machine must not stop it before its answers are compared
    steps = [{"mirror": 20, "max_p95_ms": 5_000}, {"traffic": 100}]
    with Users(stage).running() as users, pytest.raises(RolloutFailed, match=stopped):
        roll_out(stage.models["inverted"], stage.canary_rows, steps=steps)

    assert stage.traffic() == {"blue": 100}
    assert stage.endpoints.get_endpoint(ENDPOINT).mirror_traffic.get("green", 0) == 0
    assert read_record("prod", ENDPOINT).status == "rolled-back"
    # no user was ever answered by the candidate: it only saw mirrored copies
    assert {d for _, status, d in users.answers if status == 200} == {"blue"}
    assert [r["traffic"] for r in rollout_table()] == ["mirror 20%"]
    report = latest_artifact("shadow-comparison")
    assert "**Stopped**: shadow labels disagree" in report
    assert "## Disagreement by group" in report and "| age_band | 65-79 |" in report
    audited = [r for r in read_audit_log() if r.action == "shadow-comparison"]
    assert audited and audited[-1].details["passed"] is False
    figures = audited[-1].details
    assert figures["pairs"] >= 20
    assert figures["label_agreement"] < 0.5 and figures["mean_probability_difference"] > 0.3


def test_late_metrics_are_waited_for_and_the_rollout_passes(stage: Stage) -> None:
    stage.reset("v2")
    stage.metrics_delay(2 * BAKE)
    try:
        with Users(stage).running():
            roll_out(
                stage.models["v2"], stage.canary_rows, steps=[{"traffic": 10}, {"traffic": 100}]
            )
    finally:
        stage.metrics_delay(stage.usual_delay)

    assert stage.traffic() == {"green": 100}
    rows = rollout_table()
    assert all(
        r["verdict"].startswith("healthy") and "100% covered" in r["window"] for r in rows
    ), rows


def test_a_deployment_slower_than_the_old_by_more_than_the_margin_is_rolled_back(
    stage: Stage,
) -> None:
    stage.reset("slow")
    with Users(stage).running(), pytest.raises(RolloutFailed, match=r"p95 .* > old"):
        roll_out(stage.models["slow"], stage.canary_rows)

    assert stage.traffic() == {"blue": 100}


def test_an_abort_mid_bake_returns_all_traffic_at_once(stage: Stage) -> None:
    stage.reset("v2")
    with Users(stage).running() as users:
        rollout, outcome = rolling_out_in_thread(stage)
        _wait_for(lambda: _at_step(1) and stage.traffic().get("green", 0) == 10, 120)
        time.sleep(BAKE / 2)
        said = CliRunner().invoke(
            app, ["rollout", "abort", "--reason", "pager went off", "--as", "oncall"]
        )
        aborted = time.time()
        assert said.exit_code == 0, said.output
        assert "{'blue': 100} again" in said.output
        # under load the rollout may have moved on a step before the CLI's request landed:
        # the step said is the one the audit record names, a live step after the mirror
        said_step = int(re.search(r"at step (\d+)", said.output).group(1))
        assert said_step >= 2
        assert stage.traffic() == {"blue": 100}  # at once, before the rollout notices
        rollout.join(timeout=60)
        time.sleep(1)

    assert outcome and isinstance(outcome[0], RolloutStopped), outcome
    assert "aborted by oncall" in str(outcome[0])
    assert stage.traffic() == {"blue": 100}
    assert not any(d == "green" for at, _, d in users.answers if at > aborted + 1)
    aborts = [r for r in read_audit_log() if (r.action, r.actor) == ("rollout-aborted", "oncall")]
    assert aborts and aborts[-1].details["at_step"] == said_step


def test_cancelling_the_run_in_prefect_stops_the_rollout_and_returns_traffic(
    stage: Stage,
) -> None:
    stage.reset("v2")
    with Users(stage).running():
        rollout, outcome = rolling_out_in_thread(stage)
        _wait_for(lambda: _at_step(2), 120)
        run_id = read_record("prod", ENDPOINT).flow_run_id
        with get_client(sync_client=True) as client:  # what the UI's Cancel button sends
            client.set_flow_run_state(UUID(run_id), Cancelling(), force=True)
        rollout.join(timeout=60)

    assert outcome and isinstance(outcome[0], RolloutStopped), outcome
    assert "cancelled by prefect" in str(outcome[0])
    assert stage.traffic() == {"blue": 100}
    assert read_record("prod", ENDPOINT).status == "stopped"


def test_the_cancellation_hook_stops_the_rollout_of_a_killed_run(stage: Stage) -> None:
    """What the runner does after a worker killed a cancelled run's process: the run's
    on_cancellation hook finds the rollout that run was driving and stops it."""
    stage.reset("v2")
    rollout, outcome = rolling_out_in_thread(stage)
    _wait_for(lambda: _at_step(1) and stage.traffic().get("green", 0) == 10, 120)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(read_record("prod", ENDPOINT).flow_run_id))

    stop_rollout_of_cancelled_run(None, run, Cancelling())

    assert stage.traffic() == {"blue": 100}
    rollout.join(timeout=60)
    assert outcome and isinstance(outcome[0], RolloutStopped), outcome
    assert read_record("prod", ENDPOINT).status == "stopped"


def rolling_out_in_thread(stage: Stage) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            roll_out(stage.models["v2"], stage.canary_rows)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _at_step(index: int) -> bool:
    record = read_record("prod", ENDPOINT)
    return record is not None and record.status == "running" and record.step == index


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
