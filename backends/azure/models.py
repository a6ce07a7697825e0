"""Model versions in a workspace or a registry: list, find by identity tag, register, alias,
download. Both share this code because azure-ai-ml's `models` operations are the same object
for a workspace MLClient and a registry MLClient; only where the bytes live differs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model
from azure.core.exceptions import ResourceNotFoundError

from backends.azure import aliases
from backends.azure.errors import AzureConflict, explained
from records import lineage_tags
from records.workspace import ModelVersion

MARKER = ".downloaded"


class ModelStore:
    """The `models` of one MLClient, speaking in `ModelVersion` records.

    `source_of(name, version)` says how other services refer to a version (an `azureml://`
    asset id), which is what deployments and registry imports need.
    """

    def __init__(
        self,
        client: MLClient,
        where: str,
        download_root: Path,
        source_of: Callable[[str, str], str],
    ) -> None:
        self.client = client
        self.where = where
        self.download_root = download_root
        self.source_of = source_of

    # --- reading ---------------------------------------------------------------------------

    def versions(self, name: str) -> list[Model]:
        """Every active version, oldest first; none (not an error) for an unknown name."""
        with explained(f"list versions of model {name!r} in {self.where}"):
            try:
                found = list(self.client.models.list(name=name))
            except ResourceNotFoundError:
                return []
        return sorted(found, key=_version_key)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        found = self.versions(name)
        return self._records(found)

    def find(self, name: str, tag: str, value: str) -> ModelVersion | None:
        """The version whose identity tag `tag` equals `value` (idempotent writes start here)."""
        return next((v for v in self.list_model_versions(name) if v.tags.get(tag) == value), None)

    def get_model(self, name: str, alias: str) -> ModelVersion | None:
        records = self.list_model_versions(name)
        return next((r for r in records if alias in r.aliases), None)

    def get_version(self, name: str, version: str) -> ModelVersion:
        records = {r.version: r for r in self.list_model_versions(name)}
        if version not in records:
            raise KeyError(f"model {name!r} has no version {version!r} in {self.where}")
        return records[version]

    # --- writing ---------------------------------------------------------------------------

    def next_version(self, name: str) -> str:
        numbers = [int(str(m.version)) for m in self.versions(name) if str(m.version).isdigit()]
        return str(max(numbers, default=0) + 1)

    def register(
        self, name: str, path: str, tags: Mapping[str, str], description: str
    ) -> ModelVersion:
        """A new version from a local MLflow model folder or an `azureml://` path."""
        version = self.next_version(name)
        model = Model(
            name=name,
            version=version,
            path=path,
            type=AssetTypes.MLFLOW_MODEL,
            tags={k: str(v) for k, v in tags.items()},
            description=description,
        )
        with explained(f"register model {name} v{version} in {self.where}"):
            created = self.client.models.create_or_update(model)
        return self._record(created, {})

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        """Tag the new holder, then untag the old ones (see aliases.py for why this order)."""
        tag = aliases.tag_for(alias)
        found = {str(m.version): m for m in self.versions(name)}
        if version not in found:
            raise KeyError(
                f"cannot point {alias!r} at {name} v{version}: no such version in {self.where}; "
                f"it has {sorted(found, key=_number)}"
            )
        current = aliases.holders((v, m.tags or {}) for v, m in found.items()).get(alias)
        if current != version:
            self._update_tags(found[version], {tag: aliases.claim()}, remove=())
        for other_version, other in found.items():
            if other_version != version and tag in (other.tags or {}):
                self._update_tags(other, {}, remove=(tag,))

    def set_tags(
        self,
        name: str,
        version: str,
        tags: Mapping[str, str],
        drop_aliases: bool = False,
        description: str | None = None,
    ) -> None:
        """Add `tags` (and set the description) of a version; `drop_aliases` also removes
        alias claims (a fresh copy from a workspace carries the source's claims, which mean
        nothing here). No write when nothing changes."""
        model = {str(m.version): m for m in self.versions(name)}[version]
        current = model.tags or {}
        stale = tuple(k for k in current if drop_aliases and k.startswith(aliases.PREFIX))
        described = description is not None and description != model.description
        if stale or described or any(current.get(k) != v for k, v in tags.items()):
            if described:
                model.description = description
            self._update_tags(model, tags, remove=stale)

    def _update_tags(self, model: Model, add: Mapping[str, str], remove: tuple[str, ...]) -> None:
        """Tags and description are the mutable part of a version: GET -> change -> PUT the
        same version (the path stays, so Azure takes it as an update, not a new asset)."""
        tags = {k: v for k, v in (model.tags or {}).items() if k not in remove} | dict(add)
        model.tags = {k: str(v) for k, v in tags.items()}
        with explained(f"update tags of model {model.name} v{model.version} in {self.where}"):
            self.client.models.create_or_update(model)

    # --- files -----------------------------------------------------------------------------

    def model_path(self, model: ModelVersion) -> Path:
        """A local copy of the version's MLflow folder (downloaded once, then reused)."""
        target = self.download_root / model.name / model.version
        if not (target / MARKER).exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with explained(f"download model {model.name} v{model.version} from {self.where}"):
                self.client.models.download(model.name, model.version, download_path=str(target))
            (target / MARKER).write_text(model.source)
        found = sorted(target.rglob("MLmodel"), key=lambda p: len(p.parts))
        if not found:
            raise AzureConflict(
                f"model {model.name} v{model.version} in {self.where} has no MLmodel file "
                f"(downloaded to {target}); register MLflow model folders only"
            )
        return found[0].parent

    # --- records ---------------------------------------------------------------------------

    def _records(self, models: list[Model]) -> list[ModelVersion]:
        holders = aliases.holders((str(m.version), m.tags or {}) for m in models)
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(holders.items()):
            by_version.setdefault(version, []).append(alias)
        return [self._record(m, by_version) for m in models]

    def _record(self, model: Model, by_version: Mapping[str, list[str]]) -> ModelVersion:
        tags = aliases.without_alias_tags(model.tags or {})
        return ModelVersion(
            name=str(model.name),
            version=str(model.version),
            source=self.source_of(str(model.name), str(model.version)),
            run_id=tags.get(lineage_tags.RUN_ID) or None,
            tags=tags,
            aliases=tuple(by_version.get(str(model.version), ())),
        )


def _number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _version_key(model: Model) -> tuple[int, str]:
    return _number(str(model.version))


class ModelStoreDelegate:
    """The model operations a workspace and the shared registry both answer from a ModelStore."""

    models: ModelStore

    def get_model(self, name: str, alias: str) -> ModelVersion | None:
        return self.models.get_model(name, alias)

    def set_model_alias(self, name: str, alias: str, version: str) -> None:
        self.models.set_model_alias(name, alias, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return self.models.list_model_versions(name)

    def model_path(self, model: ModelVersion) -> Path:
        return self.models.model_path(model)
