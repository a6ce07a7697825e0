"""Azure ML's collected production data: one schema for both backends.

A custom scoring script collects `model_inputs` and `model_outputs` with `azureml-ai-monitoring`'s
`Collector`, which posts each collection to the data collector sidecar (`POST /modeldata/log`,
headers `ce-type: azureml.inference.<collection>`, `ce-x-request-id: <correlation id>`, ...,
body the rows as JSON records). The sidecar writes one JSON line per collected request, in hourly
files `modelDataCollector/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<instance>.jsonl`:

    {"specversion":"1.0","id":"...","source":"...","type":"azureml.inference.model_inputs",
     "datacontenttype":"application/json","time":"2024-01-01T08:51:30Z","data":[{...},...],
     "correlationid":"...","xrequestid":"...","modelversion":"default",
     "collectdatatype":"pandas.core.frame.DataFrame","agent":"azureml-ai-monitoring/1.0.0",
     "contentrange":"bytes 0-116/117"}

(the documented format: "Data collection from models in production", Azure ML docs). The local
backend's sidecar writes these lines; on Azure the service does. Both backends read them back
through `collected_rows`, so the drift monitor sees one schema. Rows scored by batch jobs join
them in the same columns (`batch_rows_as_captured`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from records.serving import Capture

if TYPE_CHECKING:
    import pandas as pd

    from records.batch import BatchSummary

COLLECTIONS = ("model_inputs", "model_outputs")
COLLECTOR_FOLDER = "modelDataCollector"
EVENT_TYPE = "azureml.inference.{collection}"
ROLLED_HOUR = re.compile(r"/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/[^/]+\.jsonl$")


def collection_folder(endpoint: str, deployment: str, collection: str) -> str:
    """The default folder of a collection (azure-ai-ml's DEFAULT_MDC_PATH layout)."""
    return f"{COLLECTOR_FOLDER}/{endpoint}/{deployment}/{collection}"


def hourly_file(folder: str, moment: datetime, instance: str) -> str:
    """Where an event logged at `moment` goes: one file per hour and instance."""
    return f"{folder}/{moment.astimezone(UTC):%Y/%m/%d/%H}/{instance}.jsonl"


def event_line(
    collection: str,
    rows_json: bytes,
    correlation_id: str,
    source: str,
    moment: datetime,
    model_version: str = "default",
    collect_data_type: str = "pandas.core.frame.DataFrame",
    agent: str = "azureml-ai-monitoring/1.0.0",
) -> bytes:
    """One collected request as the sidecar writes it (a line, newline included)."""
    head = orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": EVENT_TYPE.format(collection=collection),
            "datacontenttype": "application/json",
            "time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    tail = orjson.dumps(
        {
            "correlationid": correlation_id,
            "xrequestid": correlation_id,
            "modelversion": model_version,
            "collectdatatype": collect_data_type,
            "agent": agent,
            "contentrange": f"bytes 0-{len(rows_json) - 1}/{len(rows_json)}",
        }
    )
    return head[:-1] + b',"data":' + rows_json + b"," + tail[1:] + b"\n"


def event_time(event: Mapping[str, Any]) -> datetime:
    moment = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_events(lines: Iterable[bytes | str], since: datetime) -> list[dict[str, Any]]:
    """The events of JSONL lines logged at or after `since`."""
    events = []
    for line in lines:
        if line.strip():
            event = orjson.loads(line)
            if event_time(event) >= since:
                events.append(event)
    return events


def collected_rows(
    inputs: Iterable[Mapping[str, Any]],
    outputs: Iterable[Mapping[str, Any]],
    deployment: str,
    model_version: str,
    mirrored: bool,
) -> list[dict[str, Any]]:
    """One row per scored input row: its fields, joined on the correlation id with the output
    row the scoring script collected for it (`probability`, `label`), plus the rest of
    records.serving.CAPTURE_COLUMNS (`request_id` is the correlation id, which the scoring
    script sets to the request's x-request-id). Inputs without outputs get None."""
    answered = {event.get("correlationid"): event.get("data") or [] for event in outputs}
    rows: list[dict[str, Any]] = []
    for event in sorted(inputs, key=event_time):
        results = answered.get(event.get("correlationid"), [])
        for index, features in enumerate(event.get("data") or []):
            result = results[index] if index < len(results) else {}
            rows.append(
                {
                    **features,
                    Capture.PROBABILITY: result.get("probability"),
                    Capture.LABEL: result.get("label"),
                    Capture.DEPLOYMENT: deployment,
                    Capture.MODEL_VERSION: model_version,
                    Capture.MIRRORED: mirrored,
                    Capture.TIMESTAMP: event["time"],
                    Capture.REQUEST_ID: event.get("correlationid"),
                }
            )
    return rows


def counted_as_mirrored(
    deployment: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int]
) -> bool:
    """Collected records do not say whether a request was a mirrored copy, on Azure or here:
    rows of a deployment that takes mirror traffic and no live traffic count as mirrored."""
    return traffic.get(deployment, 0) == 0 and mirror_traffic.get(deployment, 0) > 0


def batch_rows_as_captured(frame: pd.DataFrame, summary: BatchSummary) -> pd.DataFrame:
    """A batch job's scored rows in the captured rows' columns (records.serving.Capture), so
    the drift monitor reads them with prod's online traffic: never mirrored, timed when the job
    finished, the request id `batch-<run id>`."""
    return frame.assign(
        **{
            Capture.DEPLOYMENT: f"batch:{summary.model_name}-v{summary.model_version}",
            Capture.MODEL_VERSION: summary.model_version,
            Capture.MIRRORED: False,
            Capture.TIMESTAMP: datetime.fromisoformat(summary.finished_at),
            Capture.REQUEST_ID: f"batch-{summary.run_id}",
        }
    )
