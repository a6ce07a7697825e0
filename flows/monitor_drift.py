"""drift-monitor: compare prod's captured inputs with the champion's data; alarm on drift."""

from __future__ import annotations

from prefect import flow

from monitoring.drift import DriftReport
from settings import load_monitoring_settings, load_release_settings, load_training_settings
from tasks.monitoring import (
    drift_report,
    load_production_window,
    load_reference,
    raise_drift_alarm,
)
from tasks.training.registry import find_prod_champion


@flow(name="drift-monitor", log_prints=True)
def monitor_drift(window_hours: float | None = None) -> DriftReport:
    """Too little captured traffic is a "not enough data" result, never a false alarm."""
    settings = load_monitoring_settings()
    model_name = load_training_settings().model_name
    endpoint = load_release_settings().prod_endpoint

    champion = find_prod_champion(model_name)
    current = load_production_window(
        settings.endpoint_environment, endpoint, window_hours or settings.window_hours
    )
    reference, reference_scores = load_reference(champion, settings.reference_sample_rows)
    report = drift_report(reference, reference_scores, current, settings, champion)
    if report.status == "drift":
        raise_drift_alarm(report, champion, settings.event)
    return report
