"""Data stage: a synthetic sample for demos, the data gate, and the versioned data asset."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

import backends
from backends.topology import load_topology
from data_checks.validation import DataValidationReport
from records.workspace import AssetReferences, DataAsset
from settings import PIPELINES_DIR


class DataValidationError(RuntimeError):
    """The data gate failed: the message lists what failed and where the full report is."""


@task
def generate_synthetic_sample(rows: int, seed: int) -> Path:
    """Write the synthetic readmission data the demo trains on (deterministic per seed)."""
    from synthetic_data.readmissions import generate_readmissions

    target = load_topology().local_root / "incoming" / f"readmissions-{rows}-seed{seed}.csv"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        generate_readmissions(rows, seed=seed).to_csv(partial, index=False)
        partial.rename(target)
    get_run_logger().info("Synthetic sample: %s rows at %s", rows, target)
    return target


@task
def find_recent_data(relative_path: str) -> str | None:
    """Labelled recent data, where the data pipeline (or the traffic simulator) drops it."""
    path = load_topology().local_root / relative_path
    if path.exists():
        get_run_logger().info("Recent data: %s", path)
        return str(path)
    get_run_logger().info("No recent data at %s: using the synthetic sample", path)
    return None


@task
def validate_data(
    environment: str, data_path: Path, assets: AssetReferences
) -> DataValidationReport:
    """Run the Great Expectations gate as a workspace job; stop the flow on bad data.

    It runs before the data is registered and before any training job, so bad data leaves
    no trace but its report.
    """
    workspace = backends.workspace(environment)
    run = workspace.run_pipeline(
        PIPELINES_DIR / "validate_data.yml",
        {"raw_data": str(Path(data_path).resolve())},
        run_name=f"validate {Path(data_path).name}",
        assets=assets,
    )
    report_dir = Path(run.outputs["report"])
    report = DataValidationReport.from_dict(json.loads((report_dir / "report.json").read_text()))
    create_markdown_artifact(
        key="data-validation-report",
        markdown=report.to_markdown() + f"\n\nFull Great Expectations result: `{report_dir}`\n",
        description=f"Data gate for {Path(data_path).name}",
    )
    if report.failures:
        create_table_artifact(
            key="data-validation-failures",
            table=[
                {
                    "expectation": f.expectation,
                    "column": f.column or "",
                    "unexpected_count": f.unexpected_count,
                    "sample_values": ", ".join(map(str, f.sample_values)),
                    "detail": f.detail,
                }
                for f in report.failures
            ],
            description="Each failed expectation with counts and sample values",
        )
    logger = get_run_logger()
    for warning in report.warnings:
        logger.warning("Data gate warning: %s", warning)
    if not report.passed:
        raise DataValidationError(
            f"{report.summary()} Nothing was trained or registered. Report: "
            f"{report_dir / 'report.md'}"
        )
    logger.info("Data gate passed: %s", report.summary())
    return report


@task(retries=2, retry_delay_seconds=5)
def register_data_asset(environment: str, data_path: Path, name: str) -> DataAsset:
    """A new version only when the content changed (same bytes -> same version)."""
    asset = backends.workspace(environment).register_data(
        name, Path(data_path), description="readmission training data, validated"
    )
    get_run_logger().info(
        "Data asset %s:%s (sha256 %s)", asset.name, asset.version, asset.content_hash[:12]
    )
    return asset
