"""The model card's life: written into the model folder before registration, so the model's
files carry it into the workspace registry and, at promotion, into the shared registry; shown
as the `model-card` Prefect artifact; read back for `mlops card` and the evidence pack.

The approval is not in the stored file (a registered version's files cannot change on Azure):
promotion writes it on the shared registry's version (its approval tags) and in the audit
trail, and `find_model_card` fills the card's Approval section from them. See
reports/model_card.py for the layout.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.settings import PREFECT_UI_URL

import backends
from audit import read_audit_log
from backends.base import ModelRegistry, Workspace
from data_checks.readmission_schema import LABEL
from records import lineage_tags
from records.lineage import git_commit
from records.workspace import AssetReferences, DataAsset, ModelVersion, PipelineRun
from reports.model_card import (
    CARD_DIR,
    CARD_FILE,
    IMPORTANCE_PICTURE,
    CardApproval,
    CodeLineage,
    Evaluation,
    TrainingData,
    render_model_card,
    titled,
    with_approval,
)
from tasks.training.pipeline import GateResult

FAIRNESS_FILE = "fairness.json"
DEFAULT_WORKSPACE = "dev"
"""Where `find_model_card` looks when the shared registry does not hold the version."""
IMPORTANCE_FILE = "feature_importance.json"


@dataclass(frozen=True)
class ModelCard:
    """A version's card as shown: the stored text, titled, its approval filled in."""

    model: ModelVersion
    where: str
    """The store it was read from, as a person names it."""
    markdown: str
    file: str
    """Where the card is inside the model's files (`model_card/model_card.md`)."""


@dataclass(frozen=True)
class PublishedCard:
    """The card as the release's evidence pack links it."""

    where: str
    file: str
    artifact_url: str
    command: str
    """The `mlops card` command that prints it."""


class ModelCardMissing(LookupError):
    """The version (or its card) is not where it was looked for; the message says where."""


@task
def write_model_card(
    environment: str,
    model_name: str,
    run: PipelineRun,
    asset: DataAsset,
    gate: GateResult,
    assets: AssetReferences,
) -> str:
    """Render the card from the evaluation output and write it (with the importance picture)
    into the model folder the registration will take, so the card is part of the version.
    Deterministic: a re-run after a crash writes the same bytes. Returns the markdown."""
    evaluation_dir = Path(gate.evaluation_dir)
    card_dir = Path(run.model_folder) / CARD_DIR
    card_dir.mkdir(exist_ok=True)
    picture = evaluation_dir / IMPORTANCE_PICTURE
    if picture.exists():
        shutil.copyfile(picture, card_dir / IMPORTANCE_PICTURE)
    markdown = render_model_card(
        model_name,
        _training_data(run, asset),
        CodeLineage(
            workspace=backends.workspace(environment).name,
            pipeline_run_id=run.run_id,
            train_run_id=run.step("train").run_id,
            git_commit=git_commit(),
            pipeline_assets=assets.digest,
            pipeline_assets_from=assets.store,
            tracking_url=run.tracking_url,
        ),
        Evaluation(
            metrics=_read_json(evaluation_dir / "metrics.json"),
            gate=_read_json(evaluation_dir / "gate.json"),
            fairness=_read_json_if_there(evaluation_dir / FAIRNESS_FILE),
            importance=_read_json_if_there(evaluation_dir / IMPORTANCE_FILE),
            has_picture=picture.exists(),
        ),
    )
    (card_dir / CARD_FILE).write_text(markdown)
    return markdown


@task
def publish_model_card(model: ModelVersion, environment: str | None = None) -> PublishedCard:
    """Show the version's card as the `model-card` Prefect artifact (environment None: the
    shared registry's version, with its approval) and say where it is."""
    card = (
        read_workspace_card(environment, model)
        if environment is not None
        else read_registry_card(model)
    )
    artifact = create_markdown_artifact(
        key="model-card",
        markdown=card.markdown,
        description=f"Model card of {card.where}",
    )
    command = f"mlops card {model.name} {model.version}"
    return PublishedCard(
        where=card.where,
        file=card.file,
        artifact_url=f"{PREFECT_UI_URL.value()}/artifacts/artifact/{artifact}",
        command=command if environment is None else f"{command} --environment {environment}",
    )


def find_model_card(model_name: str, version: str, environment: str | None = None) -> ModelCard:
    """The card of `version`: without `environment`, the shared registry's version, else dev's
    (version numbers are per store); with it, that environment's workspace's only."""
    looked: list[str] = []
    if environment is None:
        registry = backends.shared_registry()
        found = _version(registry, model_name, version)
        if found is not None:
            return read_registry_card(found)
        looked.append(f"the shared registry {registry.name}")
    workspace = backends.workspace(environment or DEFAULT_WORKSPACE)
    found = _version(workspace, model_name, version)
    if found is None:
        looked.append(f"workspace {workspace.name}")
        raise ModelCardMissing(
            f"{model_name} v{version} is not in {' nor in '.join(looked)}; "
            "name another environment with --environment"
        )
    return read_workspace_card(environment or DEFAULT_WORKSPACE, found)


def read_registry_card(model: ModelVersion) -> ModelCard:
    registry = backends.shared_registry()
    where = f"{model.name} v{model.version} in the shared registry {registry.name}"
    card = _stored_card(registry, model, where)
    return ModelCard(model, where, titled(with_approval(card, approval_of(model)), where), _FILE)


def read_workspace_card(environment: str, model: ModelVersion) -> ModelCard:
    workspace = backends.workspace(environment)
    where = f"{model.name} v{model.version} in workspace {workspace.name} ({environment})"
    card = _stored_card(workspace, model, where)
    return ModelCard(model, where, titled(card, where), _FILE)


def approval_of(model: ModelVersion) -> CardApproval | None:
    """The decision that let a shared-registry version in: who and why from its tags (what
    promotion wrote), when from the audit trail's `approved` record of the same release run."""
    approver = model.tags.get(lineage_tags.APPROVED_BY)
    if not approver:
        return None
    release_run = model.tags.get(lineage_tags.RELEASE_FLOW_RUN_ID, "")
    decided = [
        r
        for r in read_audit_log()
        if r.action == "approved" and r.actor == approver and r.flow_run_id == release_run
    ]
    return CardApproval(
        approver=approver,
        reason=model.tags.get(lineage_tags.APPROVAL_REASON, ""),
        decided_at=decided[-1].at if decided else "an unrecorded time (no audit record found)",
        release_run=release_run or "unknown",
        registry_version=f"{model.name} v{model.version}",
    )


_FILE = f"{CARD_DIR}/{CARD_FILE}"


def _stored_card(store: Workspace | ModelRegistry, model: ModelVersion, where: str) -> str:
    path = store.model_path(model) / CARD_DIR / CARD_FILE
    if not path.exists():
        raise ModelCardMissing(
            f"{where} has no model card ({_FILE} is missing from its files): it was "
            "registered before cards were written; retrain to get one"
        )
    return path.read_text()


def _version(
    store: Workspace | ModelRegistry, model_name: str, version: str
) -> ModelVersion | None:
    return next((v for v in store.list_model_versions(model_name) if v.version == version), None)


def _training_data(run: PipelineRun, asset: DataAsset) -> TrainingData:
    """Row counts and readmission rates from the prep step's split (the label column only)."""
    train = pd.read_parquet(Path(run.train_data) / "data.parquet", columns=[LABEL])
    test = pd.read_parquet(Path(run.test_data) / "data.parquet", columns=[LABEL])
    return TrainingData(
        asset=asset.name,
        version=asset.version,
        sha256=asset.content_hash,
        rows_total=len(train) + len(test),
        rows_train=len(train),
        rows_test=len(test),
        label_rate_train=float(train[LABEL].mean()),
        label_rate_test=float(test[LABEL].mean()),
    )


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _read_json_if_there(path: Path) -> dict | None:
    return _read_json(path) if path.exists() else None
