"""The local batch endpoint: an inbox folder in the workspace, a default deployment (which
model scores), and jobs that run the batch scoring script in a process pool
(batch_scoring.score_file), with results written back beside the inbox.

Layout under the workspace folder (records.batch names it, the same as on the datastore):
`<inbox>/` where files are dropped, `<results>/<sha256[:16]>/<model>-v<version>/` holding
`scored/`, `rejects/` and `summary.json`, and `batch-endpoints/<endpoint>.json` naming each
endpoint's default deployment, as Azure keeps `defaults.deploymentName`.

Exactly once: a job takes a file lock on its results folder and looks for summary.json first,
so two runs on the same content and model version (a watcher that ran twice, a re-run after a
crash) score it once; summary.json is written last, by rename, so a crash leaves no summary and
the next run scores again from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from backends.collected_data import batch_rows_as_captured
from backends.content_hash import file_sha256
from backends.local.batch_scoring import score_file
from records.batch import SUMMARY_FILE, BatchSummary, InboxFile, results_prefix
from records.workspace import ModelVersion

if TYPE_CHECKING:
    import pandas as pd

    from settings import BatchSettings

SCORABLE_SUFFIXES = (".csv", ".parquet")


class BatchEndpointMissing(RuntimeError):
    """A job was asked of an endpoint with no deployment of the model (deploy_model first)."""


class LocalBatchScoring:
    def __init__(self, directory: Path, settings: BatchSettings) -> None:
        self.directory = directory
        self.inbox_dir = directory / settings.inbox
        self.results_dir = directory / settings.results
        self.endpoints_dir = directory / "batch-endpoints"
        self.inbox = str(self.inbox_dir)

    # --- the inbox ------------------------------------------------------------------------

    def inbox_files(self, since: datetime | None = None) -> list[InboxFile]:
        if not self.inbox_dir.is_dir():
            return []
        earliest = since.timestamp() if since is not None else float("-inf")
        found = [
            path
            for path in self.inbox_dir.rglob("*")
            if path.is_file()
            and path.suffix.lower() in SCORABLE_SUFFIXES
            and not path.name.startswith(".")  # a copy still being written (.name.partial)
            and path.stat().st_mtime >= earliest
        ]
        files = [self._describe(path) for path in found]
        return sorted(files, key=lambda f: (f.modified, f.name))

    def inbox_file(self, name_or_uri: str) -> InboxFile:
        path = Path(name_or_uri)
        if not path.is_absolute():
            path = self.inbox_dir / name_or_uri
        if not path.is_file():
            raise FileNotFoundError(
                f"{name_or_uri}: no such file (looked at {path}); drop files in {self.inbox_dir}"
            )
        return self._describe(path)

    def _describe(self, path: Path) -> InboxFile:
        stat = path.stat()
        try:
            name = path.relative_to(self.inbox_dir).as_posix()
        except ValueError:  # a file scored from elsewhere keeps its own name
            name = path.name
        return InboxFile(
            name=name,
            uri=str(path.resolve()),
            sha256=file_sha256(path),
            size=stat.st_size,
            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def local_copy(self, file: InboxFile) -> Path:
        return Path(file.uri)

    def put_inbox_file(self, source: Path, name: str) -> InboxFile:
        target = self.inbox_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")  # hidden from inbox_files
        shutil.copyfile(source, partial)
        partial.replace(target)
        return self._describe(target)

    def results_copy(self, summary: BatchSummary, into: Path) -> tuple[Path, Path]:
        return Path(summary.scored), Path(summary.rejects)

    # --- the endpoint and its default deployment -------------------------------------------

    def deploy_model(
        self,
        endpoint: str,
        model: ModelVersion,
        model_dir: Path,
        environment: str | None,
        settings: BatchSettings,
    ) -> str:
        name = f"{model.name}-v{model.version}"
        state = {
            "default_deployment": name,
            "model": {"name": model.name, "version": model.version, "tags": dict(model.tags)},
            "model_dir": str(Path(model_dir).resolve()),
            "environment": environment,
        }
        path = self.endpoints_dir / f"{endpoint}.json"
        if path.is_file() and json.loads(path.read_text()) == state:
            return name  # the same model already deployed: nothing to change
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(path)
        return name

    def _deployed(self, endpoint: str, model: ModelVersion) -> Path:
        path = self.endpoints_dir / f"{endpoint}.json"
        state = json.loads(path.read_text()) if path.is_file() else None
        if state is None or (state["model"]["name"], state["model"]["version"]) != (
            model.name,
            model.version,
        ):
            deployed = state and f"{state['model']['name']} v{state['model']['version']}"
            raise BatchEndpointMissing(
                f"batch endpoint {endpoint} in {self.directory.name} does not serve "
                f"{model.name} v{model.version} (its default deployment: {deployed or 'none'}); "
                "deploy the model to it first"
            )
        return Path(state["model_dir"])

    # --- jobs -----------------------------------------------------------------------------

    def score(
        self,
        endpoint: str,
        file: InboxFile,
        model: ModelVersion,
        run_id: str,
        settings: BatchSettings,
    ) -> BatchSummary:
        model_dir = self._deployed(endpoint, model)
        folder = self.results_dir / results_prefix(file, model)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            earlier = self.finished(file, model)
            if earlier is not None:
                return earlier
            summary = score_file(
                Path(file.uri),
                model,
                model_dir,
                folder,
                run_id=run_id,
                mini_batch_rows=settings.local.mini_batch_rows,
                workers=settings.local.workers or None,
                error_threshold=settings.error_threshold,
            )
            summary = dataclasses.replace(
                summary,
                input=file.uri,
                sha256=file.sha256,
                finished_at=datetime.now(UTC).isoformat(),
                job=f"local pool of {summary.workers} processes (pid {os.getpid()})",
            )
            partial = folder / f".{SUMMARY_FILE}.partial"
            partial.write_text(summary.to_json())
            partial.replace(folder / SUMMARY_FILE)
            return summary

    def finished(self, file: InboxFile, model: ModelVersion) -> BatchSummary | None:
        path = self.results_dir / results_prefix(file, model) / SUMMARY_FILE
        return BatchSummary.from_json(path.read_text()) if path.is_file() else None

    def read_scored(self, since: datetime) -> pd.DataFrame:
        import pandas as pd

        frames = []
        for path in sorted(self.results_dir.glob(f"*/*/{SUMMARY_FILE}")):
            summary = BatchSummary.from_json(path.read_text())
            finished = datetime.fromisoformat(summary.finished_at)
            if finished < since or not Path(summary.scored).is_file():
                continue
            frames.append(batch_rows_as_captured(pd.read_parquet(summary.scored), summary))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
