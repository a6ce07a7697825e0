"""Run a pipeline YAML as an Azure ML pipeline job and bring its outputs home.

The very files the local runner executes (components/pipelines/*.yml) are loaded with
`load_job`, given their inputs and the environment's compute, submitted with
`jobs.create_or_update`, polled with a deadline, and every named output (the pipeline's and
each step's) is downloaded with `jobs.download`, so the flow reads `evaluation/gate.json`
from a local folder on either backend.

Given registered components (a workspace's `azureml:<name>:<version>` or the shared registry's
`azureml://registries/...` references), each step runs the one its YAML names instead of an
anonymous copy: the submitted job's `componentId`s are those references (the SDK turns
workspace ones into ARM ids, registry ones go as they are, as in the SDK's recording
test_pipeline_job_create_with_registries).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.ai.ml import Input, MLClient, load_job
from azure.ai.ml.entities import PipelineJob

from backends.azure.clients import quiet_sdk_logs
from backends.azure.errors import explained
from backends.azure.retries import Deadlines, poll_until
from backends.pipeline_assets import (
    ENVIRONMENT_PLACEHOLDER,
    component_name,
    pipeline_components,
)
from backends.topology import EnvironmentSpec
from records.workspace import PipelineFailed, PipelineRun, StepRun

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding"}
DATA_TYPES = {"uri_file", "uri_folder", "mlflow_model", "custom_model", "mltable"}
PARENT_INPUT = re.compile(r"^\$\{\{parent\.inputs\.(\w+)\}\}$")
PARENT_OUTPUT = re.compile(r"^\$\{\{parent\.outputs\.(\w+)\}\}$")


def load_pipeline(pipeline: Path, literals: Mapping[str, Any] | None = None) -> PipelineJob:
    """Parse and validate the YAML offline, as the local runner does; `literals` become
    pipeline-level inputs as if the YAML declared them (azure-ai-ml's `params_override`)."""
    quiet_sdk_logs()
    overrides = [{f"inputs.{name}": value for name, value in (literals or {}).items()}]
    job = load_job(pipeline, params_override=overrides if literals else None)
    if not isinstance(job, PipelineJob):
        raise PipelineFailed(f"{pipeline} is a {type(job).__name__}, not a pipeline job YAML")
    return job


class PipelineRunner:
    """Submits pipeline jobs to one workspace and downloads their outputs under `root`."""

    def __init__(
        self, client: MLClient, spec: EnvironmentSpec, root: Path, deadlines: Deadlines
    ) -> None:
        self.client = client
        self.spec = spec
        self.root = root
        self.deadlines = deadlines

    def run(
        self,
        pipeline: Path,
        inputs: Mapping[str, Any],
        run_name: str | None = None,
        components: Mapping[str, str] | None = None,
        environments: Mapping[str, str] | None = None,
    ) -> PipelineRun:
        """`components`: component name -> the registered reference each step runs (None:
        the YAML files, as anonymous components). `environments`: environment name -> the
        reference that a YAML component's `azureml:<name>@latest` placeholder is pinned to."""
        pipeline = Path(pipeline).resolve()
        job = load_pipeline(pipeline)
        literals = self._undeclared_literals(job, inputs)
        if literals:
            job = load_pipeline(pipeline, literals)
        self._bind_inputs(job, pipeline, inputs)
        # PipelineJob.settings is typed Optional, but its getter creates the settings when unset
        job.settings.default_compute = self.spec.compute  # type: ignore[union-attr]
        if run_name:
            job.display_name = run_name
        plan = _output_plan(job)  # before submission: the SDK swaps components for ARM ids
        ran: dict[str, str] = {}
        if components is not None:
            ran = _use_registered(job, pipeline, components)
        elif environments:
            _pin_environments(job, environments)
        with explained(f"submit pipeline {pipeline.name} to {self.spec.workspace}"):
            submitted = self.client.jobs.create_or_update(job)
        name = str(submitted.name)
        studio = submitted.studio_url or name
        status = poll_until(
            lambda: _text(self._get(name).status),
            TERMINAL,
            self.deadlines.job_seconds,
            self.deadlines.job_poll_seconds,
            f"pipeline job {name} ({pipeline.name})",
            studio,
        )
        if status != "Completed":
            raise PipelineFailed(
                f"pipeline job {name} ({pipeline.name}) ended {status}: "
                f"{self._error(name, studio)}; pipeline: {studio}"
            )
        steps = self._steps(name, studio)
        outputs = self._download_outputs(plan, name, steps)
        return PipelineRun(
            run_id=name,
            display_name=str(submitted.display_name or pipeline.stem),
            status=status,
            steps=tuple(steps),
            outputs=outputs,
            tracking_url=studio,
            components=ran,
        )

    # --- inputs ----------------------------------------------------------------------------

    def _bind_inputs(self, job: PipelineJob, pipeline: Path, inputs: Mapping[str, Any]) -> None:
        """Declared inputs are set on the pipeline; inputs that steps bind from the parent
        without the pipeline declaring them (the optional champion model) are set on those
        steps directly, or unbound when not given, so no step points at a missing input."""
        undeclared = self._undeclared_bindings(job)
        unknown = set(inputs) - set(job.inputs) - set(undeclared)
        if unknown:
            raise PipelineFailed(
                f"{pipeline.name} has no inputs named {sorted(unknown)}; it takes "
                f"{sorted(set(job.inputs) | set(undeclared))}"
            )
        for key, value in inputs.items():
            if key in job.inputs and value is not None:
                meta = getattr(job.inputs[key], "_meta", None)
                kind = getattr(meta, "type", None) or getattr(job.inputs[key]._data, "type", None)
                setattr(job.inputs, key, _input(kind, value))
        for key, bindings in undeclared.items():
            for step_inputs, input_name, kind in bindings:
                value = inputs.get(key)
                setattr(step_inputs, input_name, None if value is None else _input(kind, value))

    @classmethod
    def _undeclared_literals(cls, job: PipelineJob, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Given values (numbers, strings) that steps bind from the parent without the YAML
        declaring them: a pipeline job's inputs must carry a value in the YAML, so settings that
        live elsewhere (the quality gate's thresholds) are left out of it and declared here,
        on the submitted job, where a run's inputs are recorded."""
        return {
            name: inputs[name]
            for name, bindings in cls._undeclared_bindings(job).items()
            if inputs.get(name) is not None and all(kind not in DATA_TYPES for *_, kind in bindings)
        }

    @staticmethod
    def _undeclared_bindings(job: PipelineJob) -> dict[str, list[tuple[Any, str, str]]]:
        """parent input name -> [(step inputs, step input name, component input type)]."""
        found: dict[str, list[tuple[Any, str, str]]] = {}
        for step in job.jobs.values():
            for input_name, value in step.inputs.items():
                match = PARENT_INPUT.match(str(getattr(value, "_data", "")))
                if match and match.group(1) not in job.inputs:
                    spec = step.component.inputs.get(input_name)
                    kind = str(getattr(spec, "type", "string"))
                    found.setdefault(match.group(1), []).append((step.inputs, input_name, kind))
        return found

    # --- status ----------------------------------------------------------------------------

    def _get(self, name: str) -> Any:
        with explained(f"read the status of pipeline job {name}"):
            return self.client.jobs.get(name)

    def _error(self, name: str, studio: str) -> str:
        """Which steps failed and where their logs are (AML keeps the error text in the
        step's run history, shown in the studio, not on the job resource)."""
        failed = [s for s in self._steps(name, studio) if s.status not in ("Completed", "Skipped")]
        if not failed:
            return "no step reported a failure (canceled or timed out?)"
        return "; ".join(f"step {s.name!r} {s.status} (logs: {s.log_path})" for s in failed)

    def _steps(self, name: str, studio: str) -> list[StepRun]:
        with explained(f"list the steps of pipeline job {name}"):
            children = list(self.client.jobs.list(parent_job_name=name))
        return [
            StepRun(
                name=str(child.display_name),
                run_id=str(child.name),
                status=_text(child.status),
                log_path=str(child.studio_url or studio),
                seconds=_seconds(child.creation_context),
            )
            for child in children
        ]

    # --- outputs ---------------------------------------------------------------------------

    def _download_outputs(
        self, plan: OutputPlan, name: str, steps: list[StepRun]
    ) -> dict[str, str]:
        """Pipeline outputs as `name`, step outputs as `step.name` (same keys as the local
        runner); a step output bound to a pipeline output is downloaded once."""
        run_dir = self.root / name
        shutil.rmtree(run_dir, ignore_errors=True)
        outputs: dict[str, str] = {}
        for output in plan.pipeline:
            outputs[output] = self._download(name, output, run_dir / "pipeline")
        by_step = {s.name: s.run_id for s in steps}
        for step_name, output_name, parent in plan.steps:
            if parent is not None and parent in outputs:
                outputs[f"{step_name}.{output_name}"] = outputs[parent]
            elif step_name in by_step:
                outputs[f"{step_name}.{output_name}"] = self._download(
                    by_step[step_name], output_name, run_dir / step_name
                )
        return outputs

    def _download(self, job_name: str, output: str, where: Path) -> str:
        with explained(f"download output {output!r} of job {job_name}"):
            self.client.jobs.download(job_name, output_name=output, download_path=str(where))
        path = where / "named-outputs" / output
        if not path.exists():
            raise PipelineFailed(
                f"job {job_name} finished but its output {output!r} is missing; check that the "
                "component writes to the output folder it is given"
            )
        return str(path)


@dataclass(frozen=True)
class OutputPlan:
    """Which outputs a pipeline has: its own, and each step's with the pipeline output it is
    bound to (if any)."""

    pipeline: tuple[str, ...]
    steps: tuple[tuple[str, str, str | None], ...]


def _output_plan(job: PipelineJob) -> OutputPlan:
    steps = []
    for step_name, step in job.jobs.items():
        for output_name in step.component.outputs:
            bound = step.outputs.get(output_name)
            match = PARENT_OUTPUT.match(str(getattr(bound, "_data", "") or ""))
            steps.append((step_name, output_name, match.group(1) if match else None))
    return OutputPlan(tuple(job.outputs), tuple(steps))


def _use_registered(
    job: PipelineJob, pipeline: Path, components: Mapping[str, str]
) -> dict[str, str]:
    """Point every step at the registered component of the name its YAML has (after inputs
    are bound and outputs planned from the YAML, which the registered version was made from);
    step name -> reference."""
    ran: dict[str, str] = {}
    files = pipeline_components(pipeline)  # the SDK names inline components azureml_anonymous
    for step_name, step in job.jobs.items():
        name = component_name(files[step_name])
        if name not in components:
            raise PipelineFailed(
                f"{pipeline.name} step {step_name!r} runs component {name!r}, which the given "
                f"asset references do not name (they have {sorted(components)}); register the "
                "working tree's pipeline assets again"
            )
        # the node keeps its inputs and outputs; only what it runs becomes the reference
        # (Command.component has no setter; a node built from a reference holds the string)
        step._component = components[name]
        ran[step_name] = components[name]
    return ran


def _pin_environments(job: PipelineJob, environments: Mapping[str, str]) -> None:
    """Replace each YAML component's `azureml:<name>@latest` placeholder with the exact
    reference (the SDK keeps the placeholder without its `azureml:` prefix)."""
    for step in job.jobs.values():
        component = step.component
        named = str(getattr(component, "environment", "") or "").removeprefix("azureml:")
        for name, reference in environments.items():
            if named == ENVIRONMENT_PLACEHOLDER.format(name=name).removeprefix("azureml:"):
                component.environment = reference


def _text(value: Any) -> str:
    """Statuses arrive as enums from some SDK paths and as strings from others."""
    return str(getattr(value, "value", value))


def _input(kind: str | None, value: Any) -> Any:
    """A data input (uploaded by the SDK when local) or a literal."""
    return Input(type=kind, path=str(value)) if kind in DATA_TYPES else value


def _seconds(context: Any) -> float:
    """How long a step ran: run history's created -> last modified (0.0 when unknown)."""
    start = getattr(context, "created_at", None)
    end = getattr(context, "last_modified_at", None)
    if start is None or end is None:
        return 0.0
    try:
        return max(0.0, (end - start).total_seconds())
    except TypeError:
        return 0.0
