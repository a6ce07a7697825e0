"""Components and environments in a workspace or the shared registry, once per content version.

The same code serves dev's workspace (registration) and the shared registry (promotion), because
azure-ai-ml's `components` and `environments` operations are the same objects on a workspace
MLClient and a registry MLClient; only the way a job refers to what they hold differs
(`azureml:<name>:<version>` in a workspace, `azureml://registries/<r>/<kind>s/<name>/versions/<v>`
in a registry), so the store is given that rule.

Every write is read first: a version is a content digest (backends/pipeline_assets.py), so a
version the store holds already is exactly what would be sent and is never sent again (registry
assets are immutable besides). A create whose reply was lost and whose retry is refused as
"already exists" (409) is accepted once a read finds the version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azure.ai.ml import MLClient, load_component, load_environment
from azure.ai.ml.entities import PipelineComponent
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import ResourceNotFoundError

from backends.azure.clients import quiet_sdk_logs
from backends.azure.errors import AzureConflict, AzureOperationFailed, explained
from backends.pipeline_assets import ComponentAsset, EnvironmentAsset, PipelineAssets
from records.workspace import AssetReferences

Reference = Callable[[str, str, str], str]
"""(kind, name, version) -> how a job or deployment refers to that asset in this store."""


class AssetStore:
    """The `components` and `environments` of one MLClient, keyed by content version."""

    def __init__(
        self,
        client: MLClient,
        where: str,
        reference: Reference,
        references: Callable[[PipelineAssets], AssetReferences],
    ) -> None:
        self.client = client
        self.where = where
        self.reference = reference
        self.references = references
        self._held: set[tuple[str, str, str]] = set()  # versions never change: read once

    # --- reading ---------------------------------------------------------------------------

    def holds(self, kind: str, name: str, version: str) -> bool:
        """Whether the store has this version (a 404 is an answer, not an error)."""
        key = (kind, name, version)
        if key in self._held:
            return True
        with explained(f"read {kind} {name} version {version} in {self.where}"):
            try:
                self._operations(kind).get(name=name, version=version)
            except ResourceNotFoundError:
                return False
        self._held.add(key)
        return True

    # --- writing ---------------------------------------------------------------------------

    def register(self, assets: PipelineAssets) -> AssetReferences:
        """Every environment, then every component pinned to its environment's exact version
        in this store; what the store holds already is left as it is."""
        environments = {e.name: self.ensure_environment(e) for e in assets.environments}
        for component in assets.components:
            self.ensure_component(component, environments[component.environment])
        return self.references(assets)

    def ensure_environment(self, environment: EnvironmentAsset) -> str:
        """The environment YAML (image + conda file) as version `environment.version`."""

        def build() -> Any:
            quiet_sdk_logs()
            loaded = load_environment(str(environment.spec_file))
            loaded.version = environment.version
            return loaded

        return self._ensure("environment", environment.name, environment.version, build)

    def ensure_component(self, component: ComponentAsset, environment_reference: str) -> str:
        """The component YAML (code folder and includes uploaded by the SDK) as version
        `component.version`, running in `environment_reference` instead of the working tree's
        `@latest` placeholder (what backends.pipeline_assets.registered_spec describes)."""

        def build() -> Any:
            quiet_sdk_logs()
            loaded = load_component(str(component.spec_file))
            if isinstance(loaded, PipelineComponent):  # no environment of its own to pin
                raise TypeError(
                    f"{component.spec_file} is a pipeline component; a pipeline step's asset "
                    "must be a command component"
                )
            loaded.version = component.version
            loaded.environment = environment_reference
            return loaded

        return self._ensure("component", component.name, component.version, build)

    def _ensure(self, kind: str, name: str, version: str, build: Callable[[], Any]) -> str:
        if not self.holds(kind, name, version):
            self._create(kind, name, version, build)
        return self.reference(kind, name, version)

    def _create(self, kind: str, name: str, version: str, build: Callable[[], Any]) -> None:
        try:
            with explained(f"register {kind} {name} version {version} in {self.where}"):
                self._operations(kind).create_or_update(build())
        except (AzureOperationFailed, ValidationException) as error:
            if not _already_exists(error) or not self.holds(kind, name, version):
                raise
            return  # a retried create whose first attempt went through: the version is there
        self._held.add((kind, name, version))

    def _operations(self, kind: str) -> Any:
        return {"component": self.client.components, "environment": self.client.environments}[kind]


def _already_exists(error: Exception) -> bool:
    """A 409, or the SDK's/registry's own "already exists" refusal."""
    status = getattr(error, "status", None)
    return (
        isinstance(error, AzureConflict) or status == 409 or "already exists" in str(error).lower()
    )
