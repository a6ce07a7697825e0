"""Components and environments in a local store, as Azure ML keeps them in a workspace or a
registry: one immutable folder per name and content version.

A component version is its YAML (the version and the exact environment reference filled in)
beside a `code/` folder holding what Azure ML's snapshot holds (the code folder and each
`additional_includes` folder). An environment version is its YAML and conda file. The local
runner runs a step from that folder, never from the working tree, so a test pipeline runs the
bytes dev validated and promoted, whatever the working tree holds now.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from backends.pipeline_assets import (
    AssetsNotPromoted,
    EnvironmentAsset,
    PipelineAssets,
    parse_reference,
    registered_spec,
)

COMPONENT_FILE = "component.yml"
ENVIRONMENT_FILE = "environment.yml"
CODE_DIR = "code"


class AssetStore:
    """`<directory>/<kind>s/<name>/<version>/` for one workspace or registry."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def version_dir(self, kind: str, name: str, version: str) -> Path:
        return self.directory / f"{kind}s" / name / version

    def holds(self, kind: str, name: str, version: str) -> bool:
        return (self.version_dir(kind, name, version) / ".complete").is_file()

    def add(self, assets: PipelineAssets, environment_reference: Callable[[str, str], str]) -> int:
        """Store every asset this store does not hold yet; returns how many were new. Each
        version is written under a temporary name and renamed into place, so a crash leaves
        either the whole version or none of it, and a re-run adds only what is missing."""
        added = 0
        for kind, asset in assets.each():
            if self.holds(kind, asset.name, asset.version):
                continue
            target = self.version_dir(kind, asset.name, asset.version)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            partial.mkdir(parents=True)
            if isinstance(asset, EnvironmentAsset):  # kind == "environment"
                shutil.copy2(asset.spec_file, partial / ENVIRONMENT_FILE)
                shutil.copy2(asset.conda_file, partial / asset.conda_file.name)
            else:
                environment = assets.environment(asset.environment)
                spec = registered_spec(
                    asset, environment_reference(environment.name, environment.version)
                )
                spec["code"] = f"./{CODE_DIR}"
                spec.pop("additional_includes", None)
                (partial / COMPONENT_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
                for source, relative in asset.files():
                    (partial / CODE_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, partial / CODE_DIR / relative)
            (partial / ".complete").write_text(asset.version + "\n")
            try:
                partial.rename(target)
                added += 1
            except OSError:  # another process stored the same version first: same content
                shutil.rmtree(partial, ignore_errors=True)
        return added

    def component_file(self, name: str, version: str) -> Path:
        return self.version_dir("component", name, version) / COMPONENT_FILE


def resolve(reference: str, kind: str, workspace: AssetStore, root: Path) -> Path:
    """The version folder a reference names: `azureml:<name>:<v>` in the workspace's own
    store, `azureml://registries/<r>/...` in that registry's store under the local root."""
    registry, _, name, version = parse_reference(reference)
    store = workspace if registry is None else registry_store(root, registry)
    if not store.holds(kind, name, version):
        where = "this workspace" if registry is None else f"registry {registry}"
        raise AssetsNotPromoted(
            f"{kind} {name} version {version} ({reference}) is not in {where}; register it "
            "there first (train-dev registers the working tree's assets in dev and promotes "
            "them to the shared registry after an approval)"
        )
    return store.version_dir(kind, name, version)


def registry_store(root: Path, registry: str) -> AssetStore:
    return AssetStore(root / "registries" / registry / "assets")


def workspace_store(workspace_dir: Path) -> AssetStore:
    return AssetStore(workspace_dir / "assets")


def conda_file_of(reference: str, workspace_dir: Path) -> Path:
    """The conda file of the environment a deployment refers to (the local root is two levels
    above a workspace: `<root>/workspaces/<name>`)."""
    version_dir = resolve(
        reference, "environment", workspace_store(workspace_dir), workspace_dir.parents[1]
    )
    spec = yaml.safe_load((version_dir / ENVIRONMENT_FILE).read_text())
    return version_dir / spec["conda_file"]
