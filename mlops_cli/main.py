"""`mlops`: run the lifecycle on this machine, approve releases, read the audit log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import backends
from backends.topology import TOPOLOGY_VARIABLE, load_topology
from mlops_cli.azure_pool import azure_app
from mlops_cli.batch import batch_app
from mlops_cli.prefect_server import running_server, start_server, stop_server
from records import aliases, lineage_tags

app = typer.Typer(help="Readmission MLOps lifecycle on Prefect (local backend by default).")
server_app = typer.Typer(help="The local Prefect server the demo runs against.")
app.add_typer(server_app, name="server")
config_app = typer.Typer(help="The topology (non-secret settings) as a Prefect Variable.")
app.add_typer(config_app, name="config")
rollout_app = typer.Typer(help="The prod rollout: where it stands, and stopping it.")
app.add_typer(rollout_app, name="rollout")
app.add_typer(azure_app, name="azure")
app.add_typer(batch_app, name="batch")
console = Console()
APPROVAL_FLOWS = ("train-dev", "release")
"""Flows that pause for a person: pipeline-asset promotion and model release."""

ApproverOption = Annotated[
    str, typer.Option("--as", help="Who decides (recorded in the audit log).")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        help="The environment of the prod endpoint (default: release.yaml's prod_environment)."
    ),
]


def _prefect_home() -> Path:
    return load_topology().local_root / "prefect"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def ensure_server() -> str:
    """Reuse this checkout's Prefect server or start one; return its UI address.

    Prefect reads PREFECT_API_URL when it is first imported, so this runs before any flow import.
    """
    home = _prefect_home()
    server = running_server(home) or start_server(home, port=4200 if _port_free(4200) else None)
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_UI_URL"] = server.ui_url
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "storage"))
    return server.ui_url


def _use_running_server() -> None:
    """Point this process at the checkout's server unless PREFECT_API_URL already says where."""
    if "PREFECT_API_URL" not in os.environ:
        server = running_server(_prefect_home())
        if server is None:
            console.print("No Prefect server: run `mlops server start` (or set PREFECT_API_URL).")
            raise typer.Exit(2)
        os.environ["PREFECT_API_URL"] = server.api_url


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the Prefect server and print its UI address."""
    console.print(f"Prefect UI: {ensure_server()}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the Prefect server and the endpoint servers this checkout started."""
    backends.stop_local_servers()
    server = running_server(_prefect_home())
    if server is None:
        console.print("No Prefect server is running for this checkout.")
        return
    stop_server(server)
    console.print(f"Stopped the Prefect server (pid {server.pid}) and the endpoint servers.")


@config_app.command("push")
def config_push(
    file: Annotated[Path, typer.Option(help="The topology file to store.")] = Path(
        "environments.yaml"
    ),
    variable: Annotated[str, typer.Option(help="Prefect Variable name.")] = TOPOLOGY_VARIABLE,
) -> None:
    """Store the topology in a Prefect Variable: deployments (MLOPS_TOPOLOGY_VARIABLE, set in
    prefect.yaml) read it from there, so a subscription or workspace name changes in the UI,
    without a commit. It holds names and IDs only; credentials come from DefaultAzureCredential."""
    import yaml
    from prefect.variables import Variable

    from backends.topology import topology_from

    _use_running_server()
    raw = yaml.safe_load(file.read_text())
    topology = topology_from(raw, file.resolve())  # refuse an incomplete topology here
    Variable.set(variable, raw, tags=["mlops"], overwrite=True)
    console.print(
        f"Stored {file} as Prefect Variable [bold]{variable}[/bold] (backend "
        f"{topology.backend}, environments {', '.join(topology.environments)})."
    )


@config_app.command("show")
def config_show() -> None:
    """The topology this process would use, and where it came from."""
    if os.environ.get("MLOPS_TOPOLOGY_VARIABLE"):
        _use_running_server()
    topology = load_topology()
    table = Table("environment", "subscription", "resource group", "workspace", "compute")
    for spec in topology.environments.values():
        table.add_row(
            spec.name, spec.subscription_id, spec.resource_group, spec.workspace, spec.compute
        )
    registry = topology.shared_registry
    table.add_row("shared", registry.subscription_id, registry.resource_group, registry.name, "")
    console.print(f"backend: [bold]{topology.backend}[/bold]")
    console.print(table)


@app.command("paused")
def paused() -> None:
    """List flow runs waiting for an approval."""
    _use_running_server()
    from mlops_cli.approvals import list_paused_runs

    table = Table("flow run id", "name", "flow", "state", "since")
    for run in list_paused_runs():
        table.add_row(run.id, run.name, run.flow_name, run.state, run.paused_since)
    console.print(table)


def _decide(run_id: str, approved: bool, approver: str, reason: str) -> None:
    _use_running_server()
    from mlops_cli.approvals import decide

    try:
        decide(run_id, approved, approver, reason)
    except (RuntimeError, ValueError) as error:
        console.print(f"[red]Refused:[/red] {error}. The run is still paused.")
        raise typer.Exit(1) from None
    console.print(f"{'Approved' if approved else 'Rejected'} {run_id} as {approver}.")


@app.command()
def approve(run_id: str, approver: ApproverOption, reason: ReasonOption) -> None:
    """Approve a paused release: it goes on to promote and deploy to prod."""
    _decide(run_id, True, approver, reason)


@app.command()
def reject(run_id: str, approver: ApproverOption, reason: ReasonOption) -> None:
    """Reject a paused release: nothing is promoted."""
    _decide(run_id, False, approver, reason)


@app.command("approve-next")
def approve_next(
    approver: ApproverOption,
    reason: ReasonOption,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a paused run.")] = 900,
    keep_going: Annotated[
        bool, typer.Option(help="Keep approving every run that pauses until stopped.")
    ] = False,
) -> None:
    """Wait for the next paused train-dev (pipeline-asset promotion) or release and approve it
    (the unattended demo's approver, with --keep-going)."""
    _use_running_server()
    from mlops_cli.approvals import decide, list_paused_runs

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        waiting = [r for r in list_paused_runs() if r.flow_name in APPROVAL_FLOWS]
        for run in waiting:
            decide(run.id, True, approver, reason)
            console.print(f"Approved {run.flow_name} run {run.id} as {approver}.")
        if waiting and not keep_going:
            return
        time.sleep(1)
    if keep_going:
        return
    console.print(f"No run waited for approval within {wait:.0f} s.")
    raise typer.Exit(1)


@app.command()
def audit() -> None:
    """Print the audit log: approvals, promotions, deployments, traffic, rollbacks."""
    from audit import read_audit_log

    table = Table("when", "action", "who", "what", "why", "flow run")
    for entry in read_audit_log():
        table.add_row(
            entry.at,
            entry.action,
            entry.actor,
            entry.subject,
            entry.reason,
            (entry.flow_run_id or "")[:8],
        )
    console.print(table)


@app.command()
def card(
    model: str,
    version: str,
    environment: Annotated[
        str | None,
        typer.Option(
            help="Read the version from this environment's workspace only (default: the "
            "shared registry's version, else dev's)."
        ),
    ] = None,
) -> None:
    """Print a model version's model card (markdown), with its approval once decided."""
    from tasks.training.model_card import ModelCardMissing, find_model_card

    try:
        found = find_model_card(model, version, environment)
    except ModelCardMissing as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    typer.echo(found.markdown)


@app.command()
def assets() -> None:
    """The working tree's component and environment versions, and whether the shared registry
    holds them (test and prod run only what it holds; train-dev promotes after an approval)."""
    import backends
    from backends.pipeline_assets import AssetsNotPromoted, working_tree_assets

    registry = backends.shared_registry()
    found = working_tree_assets()
    table = Table("kind", "name", "version")
    for kind, asset in found.each():
        table.add_row(kind, asset.name, asset.version)
    console.print(table)
    try:
        registry.pipeline_asset_references(found)
    except AssetsNotPromoted as error:
        console.print(f"[red]Not promoted:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"{registry.name} holds asset set {found.digest}: test and prod can run it.")


@app.command()
def rollback(reason: ReasonOption, actor: ApproverOption = "operator") -> None:
    """Return prod traffic and the champion alias to the last known good model."""
    ensure_server()
    from flows.rollback import rollback as rollback_flow

    state = rollback_flow(reason=reason, actor=actor, return_state=True)
    if state.is_failed():
        console.print(f"[red]Rollback failed:[/red] {state.message}")
        raise typer.Exit(1)
    good = state.result()
    console.print(f"Prod serves {good.name} v{good.version} again.")


@rollout_app.command("status")
def rollout_status(environment: EnvironmentOption = None) -> None:
    """Where the endpoint's last rollout stands (the Prefect Variable it keeps)."""
    _use_running_server()
    from settings import load_release_settings
    from tasks.rollout.record import read_record

    settings = load_release_settings()
    environment = environment or settings.prod_environment
    record = read_record(environment, settings.prod_endpoint)
    if record is None:
        console.print(f"No rollout on {environment}/{settings.prod_endpoint} yet.")
        return
    step = settings.rollout.steps[min(record.step, len(settings.rollout.steps) - 1)]
    console.print(
        f"{record.model} to {record.new} on {environment}/{record.endpoint}: {record.status}, "
        f"step {record.step + 1} of {len(settings.rollout.steps)} ({step.label}); before it: "
        f"{record.previous_traffic}; flow run {record.flow_run_id}; updated {record.updated}"
    )


@rollout_app.command("abort")
def rollout_abort(
    reason: ReasonOption, actor: ApproverOption = "operator", environment: EnvironmentOption = None
) -> None:
    """Stop the running rollout now: all traffic back on the deployment that served before it,
    at once, with an audit record. The rollout's run notices within a poll and ends Cancelled."""
    _use_running_server()
    from settings import load_release_settings
    from tasks.rollout.stop import stop_rollout

    settings = load_release_settings()
    endpoint, environment = settings.prod_endpoint, environment or settings.prod_environment
    stopped = stop_rollout(environment, endpoint, "abort", actor, reason)
    if stopped is None:
        console.print(f"No rollout is running on {environment}/{endpoint}; nothing was changed.")
        raise typer.Exit(1)
    console.print(
        f"Stopped the rollout of {stopped.model} at step {stopped.step + 1}: traffic is "
        f"{stopped.previous_traffic} again."
    )


@app.command("simulate-traffic")
def simulate_traffic(
    rows: Annotated[int, typer.Option(help="Patients to score.")] = 2_000,
    batch: Annotated[int, typer.Option(help="Rows per request.")] = 50,
    age_offset: Annotated[float, typer.Option(help="Older patients (years), for drift.")] = 0.0,
    admission_mix: Annotated[
        str | None, typer.Option(help="e.g. Emergency=0.8,Urgent=0.15,Elective=0.05")
    ] = None,
    recent_data: Annotated[
        bool, typer.Option(help="Also write labelled recent data for retraining.")
    ] = False,
) -> None:
    """Send realistic (or shifted) patients to the prod endpoint."""
    from mlops_cli.traffic import parse_mix, send_traffic

    result = send_traffic(
        rows, batch, age_offset, parse_mix(admission_mix), write_recent_data=recent_data
    )
    console.print(
        f"Sent {result.rows} rows in {result.requests} requests, {result.errors} errors"
        + (f"; recent data: {result.recent_data}" if result.recent_data else "")
    )


@app.command("monitor")
def monitor() -> None:
    """Run the drift monitor once now (the drift-monitor deployment runs it hourly)."""
    ensure_server()
    from flows.monitor_drift import monitor_drift

    report = monitor_drift()
    console.print(report.message)


@app.command()
def demo(
    data: Annotated[
        Path | None, typer.Option(help="A readmission CSV; the synthetic sample if unset.")
    ] = None,
) -> None:
    """The whole lifecycle, unattended: train-dev, release, approval by a separate process."""
    started = time.monotonic()
    ui = ensure_server()
    console.print(f"Prefect server: {ui}")
    approver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_cli.main",
            "approve-next",
            "--keep-going",
            "--as",
            "demo-approver",
            "--reason",
            "unattended demo: evidence pack reviewed by the approval script",
        ],
        env=os.environ.copy(),
    )
    from flows.lifecycle import lifecycle

    try:
        state = lifecycle(data_path=str(data) if data else None, return_state=True)
    finally:
        if approver.poll() is None:
            approver.terminate()
    run_id = state.state_details.flow_run_id
    console.print(f"\nLifecycle flow run: {ui}/runs/flow-run/{run_id}  ({state.name})")
    if not state.is_completed():
        console.print(f"[red]The lifecycle did not complete:[/red] {state.message}")
        raise typer.Exit(1)
    _print_prod(time.monotonic() - started)
    from mlops_cli.batch import print_inbox

    print_inbox()


def _print_prod(seconds: float) -> None:
    import backends
    from settings import load_release_settings, load_training_settings

    model_name = load_training_settings().model_name
    registry = backends.shared_registry()
    champion = registry.get_model(model_name, aliases.CHAMPION)
    release = load_release_settings()
    endpoint_name = release.prod_endpoint
    endpoints = backends.endpoints(release.prod_environment)
    endpoint = endpoints.get_endpoint(endpoint_name)
    if champion is None or endpoint is None:
        console.print("[red]The lifecycle completed but prod has no champion or endpoint.[/red]")
        raise typer.Exit(1)
    key_file = load_topology().local_root / "prod-endpoint-key.txt"
    key_file.write_text(endpoints.get_key(endpoint_name))
    key_file.chmod(0o600)
    console.print(
        f"Prod serves [bold]{champion.name} v{champion.version}[/bold] (champion in "
        f"{registry.name}, approved by {champion.tags.get(lineage_tags.APPROVED_BY)}) on "
        f"{endpoint.serving()} with traffic {dict(endpoint.traffic)}; "
        f"lifecycle took {seconds:.0f} s"
    )
    console.print(f"Endpoint: {endpoint.scoring_uri}")
    from data_checks.readmission_schema import EXAMPLE_ROW

    example = json.dumps({"input_data": [EXAMPLE_ROW]})
    console.print(
        f'curl -s {endpoint.scoring_uri} -H "Authorization: Bearer $(cat {key_file})" '
        f"-H 'Content-Type: application/json' -d '{example}'",
        soft_wrap=True,
    )
    console.print("Audit log: .venv/bin/mlops audit    Stop the servers: make stop")


if __name__ == "__main__":
    app()
