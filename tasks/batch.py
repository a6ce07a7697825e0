"""Batch stage: the inbox watcher's steps (which files are new, the label-free contract check,
the event that starts scoring) and the scoring job's (the champion on the batch endpoint, the
exactly-once check, the summary artifact).

Exactly once, in three parts: the watcher's watermark (a Prefect Variable per environment: the
newest file it has handled, so a run looks only at what landed since); the scoring key (content
hash and model version: a file announced twice, or dropped again under another name, finds its
results and is not scored again); and one batch-score run at a time (prefect.yaml's concurrency
limit), so two announcements of one file never score it side by side.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.variables import Variable

import backends
from data_checks.validation import DataValidationReport, validate_file
from records.batch import BatchSummary, InboxFile
from records.workspace import AssetReferences, ModelVersion
from settings import BatchSettings

# --- the watcher ---------------------------------------------------------------------------


@task
def drop_sample_discharges(environment: str, rows: int, seed: int) -> str:
    """A day's synthetic discharges (the label left out) dropped in the inbox, for the demo:
    what a hospital's nightly export would put there. Returns the file's name."""
    import tempfile

    from data_checks.readmission_schema import LABEL
    from synthetic_data.readmissions import generate_readmissions

    name = f"discharges-{rows}-seed{seed}.csv"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / name
        generate_readmissions(rows, seed=seed).drop(columns=[LABEL]).to_csv(source, index=False)
        file = backends.batch_scoring(environment).put_inbox_file(source, name)
    get_run_logger().info("Dropped %s (%d rows) in %s's inbox", file.name, rows, environment)
    return file.name


def _watermark_name(environment: str) -> str:
    return f"mlops_batch_inbox_{environment}"


@task
def read_watermark(environment: str) -> tuple[datetime | None, list[str]]:
    """(newest modified time handled, the names handled at exactly that time)."""
    value = Variable.get(_watermark_name(environment), default=None)
    if not isinstance(value, dict) or not value.get("modified"):
        return None, []
    return datetime.fromisoformat(value["modified"]), list(value.get("names") or [])


@task
def advance_watermark(environment: str, file: InboxFile, names_at_time: list[str]) -> None:
    """Record `file` as handled; names handled at the same modified time are kept, so a file
    that landed in the same second as another is not skipped."""
    Variable.set(
        _watermark_name(environment),
        {"modified": file.modified.isoformat(), "names": sorted(set(names_at_time))[-50:]},
        overwrite=True,
    )


@task
def new_inbox_files(
    environment: str, watermark: datetime | None, handled: list[str]
) -> list[InboxFile]:
    """Files in the inbox the watcher has not handled yet, oldest first."""
    files = backends.batch_scoring(environment).inbox_files(since=watermark)
    fresh = [
        f for f in files if watermark is None or f.modified > watermark or f.name not in handled
    ]
    get_run_logger().info(
        "%d new file(s) in %s's inbox since %s",
        len(fresh),
        environment,
        watermark.isoformat() if watermark else "the beginning",
    )
    return fresh


@task
def check_inbox_file(
    environment: str, file: InboxFile, settings: BatchSettings
) -> DataValidationReport:
    """The data contract without the label (the training suite's Great Expectations rules):
    a file most of whose rows break it is refused whole, with the report as an artifact."""
    path = backends.batch_scoring(environment).local_copy(file)
    report, _ = validate_file(path, labelled=False, mostly=1 - settings.max_bad_row_share)
    if not report.passed:
        create_markdown_artifact(
            key="batch-file-refused",
            markdown=f"# {file.name} was not scored\n\nContent sha256 `{file.sha256}`. "
            f"Fix the file and drop it again.\n\n" + report.to_markdown(),
            description=f"{file.name}: refused by the data contract",
        )
        get_run_logger().error("%s refused by the data contract: %s", file.name, report.summary)
    return report


@task
def announce_inbox_file(environment: str, file: InboxFile, event: str) -> None:
    """The event batch-score's trigger reacts to (prefect.yaml), one per new file."""
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"mlops.batch.{environment}.{file.sha256[:16]}",
            "prefect.resource.name": file.name,
        },
        payload={
            "environment": environment,
            "uri": file.uri,
            "name": file.name,
            "sha256": file.sha256,
            "size": file.size,
        },
    )
    get_run_logger().info("Announced %s (%s) for scoring", file.name, file.sha256[:12])


# --- the scoring job -------------------------------------------------------------------------


@task
def find_inbox_file(environment: str, name_or_uri: str, sha256: str | None) -> InboxFile:
    """The file to score; if the announcement named a content hash, the file must still have
    it (a file overwritten since is announced again, on its own)."""
    file = backends.batch_scoring(environment).inbox_file(name_or_uri)
    if sha256 and file.sha256 != sha256:
        raise ValueError(
            f"{file.name} changed since it was announced (sha256 {sha256[:12]} then, "
            f"{file.sha256[:12]} now); the watcher announces the new content on its next run"
        )
    return file


@task
def earlier_batch_result(
    environment: str, file: InboxFile, model: ModelVersion
) -> BatchSummary | None:
    """The results of this content by this model version, if a job already wrote them."""
    found = backends.batch_scoring(environment).finished(file, model)
    if found is not None:
        get_run_logger().info(
            "%s was scored by %s v%s already (run %s, %s): not scoring it again",
            file.name,
            model.name,
            model.version,
            found.run_id,
            found.finished_at,
        )
    return found


@task(retries=2, retry_delay_seconds=10)
def deploy_batch_model(
    environment: str,
    endpoint: str,
    model: ModelVersion,
    assets: AssetReferences,
    settings: BatchSettings,
) -> str:
    """The champion as the batch endpoint's default deployment, in the inference environment
    online prod uses (the shared registry's version); unchanged if already there."""
    registry = backends.shared_registry()
    name = backends.batch_scoring(environment).deploy_model(
        endpoint, model, Path(registry.model_path(model)), assets.inference_environment, settings
    )
    get_run_logger().info(
        "Batch endpoint %s in %s: default deployment %s", endpoint, environment, name
    )
    return name


@task
def run_batch_job(
    environment: str,
    endpoint: str,
    file: InboxFile,
    model: ModelVersion,
    run_id: str,
    settings: BatchSettings,
) -> BatchSummary:
    """One job on the batch endpoint; past the error threshold it fails with the counts."""
    return backends.batch_scoring(environment).score(endpoint, file, model, run_id, settings)


@task
def publish_batch_summary(summary: BatchSummary, file: InboxFile, scored_now: bool) -> None:
    """The summary artifact: rows, rows refused and why, time, label rate, where the results
    are."""
    rules = "\n".join(
        f"| {rule} | {count:,} |"
        for rule, count in sorted(summary.refused_by_rule.items(), key=lambda kv: -kv[1])
    )
    label_rate = "n/a" if summary.label_rate is None else f"{summary.label_rate:.1%}"
    when = "this run" if scored_now else f"an earlier run ({summary.finished_at})"
    markdown = (
        f"# Batch scoring of {file.name}\n\n"
        f"Scored by **{summary.model_name} v{summary.model_version}** in {when}; "
        f"content sha256 `{file.sha256}`.\n\n"
        f"| rows | scored | refused | label rate | seconds | job |\n|---|---|---|---|---|---|\n"
        f"| {summary.rows:,} | {summary.rows_scored:,} | {summary.rows_refused:,} | "
        f"{label_rate} | {summary.seconds:.1f} | {summary.job} |\n\n"
        f"- scored rows: `{summary.scored}`\n- refused rows and their reasons: "
        f"`{summary.rejects}`\n"
    )
    if rules:
        markdown += f"\n## Refused rows by rule\n\n| rule | rows |\n|---|---|\n{rules}\n"
    create_markdown_artifact(
        key="batch-summary", markdown=markdown, description=f"Batch scoring of {file.name}"
    )
