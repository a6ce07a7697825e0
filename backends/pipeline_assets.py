"""The pipeline's code as versioned assets: components and environments, named by their content.

Dev registers the working tree's components (validate, prep, train, evaluate) and environments
(training; inference) in its workspace, runs its pipelines from them, and, once they passed and
a person approved, promotes them to the shared registry. Every other environment runs the
registry's versions. A version is a digest of everything that makes the asset what it is (the
component YAML, its code folder and `additional_includes`, its environment's image and conda
file), so the same code and spec never make a new version and a changed component is a
different version that the registry does not hold until it is promoted.

Both backends read this module: the azure backend registers the same files with azure-ai-ml,
the local backend keeps snapshots of them in its workspace and registry stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from records.workspace import AssetReferences

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENTS_DIR = REPO_ROOT / "components"
PIPELINES = (
    COMPONENTS_DIR / "pipelines" / "validate_data.yml",
    COMPONENTS_DIR / "pipelines" / "train.yml",
)
"""The pipelines whose components are assets: the data gate's and the training pipeline's."""
INFERENCE_ENVIRONMENT_FILE = COMPONENTS_DIR / "serving" / "environment" / "environment.yml"
ENVIRONMENT_FILES = (COMPONENTS_DIR / "environment" / "environment.yml", INFERENCE_ENVIRONMENT_FILE)
"""The training environment (the components') and the inference environment (deployments')."""
ENVIRONMENT_PLACEHOLDER = "azureml:{name}@latest"
"""How a component YAML names its environment in the working tree (loadable on its own);
registration replaces it with the exact version in the store the component goes to."""
VERSION_LENGTH = 16


@dataclass(frozen=True)
class EnvironmentAsset:
    """An environment YAML (image + conda file) and the version its content makes."""

    name: str
    version: str
    spec_file: Path
    conda_file: Path
    image: str


@dataclass(frozen=True)
class ComponentAsset:
    """A command component YAML with its code and includes, and the version they make."""

    name: str
    version: str
    spec_file: Path
    code_dir: Path
    includes: tuple[Path, ...]
    environment: str
    """The name of the environment asset it runs in."""

    def files(self) -> Iterator[tuple[Path, Path]]:
        """(source file, path in the code snapshot): the code folder, then each include under
        its own folder name, as Azure ML builds the snapshot."""
        yield from _tree(self.code_dir, Path())
        for include in self.includes:
            yield from _tree(include, Path(include.name))


@dataclass(frozen=True)
class PipelineAssets:
    """Every component and environment the pipelines run, from one working tree."""

    components: tuple[ComponentAsset, ...]
    environments: tuple[EnvironmentAsset, ...]

    @property
    def digest(self) -> str:
        """One version for the whole set: the lineage tag a model carries, so dev's validation
        and the registry's copy can be matched."""
        parts = sorted(f"{a.name}:{a.version}" for _, a in self.each())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:VERSION_LENGTH]

    def environment(self, name: str) -> EnvironmentAsset:
        return next(e for e in self.environments if e.name == name)

    @property
    def inference(self) -> EnvironmentAsset:
        return next(e for e in self.environments if e.spec_file == INFERENCE_ENVIRONMENT_FILE)

    def each(self) -> Iterator[tuple[str, ComponentAsset | EnvironmentAsset]]:
        """(kind, asset): environments first, since components refer to them."""
        yield from (("environment", e) for e in self.environments)
        yield from (("component", c) for c in self.components)

    def listing(self) -> str:
        """Markdown rows `| kind | name | version |` for evidence packs and notes."""
        return "\n".join(
            [f"| component | {c.name} | {c.version} |" for c in self.components]
            + [f"| environment | {e.name} | {e.version} |" for e in self.environments]
        )


class AssetsNotPromoted(RuntimeError):
    """An environment that runs the shared registry's assets met a working-tree version the
    registry does not hold: the message names each one and what to run."""


def workspace_reference(kind: str, name: str, version: str) -> str:
    """`azureml:<name>:<version>`: an asset in the workspace the job runs in."""
    return f"azureml:{name}:{version}"


def registry_reference(registry: str, kind: str, name: str, version: str) -> str:
    """`azureml://registries/<r>/<kind>s/<name>/versions/<v>`: an asset in a registry."""
    return f"azureml://registries/{registry}/{kind}s/{name}/versions/{version}"


def workspace_references(workspace: str, assets: PipelineAssets) -> AssetReferences:
    """How jobs in `workspace` refer to the assets registered there."""
    return _references(workspace, assets, workspace_reference)


def registry_references(
    registry: str, assets: PipelineAssets, holds: Callable[[str, str, str], bool]
) -> AssetReferences:
    """The registry's references for these versions, if `holds(kind, name, version)` for every
    one; else AssetsNotPromoted naming each missing asset and what to run. One rule, both
    backends: an environment never runs a version the registry does not hold."""
    missing = [
        (kind, asset) for kind, asset in assets.each() if not holds(kind, asset.name, asset.version)
    ]
    if missing:
        listed = "; ".join(
            f"{kind} {asset.name} version {asset.version} "
            f"({asset.spec_file.relative_to(REPO_ROOT)})"
            for kind, asset in missing
        )
        raise AssetsNotPromoted(
            f"the shared registry {registry} does not hold {listed}: changed in the working tree "
            "but not promoted. Run train-dev (it registers them in dev, runs the pipeline from "
            "them and asks to promote them), approve the pipeline-asset promotion, then run "
            "this again"
        )
    return _references(
        registry,
        assets,
        lambda kind, name, version: registry_reference(registry, kind, name, version),
    )


def _references(
    store: str, assets: PipelineAssets, reference: Callable[[str, str, str], str]
) -> AssetReferences:
    return AssetReferences(
        store=store,
        components={c.name: reference("component", c.name, c.version) for c in assets.components},
        environments={
            e.name: reference("environment", e.name, e.version) for e in assets.environments
        },
        digest=assets.digest,
        inference_environment=reference(
            "environment", assets.inference.name, assets.inference.version
        ),
    )


def parse_reference(reference: str) -> tuple[str | None, str, str, str]:
    """(registry or None for the workspace, kind or "", name, version) of a reference."""
    if reference.startswith("azureml://registries/"):
        parts = reference.removeprefix("azureml://registries/").split("/")
        if len(parts) == 5 and parts[3] == "versions":
            return parts[0], parts[1].removesuffix("s"), parts[2], parts[4]
    elif reference.startswith("azureml:") and reference.count(":") == 2:
        _, name, version = reference.split(":")
        return None, "", name, version
    raise ValueError(
        f"{reference!r} is not an asset reference (azureml:<name>:<version> or "
        "azureml://registries/<registry>/<kind>s/<name>/versions/<version>)"
    )


def working_tree_assets() -> PipelineAssets:
    """The assets the working tree's pipelines and deployments need, with their versions."""
    environments = tuple(environment_asset(path) for path in ENVIRONMENT_FILES)
    by_name = {e.name: e for e in environments}
    components: dict[str, ComponentAsset] = {}
    for pipeline in PIPELINES:
        for spec_file in pipeline_components(pipeline).values():
            component = _component(spec_file, by_name)
            components.setdefault(component.name, component)
    return PipelineAssets(tuple(components.values()), environments)


def pipeline_components(pipeline: Path) -> dict[str, Path]:
    """step name -> the component YAML the pipeline file points it at."""
    raw = yaml.safe_load(Path(pipeline).read_text())
    return {
        step: (Path(pipeline).parent / job["component"]).resolve()
        for step, job in raw["jobs"].items()
    }


def component_name(spec_file: Path) -> str:
    return str(yaml.safe_load(Path(spec_file).read_text())["name"])


def registered_spec(component: ComponentAsset, environment_reference: str) -> dict[str, Any]:
    """The component YAML as a store keeps it: its content version, and its environment by
    exact reference in that store (the working tree's `@latest` placeholder resolved)."""
    spec = yaml.safe_load(component.spec_file.read_text())
    spec["version"] = component.version
    spec["environment"] = environment_reference
    return spec


def environment_asset(spec_file: Path) -> EnvironmentAsset:
    """An environment YAML and the version its YAML and conda file make."""
    spec = yaml.safe_load(spec_file.read_text())
    conda = (spec_file.parent / spec["conda_file"]).resolve()
    digest = hashlib.sha256()
    for path in (spec_file, conda):
        digest.update(path.read_bytes())
    return EnvironmentAsset(
        name=str(spec["name"]),
        version=digest.hexdigest()[:VERSION_LENGTH],
        spec_file=spec_file,
        conda_file=conda,
        image=str(spec["image"]),
    )


def _component(spec_file: Path, environments: Mapping[str, EnvironmentAsset]) -> ComponentAsset:
    spec = yaml.safe_load(spec_file.read_text())
    environment = _environment_name(spec_file, spec.get("environment"), environments)
    partial = ComponentAsset(
        name=str(spec["name"]),
        version="",
        spec_file=spec_file,
        code_dir=(spec_file.parent / spec.get("code", ".")).resolve(),
        includes=tuple(
            (spec_file.parent / include).resolve()
            for include in spec.get("additional_includes", [])
        ),
        environment=environment,
    )
    digest = hashlib.sha256(spec_file.read_bytes())
    digest.update(environments[environment].version.encode())
    for source, relative in partial.files():
        digest.update(b"\0" + relative.as_posix().encode() + b"\0" + source.read_bytes())
    return ComponentAsset(**{**partial.__dict__, "version": digest.hexdigest()[:VERSION_LENGTH]})


def _environment_name(
    spec_file: Path, environment: Any, environments: Mapping[str, EnvironmentAsset]
) -> str:
    for name in environments:
        if environment == ENVIRONMENT_PLACEHOLDER.format(name=name):
            return name
    expected = " or ".join(ENVIRONMENT_PLACEHOLDER.format(name=n) for n in environments)
    raise ValueError(
        f"{spec_file.name} has environment {environment!r}; components name their environment "
        f"as {expected}, so that registration can pin the exact version"
    )


def _tree(root: Path, prefix: Path) -> Iterator[tuple[Path, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield path, prefix / path.relative_to(root)
