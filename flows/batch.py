"""batch-inbox and batch-score: new files in an environment's inbox are checked against the
data contract and announced; each announcement starts a batch-score run (a deployment trigger
in prefect.yaml) in which the champion scores the file on the batch endpoint, results written
back beside the inbox. A file is scored once per model version, however often it is announced.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from records.batch import BatchSummary
from settings import load_batch_settings, load_training_settings
from tasks.batch import (
    advance_watermark,
    announce_inbox_file,
    check_inbox_file,
    deploy_batch_model,
    earlier_batch_result,
    find_inbox_file,
    new_inbox_files,
    publish_batch_summary,
    read_watermark,
    run_batch_job,
)
from tasks.training.pipeline_assets import resolve_pipeline_assets
from tasks.training.registry import find_prod_champion


@flow(name="batch-inbox", log_prints=True)
def watch_inbox(environment: str | None = None) -> list[str]:
    """Announce every new file in the inbox that passes the contract; return their names.
    The watermark moves past each file as it is handled, so a watcher killed mid-way starts
    again where it stopped (a file announced twice is still scored once)."""
    settings = load_batch_settings()
    environment = environment or settings.environment
    champion = find_prod_champion(load_training_settings().model_name)
    watermark, handled = read_watermark(environment)
    announced = []
    for file in new_inbox_files(environment, watermark, handled):
        handled = handled + [file.name] if file.modified == watermark else [file.name]
        watermark = file.modified
        scored = earlier_batch_result(environment, file, champion) is not None
        if not scored and check_inbox_file(environment, file, settings).passed:
            announce_inbox_file(environment, file, settings.event)
            announced.append(file.name)
        advance_watermark(environment, file, handled)
    return announced


@flow(name="batch-score", log_prints=True)
def batch_score(
    input: str, environment: str | None = None, sha256: str | None = None
) -> BatchSummary:
    """Score a file (a name in the inbox, a path, or a datastore URI) with the champion on
    the environment's batch endpoint; `sha256`, from the announcement, must still match."""
    settings = load_batch_settings()
    environment = environment or settings.environment
    champion = find_prod_champion(load_training_settings().model_name)
    file = find_inbox_file(environment, input, sha256)
    earlier = earlier_batch_result(environment, file, champion)
    if earlier is not None:
        publish_batch_summary(earlier, file, scored_now=False)
        return earlier
    assets = resolve_pipeline_assets(environment)
    deploy_batch_model(environment, settings.endpoint, champion, assets, settings)
    summary = run_batch_job(
        environment, settings.endpoint, file, champion, str(flow_run.id or "local"), settings
    )
    publish_batch_summary(summary, file, scored_now=True)
    return summary
