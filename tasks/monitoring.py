"""Monitoring stage: prod's captured traffic vs the champion's training data, and the alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow.sklearn
import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

import backends
from backends.topology import load_topology
from data_checks.readmission_schema import FEATURES
from monitoring.drift import DriftReport, DriftThresholds, compute_drift, plot_drift
from records import lineage_tags
from records.serving import Capture
from records.workspace import ModelVersion
from reports.pictures import publish_image
from settings import MonitoringSettings
from tasks.rollout.canaries import CANARY_PREFIX


@task
def load_production_window(environment: str, endpoint: str, hours: float) -> pd.DataFrame:
    """What prod scored in the window: users' live traffic (mirrored copies are not prod's,
    and a rollout's canaries replay test rows, which would hide drift) and the rows the
    environment's batch jobs scored, which are prod's inputs as much as online requests."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    captured = backends.endpoints(environment).read_capture(endpoint, since)
    if not captured.empty:
        canary = captured[Capture.REQUEST_ID].astype(str).str.startswith(CANARY_PREFIX)
        captured = captured[~captured[Capture.MIRRORED].astype(bool) & ~canary]
    batch = backends.batch_scoring(environment).read_scored(since)
    get_run_logger().info(
        "Rows in the last %s h: %d captured online, %d scored in batch",
        hours,
        len(captured),
        len(batch),
    )
    if batch.empty:
        return captured
    return batch if captured.empty else pd.concat([captured, batch], ignore_index=True)


@task
def load_reference(champion: ModelVersion, sample_rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The champion's training data (from its lineage tags) and the champion's scores on it."""
    topology = load_topology()
    source = champion.tags.get(lineage_tags.SOURCE_WORKSPACE)
    environment = next(
        (e.name for e in topology.environments.values() if e.workspace == source), None
    )
    if environment is None:
        raise ValueError(
            f"champion v{champion.version} names source workspace {source!r}, which is not in "
            "environments.yaml; its training data cannot be found"
        )
    workspace = backends.workspace(environment)
    asset = workspace.get_data(
        champion.tags[lineage_tags.DATA_ASSET], champion.tags[lineage_tags.DATA_VERSION]
    )
    reference = pd.read_csv(workspace.data_path(asset))
    if len(reference) > sample_rows:
        reference = reference.sample(n=sample_rows, random_state=0)
    model_dir = backends.shared_registry().model_path(champion)
    scores = mlflow.sklearn.load_model(str(model_dir)).predict_proba(reference[list(FEATURES)])
    return reference, scores[:, 1]


@task
def drift_report(
    reference: pd.DataFrame,
    reference_scores: np.ndarray,
    current: pd.DataFrame,
    settings: MonitoringSettings,
    champion: ModelVersion,
) -> DriftReport:
    """Per-feature drift with AML's default metrics, as a table, a chart and files on disk."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report_dir = (
        load_topology().local_root / "monitoring" / f"{champion.name}-v{champion.version}" / stamp
    )
    thresholds = DriftThresholds(**settings.thresholds.model_dump())
    current_features = current[list(FEATURES)] if not current.empty else current
    report = compute_drift(
        reference[list(FEATURES)],
        current_features,
        thresholds,
        reference_predictions=reference_scores,
        current_predictions=_scored(current),
        min_rows=settings.min_rows,
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "drift.md").write_text(report.to_markdown())
    create_markdown_artifact(key="drift-report", markdown=report.to_markdown())
    if report.features:
        create_table_artifact(key="drift-features", table=report.table_rows())
        chart = plot_drift(report, report_dir / "drift.png")
        publish_image(chart, "drift-chart", f"Per-feature drift: {report.message[:120]}")
        get_run_logger().info("Drift chart: %s", chart)
    get_run_logger().info(report.message)
    return report


def _scored(current: pd.DataFrame) -> np.ndarray | None:
    """The window's probabilities. A row whose output was not logged (Azure's collector logs
    inputs and outputs apart) has none, yet still counts for feature drift."""
    if current.empty or Capture.PROBABILITY not in current:
        return None
    scores = current[Capture.PROBABILITY].dropna().to_numpy(dtype=float)
    return scores if len(scores) else None


@task
def raise_drift_alarm(report: DriftReport, champion: ModelVersion, event: str) -> None:
    """A Prefect event with the drifted features and scores; an automation reacts to it."""
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"mlops.model.{champion.name}",
            "prefect.resource.name": champion.name,
            "mlops.model.version": champion.version,
        },
        payload={
            "drifted_features": list(report.drifted_features),
            "scores": {f.feature: round(f.value, 4) for f in report.features},
            "current_rows": report.current_rows,
        },
    )
    get_run_logger().warning("Drift alarm raised for %s: %s", champion.name, report.message)
