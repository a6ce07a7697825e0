"""Schedules: a model monitor (`CreateMonitor` action) on a recurrence.

Follows test_monitor_schedule.pyTestMonitorScheduletest_data_drift_schedule_create.json
(azure-ai-ml 1.10.0, api-version 2023-06-01-preview): PUT answers 201 with the schedule as the
service normalises it (enum values capitalised: `Week`, `Monday`, `JensenShannonDistance`; the
fields a DataDrift signal did not send present as null; `azureml.telemetry.attribution:
modelmonitoring` added to a monitor's properties) and `provisioningState: Creating`, and no
`id`/`name`/`type`/`systemData`; its operation's status documents read `Creating`, then
`Succeeded` with start and end times; GET then answers the schedule with its name, systemData
and the trigger's start time set. Not reproduced: the recorded GET also showed the production
data's `windowSize` changed from the sent `P60D` to `P7D` (no source explains it; the fake keeps
what was sent).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.azure.fake.http import ARM_HOST, Reply, SeenRequest, arm_error
from tests.azure.fake.state import WS, Lro, system_data

RECORDING = (
    "recording:test_monitor_schedule.pyTestMonitorScheduletest_data_drift_schedule_create.json"
)
# what the service added to a DataDrift signal that did not send it (recorded PUT response)
DRIFT_SIGNAL_NULLS = ("properties", "features", "dataSegment", "featureDataTypeOverride")
MONITOR_INPUT_NULLS = ("columns", "preprocessingComponentId")


def _capitalised(value: Any) -> Any:
    return value[:1].upper() + value[1:] if isinstance(value, str) else value


def _status_document(lro: Lro, body: dict[str, Any]) -> dict[str, Any]:
    """A schedule operation's status document as recorded (entries 3-4): its `id` names
    mfeOperationResults, `Creating` while it runs, start and end times once it ended."""
    document = {
        "id": body["id"].replace("/mfeOperationsStatus/", "/mfeOperationResults/"),
        "name": body["name"],
        "status": "Creating" if lro.status == "InProgress" else body["status"],
    }
    if lro.status != "InProgress":
        document |= {"startTime": body["startTime"], "endTime": body["endTime"]}
    if "error" in body:
        document["error"] = body["error"]
    return document


def _trigger(sent: dict[str, Any]) -> dict[str, Any]:
    trigger = {"endTime": None, "startTime": None} | sent
    if "frequency" in trigger:
        trigger["frequency"] = _capitalised(trigger["frequency"])
    if isinstance(trigger.get("schedule"), dict):
        schedule = {"monthDays": None} | trigger["schedule"]
        if schedule.get("weekDays"):
            schedule["weekDays"] = [_capitalised(d) for d in schedule["weekDays"]]
        trigger["schedule"] = schedule
    return trigger


def _monitor(sent: dict[str, Any]) -> dict[str, Any]:
    """A CreateMonitor definition as the recorded service echoes it."""
    definition = {"monitoringTarget": None, "alertNotificationSetting": None} | sent
    signals = {}
    for name, signal in (sent.get("signals") or {}).items():
        signal = dict(signal)
        if signal.get("signalType") == "DataDrift":  # the one signal type recorded
            signal = dict.fromkeys(DRIFT_SIGNAL_NULLS) | signal
            signal["metricThresholds"] = [
                threshold | {"metric": _capitalised(threshold.get("metric"))}
                for threshold in signal.get("metricThresholds") or []
            ]
            for data in ("productionData", "referenceData"):
                if isinstance(signal.get(data), dict):
                    signal[data] = dict.fromkeys(MONITOR_INPUT_NULLS) | signal[data]
        signals[name] = signal
    definition["signals"] = signals
    return definition


class ScheduleApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    def add_schedule_routes(self) -> None:
        r = self._route
        schedule = WS + r"/schedules/(?P<name>[^/]+)"
        r("PUT", schedule, source=RECORDING + "#2")(self._put_schedule)
        r("GET", schedule, source=RECORDING + "#5")(self._get_schedule)

    def _put_schedule(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "schedule"):
            return bad
        found = self._ws(sub, rg, ws)
        if found is None:
            return arm_error(404, "ResourceNotFound", f"workspace {ws} not found")
        sent = (request.json() or {}).get("properties") or {}
        action = dict(sent.get("action") or {})
        extra = {}
        if action.get("actionType") == "CreateMonitor":
            action["monitorDefinition"] = _monitor(action.get("monitorDefinition") or {})
            extra = {"azureml.telemetry.attribution": "modelmonitoring"}
        existing = found.schedules.get(name)
        props = {
            "description": sent.get("description"),
            "tags": sent.get("tags") or {},
            "properties": dict(sent.get("properties") or {}) | extra,
            "displayName": sent.get("displayName"),
            "isEnabled": sent.get("isEnabled", True),
            "trigger": _trigger(sent.get("trigger") or {}),
            "action": action,
            "provisioningState": "Updating" if existing else "Creating",
        }
        resource = {
            "name": name,
            "properties": props,
            "systemData": existing["systemData"] if existing else system_data(),
        }
        found.schedules[name] = resource

        def done() -> None:
            props["provisioningState"] = "Succeeded"
            if props["trigger"].get("startTime") is None:  # recorded: set, without a zone
                started = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
                props["trigger"]["startTime"] = started.isoformat()

        lro = self._start_lro(request, found, "s", done)
        lro.document = _status_document
        if lro.error:
            props["provisioningState"] = "Failed"
        api = request.query["api-version"]
        location = f"https://{ARM_HOST}{found.arm_id}/schedules/{name}?api-version={api}"
        headers = self._lro_headers(lro, found, api) | {"Location": location}
        # recorded: the PUT's answer is the properties alone
        return Reply(200 if existing else 201, {"properties": props}, headers)

    def _get_schedule(self, request: SeenRequest, sub: str, rg: str, ws: str, name: str) -> Reply:
        if bad := self._api_version(request, "schedule"):
            return bad
        found = self._ws(sub, rg, ws)
        resource = found.schedules.get(name) if found else None
        if resource is None:
            # no recording shows it; the workspace assets' 404 (test_model...crud_file.json)
            return arm_error(404, "UserError", f"Schedule {name} not found.", "ResourceNotFound")
        return Reply(200, resource)
