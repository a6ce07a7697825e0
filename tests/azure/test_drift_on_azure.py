"""The drift monitor on the azure backend: prod's traffic as Azure ML's data collector logged it,
against the champion's training data downloaded from the workspace's datastore.

The backend is selected by name (MLOPS_BACKEND=azure); every call goes through the real
azure-ai-ml and storage SDKs to the fake REST API (tests/azure/conftest.py). The world is set
up through the backend API (a data asset, a model with its lineage tags promoted to the shared
registry as champion, a prod endpoint whose deployment has the data collector on) instead of
the training flows, so each case takes seconds. Traffic is real HTTP through the fake's front
door to the deployment's container: the scoring script in Azure ML's inference server, whose
data collector (azureml-ai-monitoring) posts `model_inputs`/`model_outputs` to the fake's
sidecar, which writes the collector's JSON lines to the workspace blob store; the monitor reads
them back through the storage SDK.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backends
import backends.azure
from backends.azure.errors import AzureConflict
from flows.monitor_drift import monitor_drift
from mlops_cli.traffic import send_traffic
from records import aliases, lineage_tags
from settings import load_release_settings, load_training_settings
from synthetic_data.readmissions import generate_readmissions
from tests.azure.conftest import AzureUnderTest
from tests.drift_events import drift_events, wait_for_events
from tests.endpoints.models import save_trained_model

MODEL = load_training_settings().model_name
ENDPOINT = load_release_settings().prod_endpoint
TRAINING_ROWS = 8_000
TRAINING_SEED = 0


@pytest.fixture
def azure_prod(
    fake_azure: AzureUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureUnderTest]:
    """A champion trained on a registered data asset, serving all of prod's traffic, with
    Azure's data collector on; the backend picked by name, as an operator would."""
    monkeypatch.setenv("MLOPS_BACKEND", "azure")
    fake = fake_azure.fake
    fake.serve_scoring()
    data = tmp_path / "readmissions.csv"
    generate_readmissions(TRAINING_ROWS, seed=TRAINING_SEED).to_csv(data, index=False)
    model_dir = save_trained_model(tmp_path / "model", rows=TRAINING_ROWS, seed=TRAINING_SEED)

    test = backends.workspace("test")
    asset = test.register_data("readmissions", data)
    lineage = {
        lineage_tags.PIPELINE_RUN_ID: "drift-test-run",
        lineage_tags.DATA_ASSET: asset.name,
        lineage_tags.DATA_VERSION: asset.version,
        lineage_tags.DATA_SHA256: asset.content_hash,
    }
    candidate = test.register_model(MODEL, str(model_dir), "train-run", lineage, "drift test")
    registry = backends.shared_registry()
    champion = registry.promote(
        candidate, model_dir, {lineage_tags.SOURCE_WORKSPACE: test.name}, "approved"
    )
    registry.set_model_alias(MODEL, aliases.CHAMPION, champion.version)
    prod = backends.endpoints("prod")
    prod.create_or_update_endpoint(ENDPOINT)
    prod.create_or_update_deployment(ENDPOINT, "blue", champion, model_dir)
    prod.set_traffic(ENDPOINT, {"blue": 100}, None)
    try:
        yield fake_azure
    finally:
        fake.stop_scoring()


def collected_files(azure: AzureUnderTest, collection: str) -> dict[str, bytes]:
    ws = azure.fake.workspace(azure.topology.environment("prod").workspace)
    prefix = f"modelDataCollector/{ENDPOINT}/blue/{collection}/"
    return azure.fake.files_under(ws.storage_account, ws.container, prefix)


def test_prod_deployments_log_inputs_and_outputs_with_the_data_collector(
    azure_prod: AzureUnderTest,
) -> None:
    send_traffic(60, batch=20, seed=5)

    deployment = azure_prod.fake.workspace(
        azure_prod.topology.environment("prod").workspace
    ).deployments[ENDPOINT]["blue"]
    collections = deployment["properties"]["dataCollector"]["collections"]
    assert {k: v["dataCollectionMode"].lower() for k, v in collections.items()} == {
        "model_inputs": "enabled",
        "model_outputs": "enabled",
    }
    hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
    for collection, fields in (("model_inputs", "age"), ("model_outputs", "probability")):
        files = wait_for_lines(azure_prod, collection, 3)
        assert [name.rsplit("/", 1)[0] for name in files] == [hour]
        events = [json.loads(line) for data in files.values() for line in data.splitlines()]
        assert len(events) == 3
        assert {e["type"] for e in events} == {f"azureml.inference.{collection}"}
        assert all(len(e["data"]) == 20 and fields in e["data"][0] for e in events)
    prod = backends.endpoints("prod")
    captured = prod.read_capture(ENDPOINT, datetime.now(UTC) - timedelta(hours=2))
    assert len(captured) == 60
    assert captured["probability"].between(0, 1).all() and not captured["mirrored"].any()
    # outputs are what the script answered and collected: its labels, by the model's threshold
    assert (captured["label"] == (captured["probability"] >= 0.5).astype(int)).all()
    assert captured["request_id"].nunique() == 3  # one correlation id per request
    assert set(captured["deployment"]) == {"blue"}
    assert prod.read_capture(ENDPOINT, datetime.now(UTC) + timedelta(minutes=1)).empty


def wait_for_lines(azure: AzureUnderTest, collection: str, lines: int) -> dict[str, bytes]:
    """The collection's files once they hold `lines` lines: the collector posts after the
    script has answered, from a worker thread of its own."""
    deadline = time.monotonic() + 20
    while True:
        files = collected_files(azure, collection)
        if sum(data.count(b"\n") for data in files.values()) >= lines:
            return files
        if time.monotonic() > deadline:
            return files
        time.sleep(0.2)


def test_the_reference_is_refused_when_its_blob_no_longer_holds_the_registered_bytes(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    test = backends.azure.open_workspace(
        fake_azure.topology.environment("test"), fake_azure.topology
    )
    data = tmp_path / "readmissions.csv"
    data.write_text("age,readmitted_30d\n70,1\n")
    registered = test.register_data("readmissions", data)
    asset = test.get_data("readmissions", registered.version)
    assert test.data_path(asset).read_bytes() == data.read_bytes()
    ws = fake_azure.fake.workspace(fake_azure.topology.environment("test").workspace)
    blobs = fake_azure.fake.blobs[(ws.storage_account, ws.container)]
    name = next(n for n in blobs if n.endswith("/readmissions.csv"))
    blobs[name].data += b"1,2,3\n"

    (test.cache / "data").rename(tmp_path / "evicted")  # a new machine: nothing cached

    with pytest.raises(AzureConflict, match="no longer holds the bytes"):
        test.data_path(asset)


def test_too_little_traffic_is_not_enough_data(azure_prod: AzureUnderTest) -> None:
    send_traffic(100, batch=20, seed=1)
    report = monitor_drift()
    assert report.status == "not_enough_data"
    assert report.current_rows == 100
    assert "not enough" in report.message.lower()


def test_unshifted_traffic_raises_no_alarm(azure_prod: AzureUnderTest) -> None:
    started = datetime.now(UTC)
    send_traffic(1_500, batch=50, seed=2)
    report = monitor_drift()
    assert report.status == "no_drift", report.to_markdown()
    assert report.current_rows == 1_500
    assert report.reference_rows == TRAINING_ROWS
    assert downloaded_training_data(azure_prod)
    time.sleep(2)
    assert drift_events(started, MODEL) == []


def test_shifted_traffic_emits_a_drift_event(azure_prod: AzureUnderTest) -> None:
    started = datetime.now(UTC)
    send_traffic(1_500, batch=50, age_offset=15, seed=3)
    report = monitor_drift()
    assert report.status == "drift"
    assert "age" in report.drifted_features
    events = wait_for_events(started, 1, MODEL)
    assert len(events) == 1
    event = events[0]
    assert event["resource"]["mlops.model.version"] == report_version()
    assert "age" in event["payload"]["drifted_features"]
    assert event["payload"]["scores"]["age"] > 0.1
    assert event["payload"]["current_rows"] == 1_500


def downloaded_training_data(azure: AzureUnderTest) -> list[str]:
    """Blob reads of the registered CSV: the reference came from the datastore, not a path."""
    return [
        r.path
        for r in azure.fake.requests
        if r.method == "GET"
        and r.host.endswith(".blob.core.windows.net")
        and r.path.endswith("/readmissions.csv")
        and r.status in (200, 206)
    ]


def report_version() -> str:
    champion = backends.shared_registry().get_model(MODEL, aliases.CHAMPION)
    assert champion is not None
    return champion.version


def test_a_datastore_with_account_credentials_is_read_with_the_secret_the_workspace_issues(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    environment = fake_azure.topology.environment("test")
    fake_azure.fake.workspace(environment.workspace).datastore_credentials = "AccountKey"
    test = backends.azure.open_workspace(environment, fake_azure.topology)
    data = tmp_path / "readmissions.csv"
    data.write_text("age,readmitted_30d\n71,0\n")

    asset = test.get_data("readmissions", test.register_data("readmissions", data).version)

    assert test.data_path(asset).read_bytes() == data.read_bytes()
    reads = [r for r in fake_azure.fake.requests if r.path.endswith("/readmissions.csv")]
    assert reads[-1].method == "GET" and "sig" in reads[-1].query
