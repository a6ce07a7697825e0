"""prod-rollout: a promoted model onto prod's idle colour, rolled out step by baked step, crowned.

The release's last stage, also a flow of its own (to re-run after a crash, or to roll out a
registry version by hand). It holds prod's endpoint for its whole length, so two releases
approved at the same time take turns: the second waits (its log says for whom) and then rolls
out over the first, or gives up past the configured wait without touching anything.
"""

from __future__ import annotations

from prefect import flow
from prefect.states import Cancelled, State
from prefect.transactions import transaction

from records.workspace import ModelVersion
from settings import load_release_settings
from tasks.release.endpoint_lease import endpoint_lease
from tasks.release.promotion import crown_champion
from tasks.release.serving import colour_for, deploy_model, ensure_endpoint
from tasks.rollout.steps import RolloutStopped, shift_traffic
from tasks.rollout.stop import settle_abandoned_rollout, stop_rollout_of_cancelled_run
from tasks.training.pipeline_assets import resolve_pipeline_assets


@flow(name="prod-rollout", log_prints=True, on_cancellation=[stop_rollout_of_cancelled_run])
def prod_rollout(model: ModelVersion, canary_rows_dir: str) -> ModelVersion | State:
    """Deploy `model` (a shared-registry version) to prod beside the serving colour, shift
    traffic to it through every baked step, and crown it champion.

    The mirror step also compares the new colour's answers to the mirrored copies with the
    old colour's answers to the same requests (the `shadow-comparison` artifact); a failed
    step, that comparison included, puts traffic back on the old colour (which stays deployed
    for instant rollback) and the run fails; an abort, a rollback or a cancellation ends it
    Cancelled.
    `canary_rows_dir` holds the rows canaries send (the test split of the training data).
    """
    settings = load_release_settings()
    prod, endpoint = settings.prod_environment, settings.prod_endpoint
    wait = settings.rollout.timing.endpoint_wait_seconds
    with endpoint_lease(prod, endpoint, wait, f"rolling out {model.name} v{model.version}"):
        settle_abandoned_rollout(prod, endpoint, model)
        colour = colour_for(ensure_endpoint(prod, endpoint), model)
        deploy_model(prod, endpoint, colour, model, "shared", resolve_pipeline_assets(prod))
        try:
            with transaction():
                shift_traffic(prod, endpoint, colour, model, canary_rows_dir, settings.rollout)
                crown_champion(model)
        except RolloutStopped as stopped:
            return Cancelled(message=str(stopped))
    return model
