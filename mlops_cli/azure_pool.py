"""`mlops azure`: the Prefect side of running the flows on Azure (mlops_cli/azure_orchestration.py
does the work; these commands print what it made)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

azure_app = typer.Typer(
    help="Run the flows on Azure: prefect-azure's container work pool, its blocks, deployments."
)
console = Console()


@azure_app.command("setup")
def setup() -> None:
    """Make or update, from the topology's `orchestration` section, the result-storage blocks
    (account URL + DefaultAzureCredential, no key) and the `mlops-aci` work pool (image pulled
    and run under the flows identity). Safe to re-run. The flows read the topology from the
    Prefect Variable `mlops config push` writes: push it too."""
    from mlops_cli.main import _use_running_server

    _use_running_server()
    from mlops_cli.azure_orchestration import setup_azure_orchestration

    try:
        made = setup_azure_orchestration()
    except ValueError as error:
        console.print(f"[red]Nothing made:[/red] {error}")
        raise typer.Exit(2) from None
    for line in made.lines():
        console.print(f"made or updated {line}")
    console.print(
        f"Next: `mlops azure deploy`, then `prefect worker start --pool {made.work_pool}`."
    )


@azure_app.command("deploy")
def deploy(
    name: Annotated[
        list[str] | None,
        typer.Option("--name", "-n", help="Deploy only these (prefect.yaml names); all if unset."),
    ] = None,
) -> None:
    """Deploy prefect.yaml's deployments onto the `mlops-aci` pool (same names, so they replace
    the process-pool ones on this server), with prefect.yaml's `definitions.azure` job variables
    and pull step."""
    from mlops_cli.main import _use_running_server

    _use_running_server()
    from mlops_cli.azure_orchestration import deploy_to_azure_pool

    try:
        result = deploy_to_azure_pool(name)
    except ValueError as error:
        console.print(f"[red]Nothing deployed:[/red] {error}")
        raise typer.Exit(2) from None
    console.print(result.stdout[-4000:], markup=False, highlight=False)
    if result.returncode != 0:
        console.print(result.stderr[-4000:], markup=False, highlight=False)
        console.print(
            "[red]prefect deploy failed[/red] (its output is above; the pool and blocks come "
            "from `mlops azure setup`)"
        )
        raise typer.Exit(result.returncode)
