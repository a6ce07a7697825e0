"""infra: lint the Bicep, show each environment's plan, ask before prod, deploy in order."""

from __future__ import annotations

from prefect import flow, pause_flow_run
from prefect.states import Cancelled, State

from records.infra import InfraPlan
from tasks.infra import (
    deploy_infrastructure,
    deployment_order,
    lint_bicep,
    plan_markdown,
    what_if,
)
from tasks.release.approval import InfraApproval, record_decision


@flow(name="infra", log_prints=True)
def deploy_infra(
    environment: str = "all", approval_timeout_seconds: int = 3600
) -> list[InfraPlan] | State:
    """The shared registry first (every workspace needs it), then the environments, prod last
    and only after a person approved its plan (when it changes anything).

    Each environment is planned right before it is deployed: on Azure an environment's what-if
    needs what the ones before it created (main.bicep grants access to the shared registry's
    resource group, which must exist by then).
    """
    ungated, prod_environment = deployment_order(environment)

    lint_bicep()
    deployed = []
    for name in ungated:
        what_if(name)
        deployed.append(deploy_infrastructure(name, "infra-flow", "non-prod: no approval needed"))
    if prod_environment is None:
        return deployed

    prod = what_if(prod_environment)
    actor, reason = "infra-flow", "no changes in prod"
    if prod.has_changes():
        approval = pause_flow_run(
            wait_for_input=InfraApproval.with_initial_data(description=plan_markdown([prod])),
            timeout=approval_timeout_seconds,
            key="infra-approval",
        )
        record_decision(f"infra/{prod_environment}", approval)  # the record is the permission
        if not approval.approved:
            return Cancelled(
                message=f"Prod plan rejected by {approval.approver}: {approval.reason}"
            )
        actor, reason = approval.approver, approval.reason
    return [*deployed, deploy_infrastructure(prod_environment, actor, reason)]
