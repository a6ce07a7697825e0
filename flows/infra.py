"""infra: lint the Bicep, show each environment's plan, ask before prod, deploy in order."""

from __future__ import annotations

from prefect import flow, pause_flow_run
from prefect.states import Cancelled, State

from records.infra import InfraPlan
from tasks.infra import deploy_infrastructure, lint_bicep, plan_markdown, what_if
from tasks.release.approval import InfraApproval, record_decision

ORDER = ("shared", "dev", "test", "prod")


@flow(name="infra", log_prints=True)
def deploy_infra(
    environment: str = "all", approval_timeout_seconds: int = 3600
) -> list[InfraPlan] | State:
    """The shared registry first (every workspace needs it), then dev, test, prod.

    Each environment is planned right before it is deployed: on Azure an environment's what-if
    needs what the ones before it created (main.bicep grants access to the shared registry's
    resource group, which must exist by then).
    """
    targets = ORDER if environment == "all" else ("shared", environment)

    lint_bicep()
    deployed = []
    for name in targets:
        if name == "prod":
            break
        what_if(name)
        deployed.append(deploy_infrastructure(name, "infra-flow", "non-prod: no approval needed"))
    if "prod" not in targets:
        return deployed

    prod = what_if("prod")
    actor, reason = "infra-flow", "no changes in prod"
    if prod.has_changes():
        approval = pause_flow_run(
            wait_for_input=InfraApproval.with_initial_data(description=plan_markdown([prod])),
            timeout=approval_timeout_seconds,
            key="infra-approval",
        )
        record_decision("infra/prod", approval)  # the record is the permission: before acting
        if not approval.approved:
            return Cancelled(
                message=f"Prod plan rejected by {approval.approver}: {approval.reason}"
            )
        actor, reason = approval.approver, approval.reason
    return [*deployed, deploy_infrastructure("prod", actor, reason)]
