"""release: retrain in test, prove it on a test endpoint, ask a person, then roll out to prod."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import State
from prefect.transactions import transaction

from backends.base import ModelVersion
from flows.training import train_in_environment
from tasks.approval import evidence_pack
from tasks.decisions import ask_for_approval
from tasks.integration_tests import run_integration_tests
from tasks.pipeline_assets import resolve_pipeline_assets
from tasks.promotion import crown_champion, promote_to_shared_registry
from tasks.serving import (
    colour_for,
    deploy_model,
    endpoint_key,
    ensure_endpoint,
    route_all_traffic,
    shift_traffic,
    test_endpoint_lifetime,
)
from tasks.settings import load_release_settings


@flow(name="release", log_prints=True)
def release(
    data_path: str | None = None,
    approval_timeout_seconds: int | None = None,
    champion_min_delta: float | None = None,
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
    trained = train_in_environment("test", data_path, "candidate", champion_min_delta)
    candidate = trained.model
    subject = f"{candidate.name}/v{candidate.version} (test)"

    # Test endpoint, integration tests, approval (the test endpoint goes when they end)
    with test_endpoint_lifetime("test", settings.test_endpoint, keep=keep_test_endpoint):
        ensure_endpoint("test", settings.test_endpoint)
        deploy_model("test", settings.test_endpoint, "blue", candidate, "test", trained.assets)
        test_endpoint = route_all_traffic("test", settings.test_endpoint, "blue")
        integration = run_integration_tests(
            test_endpoint,
            endpoint_key("test", settings.test_endpoint),
            trained.pipeline_run.outputs["prep.test_data"],
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

    # Promotion
    promoted = promote_to_shared_registry("test", candidate, decision)

    # Prod blue/green
    prod = ensure_endpoint("prod", settings.prod_endpoint)
    colour = colour_for(prod, promoted)
    deploy_model(
        "prod", settings.prod_endpoint, colour, promoted, "shared", resolve_pipeline_assets("prod")
    )
    with transaction():
        shift_traffic(
            "prod",
            settings.prod_endpoint,
            colour,
            trained.pipeline_run.outputs["prep.test_data"],
            settings.rollout,
        )
        crown_champion(promoted)
    return promoted
