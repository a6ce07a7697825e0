"""A traffic simulator: realistic or shifted patients sent to the prod endpoint.

It lets a person watch the monitoring loop: shifted traffic -> drift report -> event ->
retraining. With `recent_data`, it also writes a labelled sample of the same population where
retraining looks for recent data (the outcomes a hospital would learn 30 days later).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

import backends
from backends.topology import load_topology
from data_checks.readmission_schema import FEATURES
from settings import load_release_settings, load_retrain_settings
from synthetic_data.readmissions import PopulationShift, generate_readmissions
from tasks.release.integration_tests import split_body


@dataclass(frozen=True)
class TrafficResult:
    requests: int
    rows: int
    errors: int
    recent_data: str | None


def send_traffic(
    rows: int,
    batch: int = 50,
    age_offset: float = 0.0,
    admission_mix: dict[str, float] | None = None,
    seed: int = 1234,
    write_recent_data: bool = False,
) -> TrafficResult:
    """Score `rows` synthetic patients on prod in batches of `batch` rows."""
    shift = PopulationShift(age_offset=age_offset, admission_type_weights=admission_mix)
    frame = generate_readmissions(rows, seed=seed, shift=shift)
    release = load_release_settings()
    endpoint_name = release.prod_endpoint
    endpoints = backends.endpoints(release.prod_environment)
    endpoint = endpoints.get_endpoint(endpoint_name)
    if endpoint is None:
        raise RuntimeError(f"prod endpoint {endpoint_name} does not exist: release a model first")
    headers = {"Authorization": f"Bearer {endpoints.get_key(endpoint_name)}"}
    errors = requests = 0
    features = frame[list(FEATURES)]
    with httpx.Client(timeout=30, headers=headers) as client:
        for start in range(0, rows, batch):
            response = client.post(
                endpoint.scoring_uri, json=split_body(features.iloc[start : start + batch])
            )
            requests += 1
            errors += response.status_code != 200
    recent = None
    if write_recent_data:
        target = load_topology().local_root / load_retrain_settings().recent_data
        target.parent.mkdir(parents=True, exist_ok=True)
        generate_readmissions(max(rows, 5_000), seed=seed + 1, shift=shift).to_csv(
            target, index=False
        )
        recent = str(target)
    return TrafficResult(requests, rows, errors, recent)


def parse_mix(text: str | None) -> dict[str, float] | None:
    """ "Emergency=0.8,Urgent=0.15,Elective=0.05" -> a dict."""
    if not text:
        return None
    return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
