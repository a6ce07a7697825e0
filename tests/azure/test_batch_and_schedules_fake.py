"""The SDK calls the batch scoring and drift monitoring designs need, answered by the fake as the
recordings show (test_batch_invoke.json, test_data_drift_schedule_create.json): batch endpoint
and deployment create, get, list and invoke; a monitor schedule's create and get."""

from __future__ import annotations

from pathlib import Path

from azure.ai.ml import Input, MLClient
from azure.ai.ml.entities import (
    BaselineDataRange,
    BatchEndpoint,
    BatchRetrySettings,
    CodeConfiguration,
    Data,
    DataDriftMetricThreshold,
    DataDriftSignal,
    Environment,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
    MonitorDefinition,
    MonitorSchedule,
    NumericalDriftMetrics,
    ProductionData,
    RecurrencePattern,
    RecurrenceTrigger,
    ReferenceData,
    ServerlessSparkCompute,
)

from backends.azure.clients import connection, workspace_client
from tests.azure.conftest import AzureUnderTest

IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
INPUT_FOLDER = "azureml://datastores/workspaceblobstore/paths/mnist/"
"""The recording invokes on a public folder (pipelinedata.blob.core.windows.net/sampledata/
mnist); the fake's jobs read their input from its own storage, so the files go there."""


def _dev(azure: AzureUnderTest) -> tuple[MLClient, str]:
    spec = azure.topology.environments["dev"]
    return workspace_client(spec, connection()), spec.compute


def _batch_deployment(tmp_path: Path, endpoint: str, compute: str) -> ModelBatchDeployment:
    code = tmp_path / "code"
    code.mkdir()
    (code / "batch_score.py").write_text(
        "def init():\n    pass\n\n\ndef run(mini_batch):\n    return list(mini_batch)\n"
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pkl").write_bytes(b"not a real model")
    conda = tmp_path / "conda.yaml"
    # the fake builds the job's environment from this file, as Azure ML builds its image
    conda.write_text("name: batch\ndependencies:\n- python=3.11\n- pip:\n  - pyyaml==6.0.3\n")
    return ModelBatchDeployment(
        name="blue",
        endpoint_name=endpoint,
        model=Model(path=str(model), type="custom_model"),
        code_configuration=CodeConfiguration(code=str(code), scoring_script="batch_score.py"),
        environment=Environment(image=IMAGE, conda_file=str(conda)),
        compute=compute,
        settings=ModelBatchDeploymentSettings(
            mini_batch_size=10,
            instance_count=1,
            max_concurrency_per_instance=2,
            output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=30),
            error_threshold=-1,
            logging_level="info",
        ),
    )


def test_batch_endpoint_invocation_starts_a_batch_job_in_the_workspace(
    fake_azure: AzureUnderTest, tmp_path: Path
) -> None:
    ml_client, compute = _dev(fake_azure)
    endpoint = ml_client.batch_endpoints.begin_create_or_update(
        BatchEndpoint(name="batch-readmission", description="bulk scoring")
    ).result()
    assert endpoint.provisioning_state == "Succeeded"
    assert endpoint.scoring_uri.endswith(".inference.ml.azure.com/jobs")

    deployment = ml_client.batch_deployments.begin_create_or_update(
        _batch_deployment(tmp_path, "batch-readmission", compute)
    ).result()
    assert deployment.provisioning_state == "Succeeded"
    got = ml_client.batch_deployments.get("blue", endpoint_name="batch-readmission")
    assert got.code_configuration.scoring_script == "batch_score.py"
    assert got.compute.endswith(f"/computes/{compute}")
    listed = ml_client.batch_deployments.list(endpoint_name="batch-readmission")
    assert [d.name for d in listed] == ["blue"]

    ws = fake_azure.fake.workspaces[fake_azure.topology.environments["dev"].workspace.lower()]
    images = tmp_path / "mnist"
    images.mkdir()
    for n in range(3):
        (images / f"{n}.png").write_bytes(b"digit")
    fake_azure.fake.put_files(ws.storage_account, ws.container, "mnist", images)
    job = ml_client.batch_endpoints.invoke(
        endpoint_name="batch-readmission",
        deployment_name="blue",
        input=Input(type="uri_folder", path=INPUT_FOLDER),
    )
    assert job.name.startswith("batchjob-")
    assert job.status == "Preparing"
    run = ml_client.jobs.get(job.name)  # the pipeline run behind it
    while run.status not in ("Completed", "Failed"):
        run = ml_client.jobs.get(job.name)
    assert run.status == "Completed"
    # the deployment's script ran: its run() rows appended to the output file (append_row)
    written = fake_azure.fake.files_under(ws.storage_account, ws.container, f"azureml/{job.name}/")
    predictions = written["score/predictions.csv"].decode().split()
    assert sorted(Path(p).name for p in predictions) == ["0.png", "1.png", "2.png"]
    invocations = [r for r in fake_azure.fake.requests if r.path == "/jobs"]
    assert [r.headers.get("azureml-model-deployment") for r in invocations] == ["blue"]
    assert [r.status for r in invocations] == [201]


def test_drift_monitor_schedule_is_created_and_read_back(fake_azure: AzureUnderTest) -> None:
    ml_client, _ = _dev(fake_azure)
    for version, folder in (("1", "https://example/production"), ("2", "https://example/train")):
        ml_client.data.create_or_update(
            Data(name="readmission-inputs", version=version, path=folder, type="uri_folder")
        )
    window = BaselineDataRange(lookback_window_size="P7D", lookback_window_offset="P0D")
    signal = DataDriftSignal(
        production_data=ProductionData(
            input_data=Input(type="uri_folder", path="azureml:readmission-inputs:1"),
            data_context="model_inputs",
            data_window=window,
        ),
        reference_data=ReferenceData(
            input_data=Input(type="uri_folder", path="azureml:readmission-inputs:2"),
            data_context="training",
            data_window=BaselineDataRange(
                lookback_window_size="P30D", lookback_window_offset="P30D"
            ),
        ),
        metric_thresholds=DataDriftMetricThreshold(
            numerical=NumericalDriftMetrics(jensen_shannon_distance=0.5)
        ),
    )
    schedule = MonitorSchedule(
        name="readmission-drift",
        trigger=RecurrenceTrigger(
            frequency="week", interval=1, schedule=RecurrencePattern(hours=22, minutes=0)
        ),
        create_monitor=MonitorDefinition(
            compute=ServerlessSparkCompute(instance_type="standard_e4s_v3", runtime_version="3.4"),
            monitoring_signals={"drift": signal},
        ),
    )
    created = ml_client.schedules.begin_create_or_update(schedule).result()
    assert created.name == "readmission-drift"

    got = ml_client.schedules.get("readmission-drift")
    assert got.provisioning_state == "Succeeded"
    assert got.trigger.frequency == "week"
    drift = got.create_monitor.monitoring_signals["drift"]
    assert drift.production_data.input_data.path.endswith("/data/readmission-inputs/versions/1")
