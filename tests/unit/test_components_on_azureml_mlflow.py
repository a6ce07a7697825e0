"""The training components run against a tracking server that lacks what Azure ML's lacks.

Azure ML's MLflow-compatible tracking server has no LoggedModel routes: with MLflow 3,
`mlflow.sklearn.log_model` inside a job fails with "API request to endpoint
/api/2.0/mlflow/logged-models failed with error code 404"
(https://github.com/Azure/azure-sdk-for-python/issues/44896; Azure's own examples worked around
it the same way, https://github.com/Azure/azureml-examples/pull/3885). The server here is
MLflow's own Flask app (what `mlflow server` serves, built in-process in ~4 s instead of 16-20 s
for the CLI) behind a WSGI layer that answers 404 to those routes and records every request.
No other route is publicly documented as missing on Azure ML: its docs list unsupported *query
features* (ORDER BY attributes, OR/LIKE filters, renaming experiments; "Support matrix for
querying runs and experiments", learn.microsoft.com/azure/machine-learning/
how-to-track-experiments-mlflow), not routes. So the steps are held to an allow-list instead:
the run routes of MLflow's 2.0 REST API that every MLflow client used before MLflow 3.

The component scripts run as subprocesses exactly as the local runner starts them
(backends/local/component_runner.py): the command from the component YAML, cwd and PYTHONPATH
the code dir plus the repo root, and MLFLOW_TRACKING_URI / MLFLOW_RUN_ID / MLFLOW_EXPERIMENT_ID
of a child run, which is how Azure ML hands a run to a job. Artifacts go to a local artifact
root, written by the client and not through the server, as on Azure ML, where the azureml-mlflow
artifact repository writes to the workspace's blob storage.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import mlflow
import mlflow.pyfunc
import mlflow.sklearn  # noqa: F401  (log_model in the last test)
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from werkzeug.serving import make_server

from backends.local.component_runner import render_command
from settings import load_training_settings
from synthetic_data.readmissions import generate_readmissions

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = REPO_ROOT / "components"
LABEL = "readmitted_30d"
_TRAINING = load_training_settings()
GATE = {**_TRAINING.gate.model_dump(), **_TRAINING.fairness.model_dump()}  # evaluate requires them

# Source: Azure/azure-sdk-for-python#44896 (POST /api/2.0/mlflow/logged-models -> 404); the
# whole LoggedModel API lives under this prefix (get, search, finalize, tags, params, artifacts).
MISSING_ON_AZURE_ML = ("/api/2.0/mlflow/logged-models", "/ajax-api/2.0/mlflow/logged-models")

# MLflow's 2.0 run-tracking routes a job needs: the ones a step may call.
RUN_ROUTES = {
    ("GET", "/api/2.0/mlflow/runs/get"),
    ("POST", "/api/2.0/mlflow/runs/update"),
    ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ("POST", "/api/2.0/mlflow/runs/log-metric"),
    ("POST", "/api/2.0/mlflow/runs/log-parameter"),
    ("POST", "/api/2.0/mlflow/runs/set-tag"),
    ("GET", "/api/2.0/mlflow/experiments/get"),
}
# What the runner itself calls around the steps (AML does these on its side for a job).
RUNNER_ROUTES = {
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("POST", "/api/2.0/mlflow/runs/create"),
    ("POST", "/api/2.0/mlflow/runs/update"),
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    run_id: str  # the run named in the query or JSON body ("" when none)

    @property
    def route(self) -> tuple[str, str]:
        return (self.method, self.path)


def run_named_in(environ: dict[str, Any]) -> str:
    """The run a request is about; the body is read and put back for the app."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    named = query.get("run_id", query.get("run_uuid", [""]))[0]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length and not named:
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            fields = json.loads(body)
        except ValueError:
            fields = {}
        if isinstance(fields, dict):
            named = next(
                (fields[k] for k in ("run_id", "run_uuid", "source_run_id") if k in fields), ""
            )
    return str(named)


@dataclass
class AzureMLRoutes:
    """WSGI layer: 404 with an MLflow-style JSON error for routes Azure ML lacks; logs all."""

    app: Callable[..., Iterable[bytes]]
    requests: list[Request] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        run_id = run_named_in(environ)
        if any(path == p or path.startswith(p + "/") for p in MISSING_ON_AZURE_ML):
            body = json.dumps(
                {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for {path}"}
            ).encode()
            with self.lock:
                self.refused.append((method, path))
                self.requests.append(Request(method, path, 404, run_id))
            start_response(
                "404 NOT FOUND",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        seen: dict[str, int] = {}

        def record_status(status: str, headers: list, exc_info: Any = None) -> Any:
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        result = self.app(environ, record_status)
        with self.lock:
            self.requests.append(Request(method, path, seen.get("status", 0), run_id))
        return result

    def mark(self) -> int:
        with self.lock:
            return len(self.requests)

    def since(self, mark: int) -> list[Request]:
        with self.lock:
            return self.requests[mark:]

    def about(self, run_id: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.run_id == run_id]


@dataclass(frozen=True)
class TrackingServer:
    uri: str
    routes: AzureMLRoutes
    artifact_root: Path


def _mlflow_uri_state() -> tuple[Any, Any, str | None, str | None]:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        os.environ.get("MLFLOW_TRACKING_URI"),
        os.environ.get("MLFLOW_REGISTRY_URI"),
    )


def _restore_mlflow_uri_state(state: tuple[Any, Any, str | None, str | None]) -> None:
    """MLflow's server helpers set the process-wide URIs (module globals and env vars)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri = state[0], state[1]
    for name, value in (("MLFLOW_TRACKING_URI", state[2]), ("MLFLOW_REGISTRY_URI", state[3])):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    from mlflow.server import app, handlers

    root = tmp_path_factory.mktemp("azureml-like-tracking")
    before = _mlflow_uri_state()
    handlers._tracking_store = handlers._model_registry_store = None
    handlers.initialize_backend_stores(
        f"sqlite:///{root / 'mlflow.db'}", default_artifact_root=str(root / "artifacts")
    )
    _restore_mlflow_uri_state(before)
    routes = AzureMLRoutes(app)
    http = make_server("127.0.0.1", 0, routes, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield TrackingServer(f"http://127.0.0.1:{http.server_port}", routes, root / "artifacts")
    finally:
        http.shutdown()
        thread.join(timeout=10)
        http.server_close()
        handlers._tracking_store = handlers._model_registry_store = None


@dataclass(frozen=True)
class StepResult:
    run_id: str
    outputs: dict[str, Path]
    requests: list[Request]  # every request about this step's run
    log: str


@dataclass(frozen=True)
class RunningStep:
    component: str
    run_id: str
    outputs: dict[str, Path]
    process: subprocess.Popen[str]


def start_component(
    server: TrackingServer,
    experiment_id: str,
    parent_run_id: str,
    component: str,
    inputs: dict[str, Any],
    out_dir: Path,
) -> RunningStep:
    """Start the component's command from its YAML as the local runner does."""
    spec = yaml.safe_load((COMPONENTS / f"{component}.yml").read_text())
    values = {name: s.get("default") for name, s in spec["inputs"].items()}
    values.update(inputs)
    outputs = {name: out_dir / component / name for name in spec["outputs"]}
    for path in outputs.values():
        path.mkdir(parents=True)
    values.update({name: str(path) for name, path in outputs.items()})
    code_dir = (COMPONENTS / spec.get("code", ".")).resolve()
    includes = [
        str((COMPONENTS / include).resolve().parent)
        for include in spec.get("additional_includes", [])
    ]
    child = MlflowClient(server.uri).create_run(
        experiment_id,
        run_name=component,
        tags={"mlflow.parentRunId": parent_run_id, "component": spec["name"]},
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"}
    env.update(
        {
            "MLFLOW_TRACKING_URI": server.uri,
            "MLFLOW_RUN_ID": child.info.run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(code_dir), *includes, os.environ.get("PYTHONPATH", "")) if p
            ),
            "AZUREML_RUN_ID": f"{component}_{uuid.uuid4().hex[:8]}",
        }
    )
    process = subprocess.Popen(
        render_command(spec["command"], values),
        cwd=code_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return RunningStep(component, child.info.run_id, outputs, process)


def finish(server: TrackingServer, step: RunningStep) -> StepResult:
    log, _ = step.process.communicate(timeout=300)
    code = step.process.returncode
    assert code == 0, f"{step.component} exited with {code}:\n{log[-4000:]}"
    requests = server.routes.about(step.run_id)  # before the runner's own call below
    MlflowClient(server.uri).set_terminated(step.run_id, "FINISHED")
    return StepResult(step.run_id, step.outputs, requests, log)


@dataclass(frozen=True)
class Pipeline:
    steps: dict[str, StepResult]
    requests: list[Request]  # everything the server saw while the pipeline ran


@pytest.fixture(scope="module")
def pipeline(server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """validate -> prep -> train -> evaluate, and evaluate again with the model as champion.

    Steps that do not depend on each other run at the same time, as on AML (the data gate is
    its own pipeline; both evaluations read the same outputs): two cores, half the wait.
    """
    work = tmp_path_factory.mktemp("components")
    raw = work / "readmissions.csv"
    generate_readmissions(3000, seed=1).to_csv(raw, index=False)
    client = MlflowClient(server.uri)
    mark = server.routes.mark()
    experiment_id = client.create_experiment("readmission-training")
    parent = client.create_run(experiment_id, run_name="training pipeline").info.run_id

    def start(component: str, inputs: dict[str, Any], out: str = "") -> RunningStep:
        return start_component(server, experiment_id, parent, component, inputs, work / out)

    steps: dict[str, StepResult] = {}
    validating = start("validate_data", {"data": raw})
    pipeline = _TRAINING.pipeline
    prepping = {"raw_data": raw, "test_size": pipeline.test_size, "seed": pipeline.seed}
    steps["prep"] = finish(server, start("prep_data", prepping))
    prep = steps["prep"].outputs
    training = {
        "train_data": prep["train_data"],
        **pipeline.model_dump(include={"learning_rate", "max_iter", "seed"}),
    }
    steps["train"] = finish(server, start("train_model", training))
    steps["validate"] = finish(server, validating)
    model = steps["train"].outputs["model"]
    evaluate = {"model": model, "test_data": prep["test_data"], **GATE}
    evaluating = start("evaluate_model", evaluate)
    with_champion = start(
        "evaluate_model", {**evaluate, "champion_model": model}, out="with_champion"
    )
    steps["evaluate"] = finish(server, evaluating)
    steps["evaluate_with_champion"] = finish(server, with_champion)
    client.set_terminated(parent, "FINISHED")
    return Pipeline(steps, server.routes.since(mark))


def test_no_step_calls_a_route_azure_ml_lacks(pipeline: Pipeline) -> None:
    refused = [r for r in pipeline.requests if r.status == 404]
    assert refused == [], f"routes Azure ML answers 404 were called: {refused}"
    called = {r.route for r in pipeline.requests}
    assert called <= RUN_ROUTES | RUNNER_ROUTES, sorted(called - RUN_ROUTES - RUNNER_ROUTES)
    assert {r.status for r in pipeline.requests} == {200}
    for name, step in pipeline.steps.items():
        assert {r.route for r in step.requests} <= RUN_ROUTES, name
    # the data gate writes files only; every other step reports to its own run
    assert pipeline.steps["validate"].requests == []
    for name in ("prep", "train", "evaluate", "evaluate_with_champion"):
        routes = {r.route for r in pipeline.steps[name].requests}
        assert ("POST", "/api/2.0/mlflow/runs/log-batch") in routes, name


def test_the_data_gate_passes_the_sample(pipeline: Pipeline) -> None:
    report = json.loads((pipeline.steps["validate"].outputs["report"] / "report.json").read_text())
    assert report["passed"] is True and report["row_count"] == 3000


def test_prep_logs_its_split_to_its_run(server: TrackingServer, pipeline: Pipeline) -> None:
    run = MlflowClient(server.uri).get_run(pipeline.steps["prep"].run_id)
    assert run.data.params == {"test_size": "0.2", "seed": "42"}
    assert run.data.metrics["rows_total"] == 3000
    assert run.data.metrics["rows_train"] + run.data.metrics["rows_test"] == 3000


def test_train_logs_params_and_metrics_and_keeps_the_model_in_its_output(
    server: TrackingServer, pipeline: Pipeline
) -> None:
    client = MlflowClient(server.uri)
    run = client.get_run(pipeline.steps["train"].run_id)
    assert {"learning_rate", "max_iter", "max_leaf_nodes", "seed", "rows"} <= set(run.data.params)
    assert run.data.params["rows"] == "2400"
    assert {"train_seconds", "iterations"} <= set(run.data.metrics)
    assert run.data.metrics["iterations"] >= 1
    assert client.list_artifacts(run.info.run_id) == []  # the model is the step's output

    model_dir = pipeline.steps["train"].outputs["model"]
    meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    sklearn_flavor = meta["flavors"]["sklearn"]
    assert sklearn_flavor["serialization_format"] == "skops"
    assert sklearn_flavor["skops_trusted_types"]
    assert meta["flavors"]["python_function"]["predict_fn"] == "predict_proba"
    assert meta["signature"]["inputs"] and (model_dir / "input_example.json").exists()

    test = pd.read_parquet(pipeline.steps["prep"].outputs["test_data"] / "data.parquet").head(50)
    # pyfunc loads through the sklearn flavor (skops, trusted types) and predicts as served
    served = np.asarray(
        mlflow.pyfunc.load_model(str(model_dir)).predict(test.drop(columns=[LABEL]))
    )
    assert served.shape == (50, 2)
    assert np.all((served >= 0) & (served <= 1)) and np.allclose(served.sum(axis=1), 1)


def test_evaluate_logs_metrics_gate_and_pictures(
    server: TrackingServer, pipeline: Pipeline
) -> None:
    client = MlflowClient(server.uri)
    pictures = {"roc_pr.png", "calibration.png", "feature_importance.png"}
    for name, compared in (("evaluate", False), ("evaluate_with_champion", True)):
        run = client.get_run(pipeline.steps[name].run_id)
        metrics = run.data.metrics
        assert {"test_auc", "test_f1", "test_brier", "gate_passed"} <= set(metrics), name
        assert 0.5 < metrics["test_auc"] <= 1.0
        assert ("champion_test_auc" in metrics) is compared
        if compared:  # the same model on the same rows: the same AUC
            assert metrics["champion_test_auc"] == pytest.approx(metrics["test_auc"])
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert pictures | {"gate.json"} <= logged, name
        for picture in pictures:
            data = (server.artifact_root / experiment_dir(run) / picture).read_bytes()
            assert data.startswith(b"\x89PNG"), picture
        gate = json.loads((pipeline.steps[name].outputs["evaluation"] / "gate.json").read_text())
        assert gate["compared_with_champion"] is compared
        assert metrics["gate_passed"] == int(gate["passed"])


def experiment_dir(run: Any) -> Path:
    """Where the local artifact root keeps a run's files: <root>/<experiment>/<run>/artifacts."""
    return Path(run.info.experiment_id) / run.info.run_id / "artifacts"


def test_log_model_fails_on_this_server_as_it_does_on_azure_ml(
    server: TrackingServer,
) -> None:
    """The regression the other tests would catch: MLflow 3's log_model creates a LoggedModel."""
    from sklearn.linear_model import LogisticRegression

    features = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    model = LogisticRegression().fit(features, np.arange(20) % 2)
    client = MlflowClient(server.uri)
    experiment_id = client.create_experiment("log-model-regression")
    run_id = client.create_run(experiment_id).info.run_id
    before = _mlflow_uri_state()
    refused_before = len(server.routes.refused)
    try:
        mlflow.set_tracking_uri(server.uri)
        with (
            mlflow.start_run(run_id=run_id),
            pytest.raises(MlflowException, match="logged-models") as error,
        ):
            mlflow.sklearn.log_model(model, name="model")
    finally:
        _restore_mlflow_uri_state(before)
    assert error.value.error_code == "ENDPOINT_NOT_FOUND"
    assert ("POST", "/api/2.0/mlflow/logged-models") in server.routes.refused[refused_before:]
