"""Managed online endpoints behind the `Endpoints` Protocol: blue/green with traffic and mirror.

Every deployment is the online deployment YAML of components/serving (the scoring script in
Azure ML's `init()`/`run()` form, its inference environment, probes, request settings and data
collector) with the name, endpoint, model and the model's settings filled in: the very files the
local backend runs in the very same inference server. There is no no-code MLflow path (Azure
ML's generated MLflow container fails for models logged with MLflow >= 3.7).

Endpoints use `auth_mode: aad_token`, so callers present an Entra token from their own identity
and no endpoint key exists to leak. They run under the user-assigned identity the topology names
for their environment (infra/ creates it and grants what it needs to pull the model, the
environment image and to write collected data); environments without one get a system-assigned
identity. A deployment that fails to provision raises DeploymentFailed and never gets traffic:
traffic only moves in `set_traffic`, which states the whole routing (live and mirror) every time.

The scoring script collects `model_inputs` and `model_outputs` with Azure ML's data collector;
`read_capture` reads the collector's hourly JSON lines back through the storage SDK (the drift
monitor's view of production traffic), with the schema in backends/collected_data.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.ai.ml.entities import (
    CodeConfiguration,
    IdentityConfiguration,
    ManagedIdentityConfiguration,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.monitor import MonitorManagementClient

from backends import collected_data
from backends.azure.datastores import DatastorePath
from backends.azure.errors import (
    AzureConflict,
    AzureOperationFailed,
    ResourceBusy,
    explain,
    explained,
)
from backends.azure.retries import SETTLED_STATES, OperationTimedOut, retry_while_busy, wait_for
from backends.pipeline_assets import working_tree_assets
from backends.serving_package import (
    SCORING_SCRIPT,
    code_snapshot,
    deployment_template,
    deployment_variables,
)
from backends.traffic_rules import check_traffic
from records.serving import (
    DeploymentFailed,
    DeploymentHealth,
    DeploymentInfo,
    EndpointInfo,
    ServingMetrics,
)
from records.workspace import ModelVersion

if TYPE_CHECKING:
    import pandas as pd

    from backends.azure.workspace import AzureWorkspace

REGISTRY_MODEL = re.compile(r"^azureml://registries/[^/]+/models/[^/]+/versions/[^/]+$")
ARM_ENDPOINT = "https://management.azure.com"
METRICS_API_VERSION = "2023-10-01"
"""The Metrics - List api-version asked for. azure-mgmt-monitor 7.0.0 sends 2024-02-01 unless
told; the fake's metrics route follows the 2023-10-01 GetMetric example (the response shape is
the same), so this pins the request the fake serves."""
WORKSPACE_MODEL = re.compile(r"^azureml://locations/[^/]+/workspaces/(?P<guid>[^/]+)/models/")
METRICS_INTERVAL = "MLOPS_AZURE_METRICS_INTERVAL"
"""The time grain serving metrics are read in (ISO 8601: PTnS, PTnM or PTnH; default PT1M,
Azure Monitor's smallest for the endpoint metrics; tests against the fake use seconds)."""
INTERVAL = re.compile(r"PT(?P<n>\d+)(?P<unit>[HMS])")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
COLLECTOR_DATASTORE = "workspaceblobstore"
"""Where the data collector writes by default (azure-ai-ml's DEFAULT_MDC_PATH): hourly files
under collected_data.collection_folder(...), registered as the data asset
<endpoint>-<deployment>-<collection> when the deployment is created."""


class AzureEndpoints:
    """The `Endpoints` Protocol on one workspace's managed online endpoints."""

    def __init__(self, workspace: AzureWorkspace) -> None:
        self.workspace = workspace
        self.client = workspace.client
        self.deadline = workspace.connection.deadlines.lro_seconds
        self.busy_poll = workspace.connection.deadlines.busy_poll_seconds
        self._monitor_client: MonitorManagementClient | None = None

    # --- endpoints ---------------------------------------------------------------------------

    def create_or_update_endpoint(self, name: str) -> EndpointInfo:
        """Create the endpoint under the environment's identity if it does not exist. An
        existing endpoint is left as it is (a PUT would replace its traffic with the empty
        traffic of the new definition), once its identity is checked: Azure ML does not change
        an endpoint's identity in place, so one that runs under another identity is refused
        with what to do instead."""
        with explained(f"read endpoint {name} in {self.workspace.name}"):
            try:
                existing = self.client.online_endpoints.get(name)
            except ResourceNotFoundError:
                existing = None
        if existing is not None:
            self._check_identity(existing)
            info = self.get_endpoint(name)
            assert info is not None
            return info
        endpoint = ManagedOnlineEndpoint(
            name=name,
            auth_mode="aad_token",
            description=f"readmission model ({self.workspace.environment})",
            tags={"environment": self.workspace.environment},
            identity=self._identity(),
        )
        return self._put_endpoint(endpoint, f"create endpoint {name}")

    def _identity(self) -> IdentityConfiguration:
        """The topology's user-assigned identity for this environment, else a system-assigned
        one (Azure ML grants that one pull rights on the workspace's own registry and storage
        only: enough for workspace models, not for the shared registry's)."""
        resource_id = self.workspace.spec.endpoint_identity
        if resource_id is None:
            return IdentityConfiguration(type="system_assigned")
        return IdentityConfiguration(
            type="user_assigned",
            user_assigned_identities=[ManagedIdentityConfiguration(resource_id=resource_id)],
        )

    def _check_identity(self, endpoint: ManagedOnlineEndpoint) -> None:
        wanted = self.workspace.spec.endpoint_identity
        identity = endpoint.identity
        kind = str(getattr(identity, "type", "") or "").replace("_", "").lower()
        held = sorted(
            str(u.resource_id).lower()
            for u in (getattr(identity, "user_assigned_identities", None) or [])
            if u.resource_id
        )
        if (wanted is None and kind == "systemassigned") or (
            wanted is not None and kind == "userassigned" and held == [wanted.lower()]
        ):
            return
        have = f"the user-assigned identity {', '.join(held)}" if held else f"a {kind} identity"
        want = (
            f"the user-assigned identity {wanted}"
            if wanted
            else "a system-assigned identity (the topology names no endpoint_identity)"
        )
        raise AzureConflict(
            f"endpoint {endpoint.name!r} in workspace {self.workspace.name} runs under {have}, "
            f"but {self.workspace.environment} endpoints run under {want}. Azure ML does not "
            "change an endpoint's identity in place (a system-assigned identity is fixed when the "
            "endpoint is created), and its deployments pull models and write collected data as "
            "that identity. Move the endpoint's traffic elsewhere, delete it (`az ml "
            f"online-endpoint delete -n {endpoint.name} -w {self.workspace.name} -g "
            f"{self.workspace.spec.resource_group}`) and run the release again: it creates the "
            "endpoint under the identity the topology names",
            code="EndpointIdentityMismatch",
        )

    def _put_endpoint(self, definition: ManagedOnlineEndpoint, what: str) -> EndpointInfo:
        """Create or update the endpoint, wait for it, and read back what Azure now holds."""
        name = str(definition.name)
        self._wait(
            lambda: self.client.online_endpoints.begin_create_or_update(definition),
            what,
            name,
        )
        info = self.get_endpoint(name)
        assert info is not None
        return info

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        with explained(f"read endpoint {name} in {self.workspace.name}"):
            try:
                endpoint = self.client.online_endpoints.get(name)
            except ResourceNotFoundError:
                return None
            deployments = list(self.client.online_deployments.list(endpoint_name=name))
        return EndpointInfo(
            name=name,
            scoring_uri=str(endpoint.scoring_uri or ""),
            deployments=tuple(sorted((_info(d) for d in deployments), key=lambda d: d.name)),
            traffic={k: int(v) for k, v in (endpoint.traffic or {}).items()},
            mirror_traffic={k: int(v) for k, v in (endpoint.mirror_traffic or {}).items()},
        )

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and its deployments; one that is gone is not an error."""
        self._delete(
            lambda: self.client.online_endpoints.begin_delete(name=name),
            f"delete endpoint {name}",
            name,
        )

    # --- deployments ------------------------------------------------------------------------

    def create_or_update_deployment(
        self,
        endpoint: str,
        deployment: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None = None,
    ) -> DeploymentInfo:
        """Provision `model` as `deployment` with no traffic: the serving package's online
        deployment (scoring script, inference environment, probes, request settings, data
        collector) with the model's own settings. `model_dir` is not uploaded: Azure pulls the
        registered version itself. `environment` is the inference environment's reference
        (e.g. the shared registry's version); None registers the working tree's here."""
        definition = self._definition(endpoint, deployment, model, environment)
        try:
            self._wait(  # a copy per attempt: the SDK consumes parts of what it sends
                lambda: self.client.online_deployments.begin_create_or_update(
                    copy.deepcopy(definition)
                ),
                f"deploy {model.name} v{model.version} as {deployment} on {endpoint}",
                endpoint,
                deployment,
            )
        except ResourceBusy:
            raise  # nothing was provisioned: another operation held the deployment throughout
        except (AzureOperationFailed, OperationTimedOut) as error:
            raise DeploymentFailed(
                f"deployment {deployment!r} of endpoint {endpoint!r} failed to provision: "
                f"{error}. It has no traffic; the live deployment is unchanged. Logs: "
                f"{self._logs_hint(endpoint, deployment)}"
            ) from error
        with explained(f"read deployment {deployment} of {endpoint}"):
            created = self.client.online_deployments.get(name=deployment, endpoint_name=endpoint)
        info = _info(created)
        if info.state != "Succeeded":
            raise DeploymentFailed(
                f"deployment {deployment!r} of endpoint {endpoint!r} is {info.state}, not "
                f"Succeeded; it has no traffic. Logs: {self._logs_hint(endpoint, deployment)}"
            )
        return info

    def _definition(
        self, endpoint: str, deployment: str, model: ModelVersion, environment: str | None
    ) -> ManagedOnlineDeployment:
        """The deployment YAML, freshly loaded (the SDK consumes parts of the data collector
        when it serializes, so nothing is reused between calls), with this deployment's name,
        endpoint, model, code snapshot, environment and variables."""
        definition = deployment_template()
        definition.name = deployment
        definition.endpoint_name = endpoint
        definition.model = self.model_reference(model)
        definition.code_configuration = CodeConfiguration(
            code=str(code_snapshot(self.workspace.cache / "serving-code")),
            scoring_script=SCORING_SCRIPT,
        )
        definition.environment = environment or self.environment_reference()
        definition.environment_variables = deployment_variables(model)
        definition.tags = {"model_name": model.name, "model_version": model.version}
        return definition

    def environment_reference(self) -> str:
        """The working tree's inference environment, registered in this workspace once per
        content version (the workspace's asset store reads first, so a re-run creates
        nothing): what an ad-hoc deployment without an environment reference runs in."""
        return self.workspace.assets.ensure_environment(working_tree_assets().inference)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Delete a deployment with no traffic (Azure refuses one with traffic)."""
        self._delete(
            lambda: self.client.online_deployments.begin_delete(
                name=deployment, endpoint_name=endpoint
            ),
            f"delete deployment {deployment} of {endpoint}",
            endpoint,
            deployment,
        )

    def model_reference(self, model: ModelVersion) -> str:
        """Registry models by their registry id; workspace models only in their own workspace
        (AML deploys from the endpoint's workspace or a registry, nothing else)."""
        if REGISTRY_MODEL.match(model.source):
            return model.source
        match = WORKSPACE_MODEL.match(model.source)
        if match and match["guid"] != self.workspace.location_and_guid[1]:
            raise DeploymentFailed(
                f"{model.name} v{model.version} lives in another workspace ({model.source}); "
                f"promote it to the shared registry and deploy it from there"
            )
        return f"azureml:{model.name}:{model.version}"

    # --- traffic ----------------------------------------------------------------------------

    def set_traffic(
        self, endpoint: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int] | None
    ) -> EndpointInfo:
        """Replace the whole routing; `mirror_traffic=None` means no mirroring."""
        mirror = dict(mirror_traffic or {})
        info = self.get_endpoint(endpoint)
        if info is None:
            raise AzureOperationFailed(
                f"endpoint {endpoint!r} does not exist in {self.workspace.name}; create it first"
            )
        # refused here in plain words, before a ten-minute update starts; Azure decides which
        # deployments can take traffic, so none is assumed down
        check_traffic(endpoint, [d.name for d in info.deployments], dict(traffic), mirror)
        with explained(f"read endpoint {endpoint}"):
            definition = self.client.online_endpoints.get(endpoint)
        definition.traffic = {k: int(v) for k, v in traffic.items()}
        definition.mirror_traffic = mirror
        return self._put_endpoint(
            definition, f"set traffic of {endpoint} to {dict(traffic)} (mirror {mirror})"
        )

    def serving_metrics(self, endpoint: str, start: datetime, end: datetime) -> ServingMetrics:
        """Requests, errors and p95 latency per deployment over [start, end), from the Azure
        Monitor metrics of the endpoint, with how much of the window they cover yet. One query,
        never waiting: RequestsPerMinute (Total) and RequestLatency_P95 (Average) per time
        grain (MLOPS_AZURE_METRICS_INTERVAL, default PT1M), split by deployment, status code
        class and model status code, over the window widened to whole grains.

        Requests-per-minute and latency are endpoint-scope metrics; a container that answers
        anything but 200 reaches the caller as 424, so its 5xx answers are counted by the model
        status code, and the endpoint's own 5xx answers by the status code class. A deployment's
        p95 is the highest of its per-grain p95s over the series that were not errors: a
        conservative stand-in for the window's p95, which the per-grain figures cannot give.

        Azure Monitor publishes a grain's figures minutes after the grain ends, so the answer
        says how far they go: `covered_until` is the end of the latest grain with a figure in
        any series of the endpoint (a latency, or a request count above zero: a zero total is
        no evidence that the grain was published), None if there is none yet. That assumes a
        grain is published whole, and that some request reaches the endpoint in every grain
        (the rollout's canaries keep one flowing per grain), so a later grain with figures
        means the earlier ones are complete rather than empty."""
        for moment, what in ((start, "start"), (end, "end")):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{what} {moment.isoformat()} has no timezone; pass an aware one")
        if end <= start:
            raise ValueError(f"serving_metrics needs a window that ends after it starts: {start}")
        grain = metrics_interval()
        first, last = _floor(start, grain), _ceil(end, grain)
        with explained(f"read endpoint {endpoint}"):
            resource = self.client.online_endpoints.get(endpoint)
        with explained(f"read the Azure Monitor metrics of endpoint {endpoint}"):
            answer = self._monitor().metrics.list(
                str(resource.id),
                timespan=f"{_iso_utc(first)}/{_iso_utc(last)}",
                interval=_iso_duration(grain),
                metricnames="RequestsPerMinute,RequestLatency_P95",
                aggregation="Total,Average",
                filter="deployment eq '*' and statusCodeClass eq '*' and modelStatusCode eq '*'",
                api_version=METRICS_API_VERSION,
            )
        if answer.interval:  # the grain Azure answered in
            with contextlib.suppress(ValueError):  # one not of these forms: the grain asked for
                grain = parse_interval(str(answer.interval))
        requests: dict[str, int] = {}
        errors: dict[str, int] = {}
        p95: dict[str, float] = {}
        latest: datetime | None = None
        for metric in answer.value or []:
            counts = metric.name is not None and metric.name.value == "RequestsPerMinute"
            for series in metric.timeseries or []:
                dimensions = {
                    str(m.name.value).lower(): str(m.value)
                    for m in series.metadatavalues or []
                    if m.name is not None
                }
                deployment = dimensions.get("deployment", "")
                failed = dimensions.get("statuscodeclass") == "5xx" or dimensions.get(
                    "modelstatuscode", ""
                ).startswith("5")
                for point in series.data or []:
                    value = point.total if counts else point.average
                    if value is None or (counts and not value):
                        continue  # nothing measured in this grain, or not published yet
                    stamp = point.time_stamp.astimezone(UTC)
                    latest = stamp if latest is None else max(latest, stamp)
                    if counts:
                        requests[deployment] = requests.get(deployment, 0) + round(value)
                        if failed:
                            errors[deployment] = errors.get(deployment, 0) + round(value)
                    elif not failed:
                        p95[deployment] = max(p95.get(deployment, 0.0), float(value))
        return ServingMetrics(
            endpoint=endpoint,
            start=first,
            end=last,
            covered_until=None if latest is None else latest + grain,
            deployments={
                name: DeploymentHealth(name, count, errors.get(name, 0), p95.get(name))
                for name, count in sorted(requests.items())
                if count > 0
            },
        )

    def _monitor(self) -> MonitorManagementClient:
        """azure-mgmt-monitor's client for the Azure Monitor REST API, on the connection's
        credential, transport and retry settings (the same injection point as MLClient's)."""
        if self._monitor_client is None:
            conn = self.workspace.connection
            kwargs = {k: v for k, v in conn.client_kwargs().items() if k != "show_progress"}
            self._monitor_client = MonitorManagementClient(
                conn.credential, self.workspace.spec.subscription_id, ARM_ENDPOINT, **kwargs
            )
        return self._monitor_client

    # --- calling ----------------------------------------------------------------------------

    def get_key(self, name: str) -> str:
        """An Entra token for the endpoint (auth_mode aad_token): the caller's own identity,
        short-lived; there is no endpoint key."""
        with explained(f"get a token for endpoint {name}"):
            token = self.client.online_endpoints.get_keys(name)
        return str(getattr(token, "access_token", "") or getattr(token, "primary_key", ""))

    def invoke(self, endpoint: str, body: Mapping[str, Any], deployment: str | None = None) -> Any:
        """Score one request through Azure (the SDK attaches the caller's Entra token)."""
        with tempfile.TemporaryDirectory() as tmp:
            request = Path(tmp) / "request.json"
            request.write_text(json.dumps(body))
            with explained(f"invoke endpoint {endpoint}"):
                reply = self.client.online_endpoints.invoke(
                    endpoint_name=endpoint, request_file=str(request), deployment_name=deployment
                )
        return json.loads(reply)

    def deployment_logs(self, endpoint: str, deployment: str, lines: int = 100) -> str:
        with explained(f"read the logs of {deployment} on {endpoint}"):
            return str(
                self.client.online_deployments.get_logs(
                    name=deployment, endpoint_name=endpoint, lines=lines
                )
            )

    # --- data capture -----------------------------------------------------------------------

    def read_capture(self, name: str, since: datetime) -> pd.DataFrame:
        """What the data collector logged since `since`: one row per scored input row, its
        `model_inputs` fields joined with the `model_outputs` row the scoring script collected
        for it (same correlation id), in backends/collected_data.py's schema. Collected records
        do not say whether a request was a mirrored copy (see `counted_as_mirrored`)."""
        import pandas as pd

        info = self.get_endpoint(name)
        if info is None:
            return pd.DataFrame()
        rows: list[dict[str, Any]] = []
        for deployment in info.deployments:
            rows += collected_data.collected_rows(
                self._collected(name, deployment.name, "model_inputs", since),
                self._collected(name, deployment.name, "model_outputs", since),
                deployment=deployment.name,
                model_version=deployment.model_version,
                mirrored=collected_data.counted_as_mirrored(
                    deployment.name, info.traffic, info.mirror_traffic
                ),
            )
        return pd.DataFrame.from_records(rows)

    def _collected(
        self, endpoint: str, deployment: str, collection: str, since: datetime
    ) -> list[dict[str, Any]]:
        """The collection's events logged at or after `since`. Only the days in the window are
        listed (the whole folder once for windows over a month)."""
        root = self._collection_folder(endpoint, deployment, collection)
        store = self.workspace.datastores
        since = since.astimezone(UTC)
        first_hour = since.replace(minute=0, second=0, microsecond=0)
        first_day, today = first_hour.date(), datetime.now(UTC).date()
        days = [first_day + timedelta(days=n) for n in range((today - first_day).days + 1)]
        folders = (
            [DatastorePath(root.datastore, f"{root.path}/{day:%Y/%m/%d}/") for day in days]
            if len(days) <= 31
            else [DatastorePath(root.datastore, f"{root.path}/")]
        )
        events: list[dict[str, Any]] = []
        for folder in folders:
            for blob in store.names(folder):
                rolled = collected_data.ROLLED_HOUR.search(blob)
                if rolled is None:
                    continue
                year, month, day, hour_of_day = (int(rolled[k]) for k in "ymdh")
                hour = datetime(year, month, day, hour_of_day, tzinfo=UTC)
                if hour < first_hour:
                    continue
                lines = store.read(root.datastore, blob).splitlines()
                events += collected_data.parse_events(lines, since)
        return events

    def _collection_folder(self, endpoint: str, deployment: str, collection: str) -> DatastorePath:
        """Where the collection's files are: the data asset azure-ai-ml registered for it when
        the deployment was created, else Azure's default folder."""
        with explained(f"read the {collection} data asset of {endpoint}/{deployment}"):
            try:
                asset = self.client.data.get(f"{endpoint}-{deployment}-{collection}", "1")
                return DatastorePath.parse(str(asset.path))
            except (ResourceNotFoundError, ValueError):
                return DatastorePath(
                    COLLECTOR_DATASTORE,
                    collected_data.collection_folder(endpoint, deployment, collection),
                )

    # --- internals --------------------------------------------------------------------------

    def _wait(self, start: Any, what: str, endpoint: str, deployment: str | None = None) -> Any:
        """Start a write (retried while another operation holds the endpoint or deployment,
        see retries.retry_while_busy) and wait for its operation."""
        where = f"endpoint {endpoint} in workspace {self.workspace.name}"
        try:
            poller = retry_while_busy(
                start,
                lambda: self._busy(endpoint, deployment),
                self.deadline,
                self.busy_poll,
                what,
            )
            return wait_for(poller, self.deadline, what, where)
        except (HttpResponseError, AzureOperationFailed) as error:
            raise explain(what, error) from error

    def _busy(self, endpoint: str, deployment: str | None) -> tuple[str, str]:
        """Which of the deployment (when given), the endpoint and its deployments an operation
        still holds, and its provisioningState; else the written resource, settled."""
        where = f"in workspace {self.workspace.name}"
        with explained(f"read endpoint {endpoint} {where}"):
            held: list[tuple[str, Any]] = []
            if deployment is not None:
                try:
                    found = self.client.online_deployments.get(
                        name=deployment, endpoint_name=endpoint
                    )
                    held.append((f"deployment {deployment} of endpoint {endpoint}", found))
                except ResourceNotFoundError:
                    pass
            try:
                held.append((f"endpoint {endpoint}", self.client.online_endpoints.get(endpoint)))
                for other in self.client.online_deployments.list(endpoint_name=endpoint):
                    held.append((f"deployment {other.name} of endpoint {endpoint}", other))
            except ResourceNotFoundError:
                pass
        for label, resource in held:
            state = resource.provisioning_state
            state = str(getattr(state, "value", state) or "Unknown")
            if state not in SETTLED_STATES:
                return f"{label} {where}", state
        return f"endpoint {endpoint} {where}", "Succeeded" if held else "NotFound"

    def _delete(self, start: Any, what: str, endpoint: str, deployment: str | None = None) -> None:
        try:
            self._wait(start, what, endpoint, deployment)
        except AzureOperationFailed as error:
            if error.status != 404:
                raise

    def _logs_hint(self, endpoint: str, deployment: str) -> str:
        try:
            tail = self.deployment_logs(endpoint, deployment, lines=20).strip()
        except AzureOperationFailed:
            tail = ""
        return tail or (
            f"`az ml online-deployment get-logs -e {endpoint} -n {deployment} "
            f"-w {self.workspace.name}`"
        )


def metrics_interval() -> timedelta:
    """The grain of MLOPS_AZURE_METRICS_INTERVAL (default PT1M)."""
    return parse_interval(os.environ.get(METRICS_INTERVAL, "").strip() or "PT1M")


def parse_interval(text: str) -> timedelta:
    """An ISO 8601 duration of the simple forms PTnS, PTnM and PTnH (n > 0)."""
    match = INTERVAL.fullmatch(text)
    if match is None or int(match["n"]) == 0:
        raise ValueError(
            f"metrics interval {text!r} is not an ISO 8601 duration of the form PTnS, PTnM or "
            f"PTnH with n > 0 (e.g. PT1M, Azure Monitor's grain for endpoint metrics); set "
            f"{METRICS_INTERVAL} to one"
        )
    unit = {"H": "hours", "M": "minutes", "S": "seconds"}[match["unit"]]
    return timedelta(**{unit: int(match["n"])})


def _iso_duration(grain: timedelta) -> str:
    seconds = int(grain.total_seconds())
    for unit, size in (("H", 3600), ("M", 60)):
        if seconds % size == 0:
            return f"PT{seconds // size}{unit}"
    return f"PT{seconds}S"


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor(moment: datetime, grain: timedelta) -> datetime:
    """The start of the grain `moment` falls in (grains are multiples of `grain` since the
    epoch, as Azure Monitor aligns them)."""
    return EPOCH + (moment - EPOCH) // grain * grain


def _ceil(moment: datetime, grain: timedelta) -> datetime:
    floor = _floor(moment, grain)
    return floor if floor == moment else floor + grain


def _info(deployment: ManagedOnlineDeployment) -> DeploymentInfo:
    tags = deployment.tags or {}
    state = deployment.provisioning_state  # an enum in some SDK paths, a string in others
    return DeploymentInfo(
        name=str(deployment.name),
        model_name=str(tags.get("model_name", "")),
        model_version=str(tags.get("model_version", "")),
        state=str(getattr(state, "value", state) or "Unknown"),
    )
