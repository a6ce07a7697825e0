"""Infrastructure stage: lint the Bicep, show the plan, deploy it."""

from __future__ import annotations

import json
import subprocess

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

import audit
import backends
from backends.topology import REPO_ROOT, load_topology
from records.infra import InfraPlan
from settings import load_release_settings

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


SHARED = "shared"
"""The shared registry's deployment (infra/shared.bicep): first, every workspace needs it."""


def deployment_order(environment: str = "all") -> tuple[list[str], str | None]:
    """(what deploys without asking, in order; the environment that waits for an approval).

    The shared registry first, then environments.yaml's environments in its order; the one
    release.yaml calls prod (`prod_environment`) last, behind the approval. One environment:
    the shared registry and it.
    """
    gated = load_release_settings().prod_environment
    names = list(load_topology().environments) if environment == "all" else [environment]
    return [SHARED, *(n for n in names if n not in (SHARED, gated))], (
        gated if gated in names else None
    )


class InfraLintFailed(RuntimeError):
    """checkov found a failed check: fix the Bicep or skip the check with a reason."""


@task
def lint_bicep() -> dict[str, int]:
    """checkov over infra/ with the Azure rules (skips and their reasons: infra/checkov.yaml)."""
    if not CHECKOV.exists():
        raise InfraLintFailed(f"{CHECKOV} is missing: run `make checkov-venv` first")
    done = subprocess.run(
        [str(CHECKOV), "--config-file", "infra/checkov.yaml", "--output", "json", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    reports = json.loads(done.stdout or "{}")
    reports = reports if isinstance(reports, list) else [reports]
    summary = {"passed": 0, "failed": 0, "parsing_errors": 0}
    failed = []
    for report in reports:
        for key in summary:
            summary[key] += int(report.get("summary", {}).get(key, 0))
        failed += report.get("results", {}).get("failed_checks", [])
    create_table_artifact(
        key="bicep-lint",
        table=[
            {"check": c["check_id"], "resource": c["resource"], "file": c["file_path"]}
            for c in failed
        ]
        or [{"check": "all", "resource": f"{summary['passed']} passed", "file": "infra/"}],
        description="checkov --framework bicep",
    )
    if summary["failed"] or summary["parsing_errors"]:
        raise InfraLintFailed(
            f"checkov: {summary['failed']} failed, {summary['parsing_errors']} parsing errors: "
            + ", ".join(f"{c['check_id']} on {c['resource']}" for c in failed[:10])
        )
    get_run_logger().info("checkov: %s", summary)
    return summary


@task
def what_if(environment: str) -> InfraPlan:
    """The plan as an artifact: what would be created, modified or left alone."""
    plan = backends.infrastructure().what_if(environment)
    rows = "\n".join(f"| {c.resource} | {c.kind} | {c.action} | {c.detail} |" for c in plan.changes)
    create_markdown_artifact(
        key=f"what-if-{environment}",
        markdown=(
            f"## What-if: {environment} ({plan.parameter_file})\n\n"
            f"| resource | kind | action | detail |\n|---|---|---|---|\n{rows}\n"
        ),
    )
    return plan


@task
def deploy_infrastructure(environment: str, actor: str, reason: str) -> InfraPlan:
    plan = backends.infrastructure().deploy(environment)
    audit.record(
        "infra-deployed",
        actor,
        environment,
        reason,
        {"changes": [f"{c.action} {c.resource}" for c in plan.changes]},
    )
    return plan


def plan_markdown(plans: list[InfraPlan]) -> str:
    lines = ["## Apply this infrastructure plan?", ""]
    for plan in plans:
        lines += [f"### {plan.environment} ({plan.parameter_file})", ""]
        lines += [f"- {c.action}: {c.kind} `{c.resource}` {c.detail}" for c in plan.changes]
        lines.append("")
    return "\n".join(lines)
