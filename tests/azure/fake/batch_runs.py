"""The compute behind the fake's batch jobs: what Azure ML runs for an invoked batch deployment,
run here for real.

A batch job of a model deployment is a parallel run of the deployment's scoring script (Azure
ML's "Author scoring scripts for batch deployments" and "Customize outputs in batch
deployments"): the input files are split into mini-batches of `miniBatchSize` files, each
worker process calls `init()` once and `run(mini_batch)` with a list of local file paths, with
AZUREML_MODEL_DIR at the model's files and AZUREML_BI_OUTPUT_PATH at the job's output folder
(`outputData.score`, else `azureml/<job>/score/` on the workspace blob store); a mini-batch
whose `run()` raises is retried `retrySettings.maxRetries` times, and the job fails when more
files failed than `errorThreshold` (-1: never). `run()` returns one row per file done; with the
`AppendRow` output action Azure ML appends them to `outputFileName` in the output folder, with
`SummaryOnly` it only counts them (the script writes its own outputs).

Here one thread per job lays out the code asset the SDK uploaded (with data_checks/ copied in)
and the registered model's files as the service does for online deployments (containers.py),
downloads the input blobs, and runs `init()` and every mini-batch in one Python process of the
deployment's environment (a venv built from its conda file, as containers.py builds the online
deployments'; Azure ML builds the image from the same file), then uploads what the script
wrote to the output folder. The job stays Running until then; `jobs.get` then
answers Completed or Failed.

Sources: no recording shows a batch job run to its end or what it writes (the recorded job,
test_batch_invoke.json #21 and #24, is read back only in Preparing); the behaviour above is
the Azure ML documentation's, and the output binding is azure-ai-ml 1.35's
`batch_endpoints.invoke(outputs=...)` wire body (`outputData`). Not reproduced: several
instances and processes (one process runs every mini-batch, in order), per-mini-batch
timeouts, the job's logs folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from backends.serving_package import inference_venv
from tests.azure.fake.containers import write_files
from tests.azure.fake.state import ProvisioningFailed, RouteSource, Workspace

DATASTORE_PATH = re.compile(r"datastores/(?P<datastore>[^/]+)/paths/(?P<path>.*)$")
DRIVER = """
import importlib.util, json, os, sys, traceback
code, script, batches, result, tries = sys.argv[1:6]
sys.path.insert(0, code)
name = os.path.splitext(script)[0]
spec = importlib.util.spec_from_file_location(name, os.path.join(code, script))
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.init()
done = []
for files in json.load(open(batches)):
    error = None
    for _ in range(int(tries)):
        try:
            rows = module.run(files)
            rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
            text = [" ".join(map(str, r.values())) if isinstance(r, dict) else str(r) for r in rows]
            done.append({"files": files, "rows": text})
            break
        except Exception:
            error = traceback.format_exc()
    else:
        done.append({"files": files, "error": error})
json.dump(done, open(result, "w"))
"""
"""Azure ML's parallel-run worker in miniature: import the entry script by file name from the
code folder, init() once, run() per mini-batch with retries, one result per mini-batch."""
RUN_TIMEOUT_SECONDS = 600
WS = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
BATCH_RUN_SOURCES = (
    RouteSource(
        "GET",
        WS + "/workspaces/{ws}/jobs/{name} (a batch job's run)",
        "_finish_job",
        None,
        "Running until the deployment's scoring script has run on the input (init() once, "
        "run() per mini-batch of miniBatchSize files, retried maxRetries times) and its output "
        "folder is in storage, then Completed, or Failed past errorThreshold failed files; "
        "Azure ML's batch scoring docs ('Author scoring scripts for batch deployments', "
        "'Customize outputs in batch deployments') describe this; no recording follows a batch "
        "job past Preparing",
        routed=False,
    ),
    RouteSource(
        "PUT",
        "https://{account}.blob.core.windows.net/{container}/{outputData.score}/... "
        "(a batch job's outputs)",
        "_execute",
        None,
        "what the script wrote under AZUREML_BI_OUTPUT_PATH lands in the invocation's "
        "outputData.score folder (azure-ai-ml 1.35's invoke(outputs=...) wire body), else "
        "azureml/<job>/score/; outputFileName holds run()'s rows with AppendRow only (the SDK "
        "refuses a file name with SummaryOnly); no recording shows a batch job's outputs",
        routed=False,
    ),
)


@dataclass
class BatchRun:
    """One batch job's run: done when the script's outputs are in storage."""

    done: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None


@dataclass(frozen=True)
class BatchRunSpec:
    """What the service takes from the deployment and the invocation (under the lock)."""

    job: str
    code: dict[str, bytes]
    scoring_script: str
    model_name: str
    model_version: str
    model_folder: str
    model_files: dict[str, bytes]
    conda_file: str
    variables: dict[str, str]
    inputs: dict[str, bytes]  # file name -> content
    output: tuple[str, str, str]  # account, container, prefix
    mini_batch_size: int
    tries: int
    error_threshold: int
    output_action: str
    output_file_name: str


class BatchRunApi:
    """Mixed into FakeAzureML (through BatchApi): starts and finishes batch job runs."""

    def _batch_runs(self) -> dict[str, BatchRun]:
        if getattr(self, "_batch_run_state", None) is None:
            self._batch_run_state: dict[str, BatchRun] = {}
        return self._batch_run_state

    def _start_batch_run(
        self, ws: Workspace, name: str, deployment: dict, sent: dict[str, Any]
    ) -> None:
        """Read what the job needs now (the caller holds the lock), run it on a thread."""
        run = BatchRun()
        self._batch_runs()[name] = run
        try:
            spec = self._batch_run_spec(ws, name, deployment, sent)
        except ValueError as refused:
            run.failure = str(refused)
            run.done.set()
            return
        threading.Thread(target=self._run_batch, args=(ws, spec, run), daemon=True).start()

    def _batch_run_spec(
        self, ws: Workspace, name: str, deployment: dict, sent: dict[str, Any]
    ) -> BatchRunSpec:
        props = deployment["properties"]
        code_id = str((props.get("codeConfiguration") or {}).get("codeId") or "")
        code = re.search(r"/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", code_id)
        asset = ws.codes.get(code["name"], {}).get(code["version"]) if code else None
        if asset is None:
            raise ValueError(f"the deployment's code asset {code_id or '(none)'} was not found")
        model_ref = str((props.get("model") or {}).get("assetId") or "")
        model = re.search(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)$", model_ref)
        if model is None:
            raise ValueError(f"the deployment's model {model_ref or '(none)'} was not found")
        folder, model_files = self._model_files(ws, model_ref, model["name"], model["version"])
        try:
            conda = self._environment_conda(ws, str(props.get("environmentId") or ""))  # type: ignore[attr-defined]
        except ProvisioningFailed as missing:
            raise ValueError(missing.message) from None
        job = sent.get("properties") or {}
        inputs: dict[str, bytes] = {}
        for spec in (job.get("inputData") or {}).values():
            inputs |= self._input_files(ws, str(spec.get("uri") or ""))
        outputs = job.get("outputData") or {}
        output_uri = str((outputs.get("score") or {}).get("uri") or "")
        output = (
            self._datastore_location(ws, output_uri)
            if output_uri
            else (ws.storage_account, ws.container, f"azureml/{name}/score")
        )
        retry = props.get("retrySettings") or {}
        return BatchRunSpec(
            job=name,
            code=self._code_files(asset["properties"]["codeUri"]),
            scoring_script=str(props["codeConfiguration"].get("scoringScript") or ""),
            model_name=model["name"],
            model_version=model["version"],
            model_folder=folder,
            model_files=model_files,
            conda_file=conda,
            variables={k: str(v) for k, v in (props.get("environmentVariables") or {}).items()},
            inputs=inputs,
            output=output,
            mini_batch_size=max(1, int(props.get("miniBatchSize") or 10)),
            tries=1 + int(retry.get("maxRetries", 3)),
            error_threshold=int(props.get("errorThreshold", -1)),
            output_action=str(props.get("outputAction") or "AppendRow"),
            output_file_name=str(props.get("outputFileName") or "predictions.csv"),
        )

    def _datastore_location(self, ws: Workspace, uri: str) -> tuple[str, str, str]:
        """(account, container, path) of an `azureml://...datastores/<d>/paths/<p>` URI."""
        match = DATASTORE_PATH.search(uri)
        store = self._datastore(ws, match["datastore"]) if match else None  # type: ignore[attr-defined]
        if match is None or store is None:
            raise ValueError(f"{uri} is not a path on a datastore of workspace {ws.name}")
        props = store["properties"]
        return props["accountName"], props["containerName"], match["path"].rstrip("/")

    def _input_files(self, ws: Workspace, uri: str) -> dict[str, bytes]:
        """A UriFile's blob, or every blob under a UriFolder, by file name."""
        account, container, path = self._datastore_location(ws, uri)
        blobs = self.blobs.get((account, container), {})  # type: ignore[attr-defined]
        if path in blobs:
            return {PurePosixPath(path).name: blobs[path].data}
        found = {
            name[len(path) + 1 :]: blob.data
            for name, blob in blobs.items()
            if name.startswith(path + "/")
        }
        if not found:
            raise ValueError(f"the input {uri} holds no file")
        return found

    def _run_batch(self, ws: Workspace, spec: BatchRunSpec, run: BatchRun) -> None:
        try:
            run.failure = self._execute(spec)
        except Exception as error:  # the job failed: that is its outcome
            run.failure = f"{type(error).__name__}: {error}"
        finally:
            run.done.set()

    def _execute(self, spec: BatchRunSpec) -> str | None:
        """Run the job; the reason it failed, or None. Outputs are uploaded either way (the
        service keeps what the script wrote before the job failed)."""
        root = self._container_root()  # type: ignore[attr-defined]
        work = Path(tempfile.mkdtemp(prefix=f"{spec.job}-", dir=root))
        code = work / "code"
        write_files(code, spec.code)
        model_dir = work / "azureml-models" / spec.model_name / spec.model_version
        write_files(model_dir / spec.model_folder, spec.model_files)
        inputs = []
        for name, data in sorted(spec.inputs.items()):
            target = work / "inputs" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            inputs.append(str(target))
        size = spec.mini_batch_size
        batches = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        (work / "batches.json").write_text(json.dumps(batches))
        output = work / "output"
        output.mkdir()
        conda = work / "conda.yml"
        conda.write_text(spec.conda_file)
        venv = inference_venv(conda)  # the image Azure ML builds from the environment
        environment = {
            "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "TMPDIR": str(work),
            "PYTHONDONTWRITEBYTECODE": "1",
            **spec.variables,
            "AZUREML_MODEL_DIR": str(model_dir),
            "AZUREML_BI_OUTPUT_PATH": str(output),
            "AZUREML_RUN_ID": spec.job,
        }
        result = work / "result.json"
        with (work / "job.log").open("wb") as log:
            finished = subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-c",
                    DRIVER,
                    str(code),
                    spec.scoring_script,
                    str(work / "batches.json"),
                    str(result),
                    str(spec.tries),
                ],
                cwd=code,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT_SECONDS,
            )
        if finished.returncode != 0:
            tail = (work / "job.log").read_text(errors="replace").splitlines()[-30:]
            return f"init() failed (exit {finished.returncode}):\n" + "\n".join(tail)
        done = json.loads(result.read_text())
        rows = [row for batch in done for row in batch.get("rows", [])]
        failed = [batch for batch in done if "error" in batch]
        if spec.output_action.lower() == "appendrow":
            (output / spec.output_file_name).write_text("".join(f"{r}\n" for r in rows))
        account, container, prefix = spec.output
        with self._lock:  # type: ignore[attr-defined]
            self.put_files(account, container, prefix, output)  # type: ignore[attr-defined]
        failed_files = sum(len(batch["files"]) for batch in failed)
        if 0 <= spec.error_threshold < failed_files:
            first = failed[0]["error"].strip().splitlines()[-1]
            return (
                f"{failed_files} file(s) failed in run(), more than the error threshold of "
                f"{spec.error_threshold}; first error: {first}"
            )
        return None

    def _finish_job(self, ws: Workspace, resource: dict) -> None:
        """A batch job ends when its run does (else: the pipeline jobs' own ending)."""
        run = self._batch_runs().get(resource["name"])
        if run is None:
            super()._finish_job(ws, resource)  # type: ignore[misc]
            return
        props = resource["properties"]
        if not run.done.is_set():
            props["status"] = "Running"
            return
        props["status"] = "Failed" if run.failure else "Completed"
        step = str(uuid.uuid5(uuid.NAMESPACE_URL, resource["name"]))
        self._children[resource["name"]] = [  # type: ignore[attr-defined]
            (step, "batchscoring", props["status"], run.failure)
        ]
