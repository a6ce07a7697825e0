"""An environment's Azure ML batch endpoint and its inbox on a datastore, behind `BatchScoring`.

Files dropped under `<inbox>/` on the workspace's datastore are listed and read through
azure-storage-blob (datastores.py: the caller's own Entra identity, no account key). Scoring one
is one batch job of the endpoint's default deployment: `components/serving/batch-deployment.yml`
(the batch scoring script, the online deployment's inference environment and code snapshot with
the data contract) holding the champion from the shared registry.

The job writes its own outputs (the deployment's `summary_only` action, Azure ML's "Customize
outputs in batch deployments"): `invoke(..., outputs={"score": Output(uri_folder, path)})`
points the job's output folder, AZUREML_BI_OUTPUT_PATH inside the script, straight at the
file's results folder, `<results>/<results_prefix(file, model)>/`, so `scored/<stem>.parquet`
and `rejects/<stem>.parquet` land where the local backend puts them. This process then judges
the row error threshold (Azure ML's own `error_threshold` counts files, not rows), drops the
scored rows of a job past it, and writes `summary.json` last: its presence is what "finished"
means, on both backends.

Batch endpoints carry no identity in azure-ai-ml 1.35 (BatchEndpoint sends description,
authMode, properties and defaults only): a batch job reads its input with the invoker's
identity and pulls the model and image as the compute cluster's identity (Azure ML's
"Authorization on batch endpoints"), which infra/ grants. The topology's endpoint identity is
therefore not sent here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from azure.ai.ml import Input, Output, load_batch_deployment
from azure.ai.ml.entities import (
    BatchEndpoint,
    BatchRetrySettings,
    CodeConfiguration,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
)
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from backends.azure.datastores import DatastorePath
from backends.azure.endpoints import AzureEndpoints
from backends.azure.errors import AzureOperationFailed, explain, explained
from backends.azure.pipelines import TERMINAL
from backends.azure.retries import poll_until, wait_for
from backends.collected_data import batch_rows_as_captured
from backends.serving_package import SERVING_DIR, code_snapshot, model_settings
from records.batch import (
    REJECTS_DIR,
    SCORED_DIR,
    SUMMARY_FILE,
    BatchScoringFailed,
    BatchSummary,
    InboxFile,
    results_prefix,
)
from records.serving import DeploymentFailed
from records.workspace import ModelVersion
from settings import BatchSettings, load_batch_settings

if TYPE_CHECKING:
    import pandas as pd

    from backends.azure.workspace import AzureWorkspace

BATCH_DEPLOYMENT_FILE = SERVING_DIR / "batch-deployment.yml"
BATCH_SCORING_SCRIPT = "batch_score.py"
CLAIM_FILE = "claim.json"
"""Held in a results folder while a run scores into it (see AzureBatchScoring._claim)."""
OUTPUT_NAME = "score"
"""The output a model deployment's job writes to (Azure ML's batch examples name it so)."""
DEPLOYMENT_NAME_LENGTH = 32
"""Azure ML's limit on endpoint and deployment names (letters, digits, '-'; a letter first)."""
_DOWNLOAD_CHUNK = 4 << 20


def deployment_name(model: ModelVersion) -> str:
    """`<model>-v<version>` within Azure's naming rules; a name cut to fit keeps a hash of
    the whole, so two versions never share a deployment."""
    wanted = f"{model.name}-v{model.version}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", wanted).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    if len(name) > DEPLOYMENT_NAME_LENGTH or name != wanted:
        digest = hashlib.sha256(wanted.encode()).hexdigest()[:6]
        name = f"{name[: DEPLOYMENT_NAME_LENGTH - 7].rstrip('-')}-{digest}"
    return name


class AzureBatchScoring:
    """The `BatchScoring` Protocol on one workspace's batch endpoint and datastore folders."""

    def __init__(self, workspace: AzureWorkspace, settings: BatchSettings | None = None) -> None:
        self.workspace = workspace
        self.client = workspace.client
        self.settings = settings or load_batch_settings()
        self.datastore = self.settings.datastore
        self.inbox_folder = self.settings.inbox.strip("/")
        self.results_folder = self.settings.results.strip("/")
        self.inbox = self._uri(self.inbox_folder + "/")
        self.deadline = workspace.connection.deadlines.lro_seconds
        self.poll_seconds = workspace.connection.deadlines.job_poll_seconds
        self.cache = workspace.cache / "batch"
        self._online = AzureEndpoints(workspace)  # model and environment references, as online

    # --- the inbox -------------------------------------------------------------------------

    def inbox_files(self, since: datetime | None = None) -> list[InboxFile]:
        """The blobs under the inbox folder modified at or after `since`, oldest first (last
        modified, then name); only those are downloaded to be hashed."""
        container = self._container()
        prefix = self.inbox_folder + "/"
        with explained(f"list the batch inbox {self.inbox} of {self.workspace.name}"):
            blobs = [
                b
                for b in container.list_blobs(name_starts_with=prefix)
                if not b.name.endswith("/") and (since is None or b.last_modified >= since)
            ]
        blobs.sort(key=lambda b: (b.last_modified, b.name))
        return [self._inbox_file(b.name, b.etag, b.size, b.last_modified) for b in blobs]

    def inbox_file(self, name_or_uri: str) -> InboxFile:
        """A name under the inbox or an `azureml://datastores/<name>/paths/<path>` URI."""
        if name_or_uri.startswith("azureml://"):
            where = DatastorePath.parse(name_or_uri)
            if where.datastore != self.datastore:
                raise FileNotFoundError(
                    f"{name_or_uri} is in datastore {where.datastore}; batch scoring reads files "
                    f"in {self.datastore} (config/batch.yaml's datastore): copy it there"
                )
            path = where.path
        else:
            path = f"{self.inbox_folder}/{name_or_uri.strip('/')}"
        blob = self._container().get_blob_client(path)
        with explained(f"read {path} in datastore {self.datastore} of {self.workspace.name}"):
            try:
                found = blob.get_blob_properties()
            except ResourceNotFoundError:
                raise FileNotFoundError(
                    f"{path} is not in datastore {self.datastore} of {self.workspace.name} "
                    f"(looked for {name_or_uri!r}; the inbox is {self.inbox})"
                ) from None
        return self._inbox_file(path, found.etag, found.size, found.last_modified)

    def local_copy(self, file: InboxFile) -> Path:
        """The downloaded copy hashing made (downloaded again if it is gone)."""
        target = self._copy_path(file.sha256, PurePosixPath(file.name).name)
        if not target.is_file():
            where = DatastorePath.parse(file.uri)
            digest = self._download(where.path, target)
            if digest != file.sha256:
                target.unlink()
                raise FileNotFoundError(
                    f"{file.uri} no longer holds the content it was listed with (sha256 "
                    f"{file.sha256[:12]}, now {digest[:12]}); list the inbox again"
                )
        return target

    def put_inbox_file(self, source: Path, name: str) -> InboxFile:
        """One upload: a blob is visible only once its blocks are committed, so the watcher
        never sees half a file."""
        path = f"{self.inbox_folder}/{name.strip('/')}"
        with (
            explained(f"upload {source} to {self._uri(path)} of {self.workspace.name}"),
            source.open("rb") as data,
        ):
            self._container().upload_blob(path, data, overwrite=True)
        return self.inbox_file(name)

    def results_copy(self, summary: BatchSummary, into: Path) -> tuple[Path, Path]:
        copies = []
        for uri in (summary.scored, summary.rejects):
            where = DatastorePath.parse(uri)
            target = into / PurePosixPath(where.path).parent.name / PurePosixPath(where.path).name
            self._download(where.path, target)
            copies.append(target)
        return copies[0], copies[1]

    def _inbox_file(self, path: str, etag: str, size: int, modified: datetime) -> InboxFile:
        """Hashed by downloading the content, once per blob version (etag). Content-MD5 is no
        substitute: Azure keeps it only when the uploader sent it or uploaded in one shot (a
        blob put in blocks, as azcopy and the SDK do with big files, has none), and the
        exactly-once key is the sha256 both backends compute."""
        name = path.removeprefix(self.inbox_folder + "/")
        index = self._hash_index()
        known = index.get(path)
        digest = known["sha256"] if known and known.get("etag") == etag else None
        if digest is None or not self._copy_path(digest, PurePosixPath(path).name).is_file():
            staging = self.cache / "inbox" / f".{hashlib.sha256(path.encode()).hexdigest()[:16]}"
            digest = self._download(path, staging)
            target = self._copy_path(digest, PurePosixPath(path).name)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.replace(target)
            index[path] = {"etag": etag, "sha256": digest}
            self._save_hash_index(index)
        return InboxFile(name, self._uri(path), digest, int(size), modified.astimezone(UTC))

    def _copy_path(self, sha256: str, file_name: str) -> Path:
        return self.cache / "inbox" / sha256 / file_name

    def _download(self, path: str, target: Path) -> str:
        """Stream a blob to `target` (atomically), returning its sha256."""
        digest = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with explained(f"download {path} from datastore {self.datastore}"):
            try:
                stream = self._container().download_blob(path)
            except ResourceNotFoundError:
                raise FileNotFoundError(
                    f"{path} is not in datastore {self.datastore} of {self.workspace.name}"
                ) from None
            with partial.open("wb") as out:
                for chunk in stream.chunks():
                    digest.update(chunk)
                    out.write(chunk)
        partial.replace(target)
        return digest.hexdigest()

    def _hash_index(self) -> dict[str, dict[str, str]]:
        index = self.cache / "inbox-hashes.json"
        return json.loads(index.read_text()) if index.is_file() else {}

    def _save_hash_index(self, index: dict[str, dict[str, str]]) -> None:
        path = self.cache / "inbox-hashes.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{time.monotonic_ns()}")
        partial.write_text(json.dumps(index, indent=1, sort_keys=True))
        partial.replace(path)

    # --- the endpoint and its deployment ---------------------------------------------------

    def deploy_model(
        self,
        endpoint: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None,
        settings: BatchSettings,
    ) -> str:
        """Create the endpoint if missing; deploy `model` unless a deployment of that version
        already succeeded; make it the endpoint's default. `model_dir` is not uploaded: Azure
        pulls the registered version (the shared registry's, in test and prod)."""
        name = deployment_name(model)
        self._ensure_endpoint(endpoint)
        existing = self._deployment(endpoint, name)
        if not (
            existing is not None
            and (existing.tags or {}).get("model_version") == str(model.version)
            and _state(existing) == "Succeeded"
        ):
            definition = self._definition(endpoint, name, model, environment, settings)
            what = f"deploy {model.name} v{model.version} as batch deployment {name} of {endpoint}"
            try:
                self._wait(
                    lambda: self.client.batch_deployments.begin_create_or_update(definition),
                    what,
                    endpoint,
                )
            except AzureOperationFailed as error:
                raise DeploymentFailed(
                    f"batch deployment {name!r} of {endpoint!r} failed to provision: {error}; "
                    "the endpoint's default deployment is unchanged"
                ) from error
            created = self._deployment(endpoint, name)
            if created is None or _state(created) != "Succeeded":
                state = "missing" if created is None else _state(created)
                raise DeploymentFailed(
                    f"batch deployment {name!r} of {endpoint!r} is {state}, not Succeeded; the "
                    "endpoint's default deployment is unchanged"
                )
        self._make_default(endpoint, name)
        return name

    def _ensure_endpoint(self, endpoint: str) -> BatchEndpoint:
        found = self._endpoint(endpoint)
        if found is not None:
            return found
        definition = BatchEndpoint(
            name=endpoint,
            description=f"readmission model, bulk scoring ({self.workspace.environment})",
            tags={"environment": self.workspace.environment},
        )
        self._wait(
            lambda: self.client.batch_endpoints.begin_create_or_update(definition),
            f"create batch endpoint {endpoint}",
            endpoint,
        )
        created = self._endpoint(endpoint)
        assert created is not None
        return created

    def _default_deployment(self, endpoint: str) -> str:
        found = self._endpoint(endpoint)
        current = _default_name(found) if found is not None else None
        if not current:
            raise AzureOperationFailed(
                f"batch endpoint {endpoint} in {self.workspace.name} "
                f"{'does not exist' if found is None else 'has no default deployment'}; "
                "deploy the champion to it first (the batch-score flow does)"
            )
        return str(current)

    def _make_default(self, endpoint: str, deployment: str) -> None:
        found = self._endpoint(endpoint)
        assert found is not None
        if _default_name(found) == deployment:
            return
        found.defaults = {"deployment_name": deployment}
        self._wait(
            lambda: self.client.batch_endpoints.begin_create_or_update(found),
            f"make {deployment} the default deployment of batch endpoint {endpoint}",
            endpoint,
        )

    def _definition(
        self,
        endpoint: str,
        name: str,
        model: ModelVersion,
        environment: str | None,
        settings: BatchSettings,
    ) -> ModelBatchDeployment:
        """The batch deployment YAML (read by azure-ai-ml, which loads its legacy root-level
        layout as the deprecated BatchDeployment) as a ModelBatchDeployment, with this
        deployment's name, endpoint, model, environment, code snapshot, compute and the
        config's scale, retry and timeout settings."""
        with warnings.catch_warnings():  # "direct usage is deprecated": we only read it
            warnings.simplefilter("ignore")
            template = load_batch_deployment(str(BATCH_DEPLOYMENT_FILE))
        scale = settings.azure
        return ModelBatchDeployment(
            name=name,
            endpoint_name=endpoint,
            description=f"{model.name} v{model.version}",
            tags={"model_name": model.name, "model_version": str(model.version)},
            model=self._online.model_reference(model),
            environment=environment or self._online.environment_reference(),
            code_configuration=CodeConfiguration(
                code=str(code_snapshot(self.workspace.cache / "serving-code")),
                scoring_script=BATCH_SCORING_SCRIPT,
            ),
            compute=self.workspace.spec.compute,
            settings=ModelBatchDeploymentSettings(
                mini_batch_size=scale.mini_batch_size,
                instance_count=scale.instance_count,
                max_concurrency_per_instance=scale.max_concurrency_per_instance,
                output_action=template.output_action,
                output_file_name=template.output_file_name,
                retry_settings=BatchRetrySettings(
                    max_retries=scale.max_retries, timeout=scale.timeout_seconds
                ),
                environment_variables={
                    **{str(k): str(v) for k, v in (template.environment_variables or {}).items()},
                    **model_settings(model),
                },
                error_threshold=template.error_threshold,
                logging_level=template.logging_level,
            ),
        )

    def _endpoint(self, endpoint: str) -> BatchEndpoint | None:
        with explained(f"read batch endpoint {endpoint} in {self.workspace.name}"):
            try:
                return self.client.batch_endpoints.get(endpoint)
            except ResourceNotFoundError:
                return None

    def _deployment(self, endpoint: str, name: str) -> Any:
        with explained(f"read batch deployment {name} of {endpoint}"):
            try:
                return self.client.batch_deployments.get(name=name, endpoint_name=endpoint)
            except ResourceNotFoundError:
                return None

    def _wait(self, start: Any, what: str, endpoint: str) -> Any:
        where = f"batch endpoint {endpoint} in workspace {self.workspace.name}"
        try:
            return wait_for(start(), self.deadline, what, where)
        except (HttpResponseError, AzureOperationFailed) as error:
            raise explain(what, error) from error

    # --- scoring ---------------------------------------------------------------------------

    def score(
        self,
        endpoint: str,
        file: InboxFile,
        model: ModelVersion,
        run_id: str,
        settings: BatchSettings,
    ) -> BatchSummary:
        """One batch job on the file, its outputs written straight to the results folder."""
        folder = f"{self.results_folder}/{results_prefix(file, model)}"
        earlier = self._claim(folder, run_id, settings)
        if earlier is not None:
            return earlier
        try:
            return self._score(endpoint, file, model, run_id, settings)
        finally:
            self._delete(f"{folder}/{CLAIM_FILE}")

    def _claim(self, folder: str, run_id: str, settings: BatchSettings) -> BatchSummary | None:
        """Take the results folder for this run (a conditional create: If-None-Match *), or
        wait for the run that holds it and return its summary. A claim older than the job
        timeout is a run that died: taken over. Two runs on one content never both score."""
        claim = f"{folder}/{CLAIM_FILE}"
        stale_after = settings.azure.job_timeout_seconds
        body = json.dumps({"held_by": run_id, "at": datetime.now(UTC).isoformat()}).encode()
        while True:
            with explained(f"claim {self._uri(folder)} for run {run_id}"):
                try:
                    self._container().upload_blob(claim, body, overwrite=False)
                    return None
                except ResourceExistsError:
                    pass
            held = self._read(claim)
            summary = self._read(f"{folder}/{SUMMARY_FILE}")
            if summary is not None:
                return BatchSummary.from_json(summary.decode())
            if held is not None:
                at = datetime.fromisoformat(json.loads(held)["at"])
                if (datetime.now(UTC) - at).total_seconds() > stale_after:
                    self._write(claim, body)
                    return None
            time.sleep(max(self.poll_seconds, 0.2))

    def _score(
        self,
        endpoint: str,
        file: InboxFile,
        model: ModelVersion,
        run_id: str,
        settings: BatchSettings,
    ) -> BatchSummary:
        """The job itself, once this run holds the claim."""
        started = time.perf_counter()
        folder = f"{self.results_folder}/{results_prefix(file, model)}"
        what = f"score {file.name} with {model.name} v{model.version} on batch endpoint {endpoint}"
        earlier = self._read(f"{folder}/{SUMMARY_FILE}")
        if earlier is not None:  # finished while this run waited for the claim
            return BatchSummary.from_json(earlier.decode())
        deployment = self._default_deployment(endpoint)
        with explained(what):
            job = self.client.batch_endpoints.invoke(
                endpoint_name=endpoint,
                # named every time: azure-ai-ml 1.35 keeps the azureml-model-deployment header
                # of an earlier invoke in a module-level dict (EndpointInvokeFields.
                # DEFAULT_HEADER), so an unnamed call can reach another call's deployment
                deployment_name=deployment,
                input=Input(type="uri_file", path=file.uri),
                outputs={OUTPUT_NAME: Output(type="uri_folder", path=self._uri(folder + "/"))},
            )
        job_name = str(job.name)
        status = poll_until(
            lambda: self._job_status(job_name),
            TERMINAL,
            settings.azure.job_timeout_seconds,
            self.poll_seconds,
            f"batch job {job_name} ({what})",
            f"https://ml.azure.com/runs/{job_name}?wsid={self.workspace.arm_id}",
        )
        scored = f"{folder}/{SCORED_DIR}/{file.stem}.parquet"
        rejects = f"{folder}/{REJECTS_DIR}/{file.stem}.parquet"
        counts = self._counts(scored, rejects)
        failure = None
        if status != "Completed":
            failure = (
                f"batch job {job_name} ended {status}: more files failed in run() than the "
                f"deployment's error_threshold allows; its logs (logs/user/error/) are in Azure "
                f"ML studio: https://ml.azure.com/runs/{job_name}?wsid={self.workspace.arm_id}"
            )
        elif counts.missing:
            failure = (
                f"batch job {job_name} completed but wrote no {counts.missing}: the deployment "
                f"does not run {BATCH_SCORING_SCRIPT}'s output layout; check its code"
            )
        elif 0 <= settings.error_threshold < counts.refused:
            failure = (
                f"{file.name}: {counts.refused:,} of {counts.rows:,} rows were refused, more than "
                f"the error threshold of {settings.error_threshold:,}; by rule: "
                f"{dict(counts.by_rule.most_common())}. The refused rows and their reasons are "
                f"in {self._uri(rejects)}; fix the file or raise the threshold"
            )
        if failure is not None:
            self._delete(scored)  # a failed job's scored rows never look finished
            raise BatchScoringFailed(failure, counts.rows, counts.refused, counts.by_rule)
        summary = BatchSummary(
            input=file.uri,
            scored=self._uri(scored),
            rejects=self._uri(rejects),
            rows=counts.rows,
            rows_scored=counts.scored,
            rows_refused=counts.refused,
            refused_by_rule=dict(counts.by_rule),
            label_rate=counts.positive / counts.scored if counts.scored else None,
            seconds=time.perf_counter() - started,
            model_name=model.name,
            model_version=str(model.version),
            run_id=run_id,
            mini_batches=1,  # one file, and Azure ML never splits a file
            workers=settings.azure.instance_count * settings.azure.max_concurrency_per_instance,
            sha256=file.sha256,
            finished_at=datetime.now(UTC).isoformat(),
            job=job_name,
        )
        self._write(f"{folder}/{SUMMARY_FILE}", summary.to_json().encode())
        return summary

    def _job_status(self, name: str) -> str:
        with explained(f"read batch job {name}"):
            status = self.client.jobs.get(name).status
        return str(getattr(status, "value", status))  # an enum or a string, by SDK path

    def _counts(self, scored: str, rejects: str) -> _Counts:
        """Counted from what the script wrote (a `summary_only` deployment's rows are used by
        Azure only for its file threshold, never written), so they are the files' own."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        counts = _Counts()
        with tempfile.TemporaryDirectory(dir=self._tmp_root()) as tmp:
            for path, kind in ((scored, "scored"), (rejects, "rejects")):
                local = Path(tmp) / f"{kind}.parquet"
                try:
                    self._download(path, local)
                except FileNotFoundError:
                    counts.missing = f"{counts.missing} and {path}" if counts.missing else path
                    continue
                if kind == "scored":
                    labels = pq.read_table(local, columns=["label"])["label"]
                    counts.scored = len(labels)
                    counts.positive = int(pc.sum(labels).as_py() or 0)
                else:
                    rules = pq.read_table(local, columns=["rules"])["rules"].to_pylist()
                    counts.refused = len(rules)
                    for broken in rules:
                        counts.by_rule.update(r for r in str(broken or "").split("; ") if r)
        counts.rows = counts.scored + counts.refused
        return counts

    # --- finished jobs ---------------------------------------------------------------------

    def finished(self, file: InboxFile, model: ModelVersion) -> BatchSummary | None:
        path = f"{self.results_folder}/{results_prefix(file, model)}/{SUMMARY_FILE}"
        data = self._read(path)
        return None if data is None else BatchSummary.from_json(data.decode())

    def read_scored(self, since: datetime) -> pd.DataFrame:
        """The contract's features plus probability and label of every job finished since
        `since`, in the captured rows' columns (backends.collected_data)."""
        import pandas as pd
        import pyarrow.parquet as pq

        from data_checks.readmission_schema import FEATURES

        since = since.astimezone(UTC)
        columns = [*FEATURES, "probability", "label"]
        frames = []
        container = self._container()
        with explained(f"list the batch results {self._uri(self.results_folder)}"):
            summaries = [
                b.name
                for b in container.list_blobs(name_starts_with=self.results_folder + "/")
                if b.name.endswith("/" + SUMMARY_FILE) and b.last_modified >= since
            ]
        with tempfile.TemporaryDirectory(dir=self._tmp_root()) as tmp:
            for number, path in enumerate(sorted(summaries)):
                data = self._read(path)
                if data is None:
                    continue
                summary = BatchSummary.from_json(data.decode())
                if not summary.finished_at or datetime.fromisoformat(summary.finished_at) < since:
                    continue
                local = Path(tmp) / f"{number}.parquet"
                self._download(DatastorePath.parse(summary.scored).path, local)
                frame = pq.read_table(local, columns=columns).to_pandas()
                frames.append(batch_rows_as_captured(frame, summary))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    # --- blobs -----------------------------------------------------------------------------

    def _uri(self, path: str) -> str:
        return f"azureml://datastores/{self.datastore}/paths/{path}"

    def _container(self) -> ContainerClient:
        return self.workspace.datastores.container(self.datastore)

    def _read(self, path: str) -> bytes | None:
        with explained(f"read {path} in datastore {self.datastore} of {self.workspace.name}"):
            try:
                return bytes(self._container().download_blob(path).readall())
            except ResourceNotFoundError:
                return None

    def _write(self, path: str, data: bytes) -> None:
        with explained(f"write {path} in datastore {self.datastore} of {self.workspace.name}"):
            self._container().upload_blob(path, data, overwrite=True)

    def _delete(self, path: str) -> None:
        what = f"delete {path} in datastore {self.datastore} of {self.workspace.name}"
        with explained(what), contextlib.suppress(ResourceNotFoundError):
            self._container().delete_blob(path)

    def _tmp_root(self) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        return self.cache


class _Counts:
    """Rows a job's outputs hold: scored, refused (per rule), labelled 1; what is missing."""

    def __init__(self) -> None:
        self.rows = self.scored = self.refused = self.positive = 0
        self.by_rule: Counter[str] = Counter()
        self.missing = ""


def _default_name(endpoint: BatchEndpoint) -> str | None:
    """The default deployment's name: the SDK hands `defaults` back as a REST model or a dict."""
    defaults: Any = endpoint.defaults
    if isinstance(defaults, dict):
        return defaults.get("deployment_name") or defaults.get("deploymentName")
    return getattr(defaults, "deployment_name", None)


def _state(resource: Any) -> str:
    state = getattr(resource, "provisioning_state", None)
    return str(getattr(state, "value", state) or "Unknown")
