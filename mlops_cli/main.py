"""`mlops`: run the lifecycle on this machine and operate its Prefect server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from backends.topology import load_topology
from mlops_cli.prefect_server import running_server, start_server, stop_server

app = typer.Typer(help="Readmission MLOps lifecycle on Prefect (local backend by default).")
server_app = typer.Typer(help="The local Prefect server the demo runs against.")
app.add_typer(server_app, name="server")
console = Console()


def _prefect_home() -> Path:
    return load_topology().local_root / "prefect"


def ensure_server() -> str:
    """Reuse this checkout's Prefect server or start one; return its API URL.

    Prefect reads PREFECT_API_URL when it is first imported, so this runs before any flow import.
    """
    home = _prefect_home()
    server = running_server(home) or start_server(home, port=4200 if _port_free(4200) else None)
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_HOME"] = str(home)
    return server.ui_url


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the Prefect server and print its UI address."""
    console.print(f"Prefect UI: {ensure_server()}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the Prefect server this checkout started."""
    server = running_server(_prefect_home())
    if server is None:
        console.print("No Prefect server is running for this checkout.")
        return
    stop_server(server)
    console.print(f"Stopped the Prefect server (pid {server.pid}).")


@app.command()
def demo(
    data: Annotated[
        Path | None, typer.Option(help="A readmission CSV; the synthetic sample if unset.")
    ] = None,
) -> None:
    """Run the lifecycle on the local backend, unattended, against a real Prefect server."""
    ui = ensure_server()
    console.print(f"Prefect server: {ui}")
    from prefect.context import get_run_context  # noqa: F401  (import after the API URL is set)

    from flows.train_dev import train_dev

    state = train_dev(data_path=str(data) if data else None, return_state=True)
    model = state.result(raise_on_failure=False)
    run_id = state.state_details.flow_run_id
    console.print(f"\nFlow run: {ui}/runs/flow-run/{run_id}  ({state.name})")
    if state.is_failed():
        console.print(f"[red]train-dev failed:[/red] {model}")
        raise typer.Exit(1)
    import backends

    workspace = backends.workspace("dev")
    console.print(
        f"Registered [bold]{model.name}[/bold] version {model.version} in {workspace.name} "
        f"(aliases: {', '.join(model.aliases) or 'champion'})"
    )
    for key in ("data_asset", "data_version", "git_commit", "test_auc", "test_brier"):
        console.print(f"  {key}: {model.tags.get(key)}")
    console.print(f"MLflow UI: {workspace.tracking_ui_command()}")
    console.print("Stop the Prefect server with: make stop")


if __name__ == "__main__":
    app()
