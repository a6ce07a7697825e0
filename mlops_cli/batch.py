"""`mlops batch`: drop a file in an environment's inbox, score what is new now (what the
batch-inbox deployment and the batch-score runs its events start do on a worker), and read a
file's results back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import backends
from records import aliases
from records.batch import BatchSummary

batch_app = typer.Typer(help="Batch scoring: the inbox, scoring what is new, the results.")
console = Console()

EnvironmentOption = Annotated[
    str | None,
    typer.Option(help="Whose inbox and batch endpoint (default: config/batch.yaml's)."),
]


def _environment(environment: str | None) -> str:
    from settings import load_batch_settings

    return environment or load_batch_settings().environment


@batch_app.command("drop")
def drop(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or Parquet.")],
    name: Annotated[str | None, typer.Option(help="Its name in the inbox.")] = None,
    environment: EnvironmentOption = None,
) -> None:
    """Put a file in the inbox (Azure: the datastore folder); batch-inbox finds it."""
    environment = _environment(environment)
    batch = backends.batch_scoring(environment)
    file = batch.put_inbox_file(path, name or path.name)
    console.print(
        f"Dropped {file.name} ({file.size:,} bytes, sha256 {file.sha256[:12]}) in {batch.inbox}"
    )


@batch_app.command("run")
def run(environment: EnvironmentOption = None) -> None:
    """Look at the inbox once and score every new file now, in this process."""
    from mlops_cli.main import ensure_server

    ensure_server()
    from flows.batch import batch_score, watch_inbox

    environment = _environment(environment)
    announced = watch_inbox(environment)
    if not announced:
        console.print("Nothing new to score in the inbox.")
    for name in announced:
        print_summary(batch_score(name, environment))


@batch_app.command("results")
def results(
    name: Annotated[str, typer.Argument(help="A file's name in the inbox.")],
    into: Annotated[Path, typer.Option(help="Where Azure's results are downloaded.")] = Path(
        "batch-results"
    ),
    environment: EnvironmentOption = None,
) -> None:
    """Where a file's scored rows and refused rows are, as the champion scored them."""
    from settings import load_training_settings

    environment = _environment(environment)
    batch = backends.batch_scoring(environment)
    file = batch.inbox_file(name)
    champion = backends.shared_registry().get_model(
        load_training_settings().model_name, aliases.CHAMPION
    )
    summary = batch.finished(file, champion) if champion else None
    if summary is None:
        console.print(f"{name} has no results from the champion yet.")
        raise typer.Exit(1)
    into.mkdir(parents=True, exist_ok=True)
    scored, rejects = batch.results_copy(summary, into)
    print_summary(summary)
    console.print(f"Scored rows: {scored}\nRefused rows: {rejects}")


def print_inbox(environment: str | None = None) -> None:
    """Each inbox file and what the champion made of it (the demo's last words)."""
    from settings import load_training_settings

    environment = _environment(environment)
    batch = backends.batch_scoring(environment)
    champion = backends.shared_registry().get_model(
        load_training_settings().model_name, aliases.CHAMPION
    )
    for file in batch.inbox_files():
        summary = batch.finished(file, champion) if champion else None
        if summary is None:
            console.print(f"{file.name}: not scored by the champion (yet)")
        else:
            print_summary(summary)
    console.print(f"Inbox: {batch.inbox}; a file's results: mlops batch results NAME")


def print_summary(summary: BatchSummary) -> None:
    table = Table(
        "model",
        "rows",
        "scored",
        "refused",
        "label rate",
        "seconds",
        title=f"Batch scoring of {Path(summary.input).name}",
    )
    table.add_row(
        f"v{summary.model_version}",
        f"{summary.rows:,}",
        f"{summary.rows_scored:,}",
        f"{summary.rows_refused:,}",
        "n/a" if summary.label_rate is None else f"{summary.label_rate:.1%}",
        f"{summary.seconds:.1f}",
    )
    console.print(table)
    for rule, count in summary.refused_by_rule.items():
        console.print(f"  refused {count:,}: {rule}")
