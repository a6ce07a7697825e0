"""The local data collector sidecar writes what Azure's writes, where Azure writes it, and
`read_collected` joins it back into rows.

The posts below carry exactly the headers `azureml-ai-monitoring` 1.0.0's sender sets
(`azureml/ai/monitoring/worker/sender.py` in the inference venv): `ce-type`, `ce-time`,
`ce-collect-data-type`, `ce-agent`, `trace-id`, `ce-x-request-id` and the rows as JSON records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pandas as pd

from backends.collected_data import parse_events
from backends.local.data_collector import BLOB_DATASTORE, DataCollector, read_collected
from backends.local.endpoint_state import DeploymentSpec, EndpointState


def sender_headers(collection: str, request_id: str, moment: int) -> dict[str, str]:
    return {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "trace-id": f"trace-{collection}-{request_id}",
        "ce-time": str(moment),
        "ce-type": f"azureml.inference.{collection}",
        "ce-collect-data-type": "pandas.core.frame.DataFrame",
        "ce-agent": "azureml-ai-monitoring/1.0.0",
        "ce-x-request-id": request_id,
        "ce-model-version": "default",
    }


def post_all(
    blob_root: Path, deployment: str, posts: Sequence[tuple[str, bytes, dict[str, str]]]
) -> list[int]:
    """Start a sidecar, send the posts, stop it (which writes what it buffered)."""

    async def run() -> list[int]:
        collector = DataCollector(blob_root, "ep", deployment, f"{deployment}-0a1b2c")
        port = await collector.start()
        try:
            async with httpx.AsyncClient() as client:
                replies = [
                    await client.post(
                        f"http://127.0.0.1:{port}{path}", content=body, headers=headers
                    )
                    for path, body, headers in posts
                ]
        finally:
            await collector.stop()
        return [r.status_code for r in replies]

    return asyncio.run(run())


def records(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records").encode()  # what PandasFrameData.to_json sends


def state(traffic: dict[str, int], mirror: dict[str, int]) -> EndpointState:
    deployments = {
        name: DeploymentSpec(name, "readmission", version, "/models/x", code="/code")
        for name, version in (("blue", "1"), ("green", "2"))
    }
    return EndpointState(
        "ep", "key", deployments=deployments, traffic=traffic, mirror_traffic=mirror
    )


def test_collections_are_written_as_azures_hourly_event_lines_and_read_back_joined(
    tmp_path: Path,
) -> None:
    blob_root = tmp_path / BLOB_DATASTORE
    now = int(time.time())
    inputs = pd.DataFrame({"age": [71, 45], "gender": ["F", "M"]})
    outputs = pd.DataFrame({"probability": [0.8, 0.1], "label": [1, 0]})

    statuses = post_all(
        blob_root,
        "blue",
        [
            ("/modeldata/log", records(inputs), sender_headers("model_inputs", "req-1", now)),
            ("/modeldata/log", records(outputs), sender_headers("model_outputs", "req-1", now)),
        ],
    )

    assert statuses == [200, 200]
    folder = blob_root / "modelDataCollector" / "ep" / "blue"
    (written,) = folder.glob("model_inputs/*/*/*/*/blue-0a1b2c.jsonl")  # yyyy/MM/dd/HH
    assert len(list(folder.glob("model_outputs/*/*/*/*/blue-0a1b2c.jsonl"))) == 1
    (event,) = parse_events(written.read_bytes().splitlines(), datetime(2000, 1, 1, tzinfo=UTC))
    assert event["type"] == "azureml.inference.model_inputs"
    assert event["correlationid"] == event["xrequestid"] == "req-1"
    assert event["data"] == [{"age": 71, "gender": "F"}, {"age": 45, "gender": "M"}]
    assert event["time"] == datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert event["modelversion"] == "default" and event["agent"] == "azureml-ai-monitoring/1.0.0"

    since = datetime.fromtimestamp(now, UTC) - timedelta(seconds=1)
    rows = read_collected(blob_root, state({"blue": 100}, {}), since)

    assert [(r["age"], r["probability"], r["label"]) for r in rows] == [(71, 0.8, 1), (45, 0.1, 0)]
    assert {
        (r["deployment"], r["model_version"], r["mirrored"], r["request_id"]) for r in rows
    } == {("blue", "1", False, "req-1")}
    assert read_collected(blob_root, state({"blue": 100}, {}), since + timedelta(seconds=5)) == []


def test_rows_of_a_deployment_taking_only_mirror_traffic_count_as_mirrored(tmp_path: Path) -> None:
    blob_root = tmp_path / BLOB_DATASTORE
    now = int(time.time())
    post_all(
        blob_root,
        "green",
        [
            (
                "/modeldata/log",
                records(pd.DataFrame({"age": [60]})),
                sender_headers("model_inputs", "copy-1", now),
            )
        ],
    )
    since = datetime.fromtimestamp(now, UTC) - timedelta(seconds=1)

    mirrored = read_collected(blob_root, state({"blue": 100}, {"green": 20}), since)
    live = read_collected(blob_root, state({"blue": 50, "green": 50}, {}), since)

    assert [(r["deployment"], r["mirrored"], r["probability"]) for r in mirrored] == [
        ("green", True, None)  # an input without its output yet: no probability
    ]
    assert [r["mirrored"] for r in live] == [False]


def test_posts_that_are_not_a_collection_of_json_records_are_refused_and_write_nothing(
    tmp_path: Path,
) -> None:
    blob_root = tmp_path / BLOB_DATASTORE
    now = int(time.time())
    good = records(pd.DataFrame({"age": [60]}))

    statuses = post_all(
        blob_root,
        "blue",
        [
            ("/modeldata/log", good, sender_headers("request", "r", now)),
            ("/modeldata/log", b"[{not json", sender_headers("model_inputs", "r", now)),
            ("/elsewhere", good, sender_headers("model_inputs", "r", now)),
        ],
    )

    assert statuses == [400, 400, 404]
    assert not blob_root.exists()


def test_a_line_still_being_appended_is_not_read(tmp_path: Path) -> None:
    blob_root = tmp_path / BLOB_DATASTORE
    now = datetime.now(UTC)
    folder = blob_root / "modelDataCollector/ep/blue/model_inputs" / now.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True)
    event = {
        "type": "azureml.inference.model_inputs",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": [{"age": 50}],
        "correlationid": "whole",
    }
    half = orjson.dumps({**event, "correlationid": "half"})[:40]
    (folder / "blue-0.jsonl").write_bytes(orjson.dumps(event) + b"\n" + half)

    rows = read_collected(blob_root, state({"blue": 100}, {}), now - timedelta(minutes=1))

    assert [r["request_id"] for r in rows] == ["whole"]
