"""release: retrain in test, prove it on a test endpoint, ask a person, then roll out to prod."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import State

from flows.prod_rollout import prod_rollout
from flows.training import train_in_environment
from records import aliases
from records.workspace import ModelVersion
from settings import TrainingRunSettings, load_release_settings
from tasks.release.approval import ask_for_approval, evidence_pack
from tasks.release.integration_tests import run_integration_tests
from tasks.release.promotion import promote_to_shared_registry
from tasks.release.serving import (
    deploy_model,
    endpoint_key,
    ensure_endpoint,
    route_all_traffic,
    test_endpoint_lifetime,
    test_endpoint_name,
)
from tasks.rollout.stop import stop_rollout_of_cancelled_run
from tasks.training.model_card import publish_model_card


@flow(name="release", log_prints=True, on_cancellation=[stop_rollout_of_cancelled_run])
def release(
    data_path: str | None = None,
    approval_timeout_seconds: int | None = None,
    run_settings: TrainingRunSettings | None = None,
    keep_test_endpoint: bool = False,
) -> ModelVersion | State:
    """Carry a candidate from test to prod through every gate.

    Rejected or timed-out approval promotes nothing; a failed rollout puts prod traffic back
    on the old colour, which stays deployed for instant rollback. The test endpoint is deleted
    however the test stage ends, unless `keep_test_endpoint` (to debug a failure on it).
    """
    settings = load_release_settings()
    timeout = approval_timeout_seconds or settings.approval.timeout_seconds

    # Retrain in test on the full data, gated against prod's champion, with the registry's code
    trained = train_in_environment("test", data_path, aliases.CANDIDATE, run_settings)
    candidate = trained.model
    subject = f"{candidate.name}/v{candidate.version} (test)"

    # Test endpoint (this run's own), integration tests, approval; the endpoint goes when they end
    test_endpoint = test_endpoint_name(settings.test_endpoint)
    with test_endpoint_lifetime("test", test_endpoint, keep=keep_test_endpoint):
        ensure_endpoint("test", test_endpoint)
        deploy_model("test", test_endpoint, "blue", candidate, "test", trained.assets)
        integration = run_integration_tests(
            route_all_traffic("test", test_endpoint, "blue"),
            endpoint_key("test", test_endpoint),
            trained.pipeline_run.test_data,
            trained.gate.candidate["auc"],
            settings.integration.p95_budget_ms,
            settings.integration.latency_requests,
        )
        pack = evidence_pack(
            candidate,
            trained.gate,
            trained.data_report,
            integration,
            {
                "Prefect flow run": f"{PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.id}",
                "MLflow pipeline run": trained.pipeline_run.tracking_url,
            },
            trained.card,
        )
        decision = ask_for_approval(
            subject,
            pack,
            "promotion-approval",
            timeout,
            settings.approval.poll_interval_seconds,
            unchanged="prod",
        )
    if isinstance(decision, State):  # rejected or timed out: the test endpoint is gone
        return decision

    # Promotion: the model card travels with the model; shown again with the approval
    promoted = promote_to_shared_registry("test", candidate, decision)
    publish_model_card(promoted)

    # Prod: deploy beside the serving colour, roll out step by baked step, crown
    rolled_out = prod_rollout(promoted, trained.pipeline_run.test_data, return_state=True)
    return rolled_out if not rolled_out.is_completed() else promoted
