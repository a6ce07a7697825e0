"""Deployments and traffic on a real endpoint: failed starts, replacement, weights, mirroring,
deletion, model errors."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import pandas as pd
import pytest

from backends.traffic_rules import RequestRefused
from records import lineage_tags
from records.serving import DeploymentFailed, DeploymentHealth
from tests.endpoints.conftest import (
    Caller,
    ModelDirs,
    a_second_ago,
    collected,
    deployment_pids,
    gone,
    model_status,
    model_version,
    split_body,
)
from tests.endpoints.models import FRAGILE_AGE


@pytest.fixture(autouse=True)
def all_live_traffic_on_blue(shared: Caller) -> None:
    shared.endpoints.set_traffic(shared.name, {"blue": 100}, None)
    for name in {d.name for d in shared.info.deployments} - {"blue", "green"}:
        shared.endpoints.delete_deployment(shared.name, name)


def test_a_model_that_fails_to_load_never_gets_traffic_and_blue_keeps_serving(
    shared: Caller, models: ModelDirs, rows: pd.DataFrame
) -> None:
    before = shared.info

    pids = deployment_pids(shared.endpoints, shared.name)

    with pytest.raises(DeploymentFailed, match="ModelLoadError: could not load the model"):
        shared.endpoints.create_or_update_deployment(
            shared.name, "green", model_version("3", models.broken), models.broken
        )
    with pytest.raises(DeploymentFailed, match="ModelLoadError: no MLflow model"):
        shared.endpoints.create_or_update_deployment(
            shared.name, "canary", model_version("4", models.good), models.good / "missing"
        )

    after = shared.info
    assert after == before  # green still serves v2, no canary, traffic untouched
    assert {d.name: d.model_version for d in after.deployments} == {"blue": "1", "green": "2"}
    assert deployment_pids(shared.endpoints, shared.name) == pids  # the same processes
    response = shared.score(split_body(rows.head(3)))
    assert response.status_code == 200
    assert response.headers["azureml-model-deployment"] == "blue"


def test_replacing_a_deployment_starts_the_new_model_first_then_stops_the_old_one(
    shared: Caller, models: ModelDirs, rows: pd.DataFrame
) -> None:
    shared.endpoints.create_or_update_deployment(
        shared.name, "canary", model_version("8", models.good), models.good
    )
    old = deployment_pids(shared.endpoints, shared.name)["canary"]

    replaced = shared.endpoints.create_or_update_deployment(
        shared.name, "canary", model_version("9", models.good), models.good
    )

    assert replaced.model_version == "9" and replaced.state == "Succeeded"
    assert all(gone(pid) for pid in old)
    answer = shared.score(split_body(rows.head(1)), {"azureml-model-deployment": "canary"})
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "9"


def test_live_traffic_follows_the_weights(shared: Caller, rows: pd.DataFrame) -> None:
    shared.endpoints.set_traffic(shared.name, {"blue": 80, "green": 20}, None)

    served = Counter(
        shared.score(split_body(rows.iloc[[i % len(rows)]])).headers["azureml-model-deployment"]
        for i in range(500)
    )

    assert set(served) == {"blue", "green"}
    assert abs(served["green"] / 500 - 0.20) < 0.07, served  # 4 standard deviations


def settled_health(caller: Caller, deployment: str, start: datetime) -> DeploymentHealth:
    """The deployment's figures since `start` once they stop changing (mirrored copies are
    answered after the caller's response)."""
    previous = None
    for _ in range(50):
        health = caller.endpoints.serving_metrics(caller.name, start, datetime.now(UTC))
        health = health.of(deployment)
        if health == previous:
            return health
        previous = health
        time.sleep(0.1)
    raise AssertionError(f"{deployment} kept receiving requests: {previous}")


def test_mirrored_copies_reach_the_mirror_without_changing_any_response(
    shared: Caller, rows: pd.DataFrame
) -> None:
    shared.endpoints.set_traffic(shared.name, {"blue": 100, "green": 0}, {"green": 50})
    start = datetime.now(UTC)
    since = a_second_ago()

    responses = [
        shared.score(split_body(rows.iloc[[i]]), {"x-request-id": f"mirror-{i}"})
        for i in range(200)
    ]

    assert all(r.status_code == 200 for r in responses)
    assert {r.headers["azureml-model-deployment"] for r in responses} == {"blue"}
    assert {r.json()["model"]["version"] for r in responses} == {"1"}
    blue = shared.endpoints.serving_metrics(shared.name, start, datetime.now(UTC)).of("blue")
    green = settled_health(shared, "green", start)  # the last copies run after their responses
    assert blue.requests == 200
    assert 50 <= green.requests <= 150 and green.errors == 0  # ~100 copies

    def copies(found: pd.DataFrame) -> pd.DataFrame:
        mirrored = found["request_id"].str.startswith("mirror-")
        return found[(found["deployment"] == "green") & mirrored]

    found = copies(
        collected(
            shared.endpoints, shared.name, since, lambda got: len(copies(got)) >= green.requests
        )
    )
    assert len(found) == green.requests and found["mirrored"].all()
    assert set(found["model_version"]) == {"2"}
    for _, copy in found.head(10).iterrows():
        sent = int(copy["request_id"].removeprefix("mirror-"))
        assert copy["age"] == int(rows.iloc[sent]["age"])
        answered = responses[sent].json()["predictions"][0]["probability"]
        assert copy["probability"] == pytest.approx(answered, abs=1e-9)  # same model file
    assert shared.info.mirror_traffic == {"green": 50}


@pytest.mark.parametrize(
    ("traffic", "mirror", "reason"),
    [
        ({"blue": 90}, None, "adds up to 90%"),
        ({"blue": 50, "green": 60}, None, "adds up to 110%"),
        ({"blue": 100, "purple": 0}, None, "'purple'"),
        ({"blue": 150, "green": -50}, None, "0-100"),
        ({"blue": 50, "green": 50}, {"green": 10}, "cannot also be the mirror target"),
        ({"blue": 100}, {"teal": 10}, "'teal'"),
        ({"blue": 100}, {"green": 60}, "at most 50%"),
        ({"blue": 0, "green": 0}, {"blue": 10, "green": 10}, "one deployment at most"),
    ],
)
def test_invalid_traffic_is_refused_and_changes_nothing(
    shared: Caller, traffic: dict[str, int], mirror: dict[str, int] | None, reason: str
) -> None:
    before = shared.info

    with pytest.raises(RequestRefused, match=reason):
        shared.endpoints.set_traffic(shared.name, traffic, mirror)

    assert shared.info == before


def test_a_deployment_with_live_or_mirror_traffic_cannot_be_deleted(shared: Caller) -> None:
    with pytest.raises(RequestRefused, match="shift its traffic") as live:
        shared.endpoints.delete_deployment(shared.name, "blue")
    shared.endpoints.set_traffic(shared.name, {"blue": 100}, {"green": 10})
    with pytest.raises(RequestRefused, match="10% of mirror traffic"):
        shared.endpoints.delete_deployment(shared.name, "green")

    assert live.value.status == 409
    assert {d.name for d in shared.info.deployments} == {"blue", "green"}


def test_an_idle_deployment_is_deleted_and_deleting_it_again_is_a_no_op(
    shared: Caller, models: ModelDirs
) -> None:
    shared.endpoints.create_or_update_deployment(
        shared.name, "canary", model_version("5", models.good), models.good
    )

    shared.endpoints.delete_deployment(shared.name, "canary")
    shared.endpoints.delete_deployment(shared.name, "canary")

    assert {d.name for d in shared.info.deployments} == {"blue", "green"}


def test_the_label_threshold_comes_from_the_models_test_threshold_tag(
    shared: Caller, models: ModelDirs, rows: pd.DataFrame
) -> None:
    strict = model_version("6", models.good, {lineage_tags.TEST_THRESHOLD: "0.3"})
    shared.endpoints.create_or_update_deployment(shared.name, "strict", strict, models.good)

    answer = shared.score(split_body(rows.head(50)), {"azureml-model-deployment": "strict"}).json()

    labels = [(p["probability"] >= 0.3, p["label"]) for p in answer["predictions"]]
    assert all(expected == bool(label) for expected, label in labels)
    assert any(0.3 <= p["probability"] < 0.5 for p in answer["predictions"])


def test_a_model_error_is_a_424_counted_in_health_and_never_reaches_mirror_callers(
    shared: Caller, models: ModelDirs, rows: pd.DataFrame
) -> None:
    fragile = model_version("7", models.fragile)
    shared.endpoints.create_or_update_deployment(shared.name, "fragile", fragile, models.fragile)
    very_old = json.loads(rows.head(1).to_json(orient="records"))[0] | {"age": FRAGILE_AGE + 3}
    body = {"input_data": [very_old]}
    start = datetime.now(UTC)

    targeted = shared.score(body, {"azureml-model-deployment": "fragile"})
    shared.endpoints.set_traffic(shared.name, {"blue": 100}, {"fragile": 50})  # Azure's cap
    mirrored = [shared.score(body) for _ in range(20)]
    shared.endpoints.set_traffic(shared.name, {"blue": 100}, None)

    assert targeted.status_code == 424 and model_status(targeted) == 500
    assert "scoring script" in targeted.json()["message"]  # azmlinfsrv's own words
    assert targeted.headers["azureml-model-deployment"] == "fragile"
    assert all(r.status_code == 200 for r in mirrored)
    assert {r.headers["azureml-model-deployment"] for r in mirrored} == {"blue"}
    health = settled_health(shared, "fragile", start)
    assert 2 <= health.requests <= 21  # the targeted call and about 10 mirrored copies
    assert (health.errors, health.error_rate) == (health.requests, 1.0)
    assert health.p95_ms is None  # no answer that was not an error
    blue = shared.endpoints.serving_metrics(shared.name, start, datetime.now(UTC)).of("blue")
    assert (blue.requests, blue.errors) == (20, 0)


def test_a_deployment_whose_process_died_answers_502_counted_as_errors_and_reports_failed(
    shared: Caller, models: ModelDirs, rows: pd.DataFrame
) -> None:
    shared.endpoints.create_or_update_deployment(
        shared.name, "doomed", model_version("10", models.good), models.good
    )
    master = deployment_pids(shared.endpoints, shared.name)["doomed"][0]
    start = datetime.now(UTC)

    os.killpg(master, signal.SIGKILL)  # its whole process group: master and workers
    assert gone(master)
    answers = [
        shared.score(split_body(rows.head(1)), {"azureml-model-deployment": "doomed"})
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [502, 502, 502]
    assert "could not be reached" in answers[0].json()["message"]
    health = shared.endpoints.serving_metrics(shared.name, start, datetime.now(UTC)).of("doomed")
    assert (health.requests, health.errors) == (3, 3)
    states = {d.name: d.state for d in shared.info.deployments}
    assert states["doomed"] == "Failed" and states["blue"] == "Succeeded"
    with pytest.raises(RequestRefused, match="cannot take traffic"):
        shared.endpoints.set_traffic(shared.name, {"blue": 50, "doomed": 50}, None)
