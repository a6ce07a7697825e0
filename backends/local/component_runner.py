"""Run an Azure ML pipeline YAML on this machine: each command component as a subprocess.

The pipeline and component files are loaded with azure-ai-ml's own `load_job`, so a file that
runs here is a file AML accepts. Inputs and outputs are mapped to directories, steps run in
dependency order, each step's stdout/stderr goes to `<step>/user_logs/std_log.txt` (AML's name),
and each step gets its own MLflow run nested under the pipeline's run through MLFLOW_RUN_ID,
which is how AML hands a run to a job too.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from backends.pipeline_assets import component_name
from records.workspace import PipelineFailed, PipelineRun, StepRun

PARENT_INPUT = re.compile(r"^\$\{\{parent\.inputs\.(\w+)\}\}$")
PARENT_OUTPUT = re.compile(r"^\$\{\{parent\.outputs\.(\w+)\}\}$")
STEP_OUTPUT = re.compile(r"^\$\{\{parent\.jobs\.(\w+)\.outputs\.(\w+)\}\}$")
OPTIONAL_BLOCK = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.(\w+)\}\}")


def load_component(component: Path) -> Any:
    """A stored component version's YAML, parsed by the AML SDK (offline)."""
    from azure.ai.ml import load_component as load

    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)
    return load(component)


def load_pipeline(pipeline: Path) -> Any:
    """Parse and validate the pipeline YAML with the AML SDK (offline)."""
    from azure.ai.ml import load_job

    # azure-ai-ml announces every experimental schema class it touches; not news to a user
    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)
    return load_job(pipeline)


def _literal(value: Any) -> Any:
    """The plain value behind an SDK input object (a path for data inputs)."""
    data = getattr(value, "_data", value)
    if data is None:
        return None
    if hasattr(data, "path"):
        return data.path
    if hasattr(data, "default"):
        return data.default
    return data


def render_command(command: str, values: Mapping[str, Any]) -> list[str]:
    """Fill `${{inputs.x}}`/`${{outputs.y}}`; drop `$[[...]]` blocks whose inputs are unset."""

    def keep_block(match: re.Match[str]) -> str:
        names = [m.group(2) for m in PLACEHOLDER.finditer(match.group(1))]
        return match.group(1) if all(values.get(n) is not None for n in names) else ""

    command = OPTIONAL_BLOCK.sub(keep_block, command)

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(2))
        if value is None:
            raise PipelineFailed(f"component input {match.group(2)!r} has no value and no default")
        return shlex.quote(str(value))

    argv = shlex.split(PLACEHOLDER.sub(fill, command))
    if argv and argv[0] in {"python", "python3"}:
        argv[0] = sys.executable
    return argv


class ComponentRunner:
    """Runs pipelines for one local workspace, tracking into its MLflow store."""

    def __init__(self, jobs_dir: Path, tracking_uri: str, experiment_id_for: Any) -> None:
        self.jobs_dir = jobs_dir
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id_for = experiment_id_for

    def run(
        self,
        pipeline_path: Path,
        inputs: Mapping[str, Any],
        run_name: str | None = None,
        components: Mapping[str, tuple[str, Path]] | None = None,
    ) -> PipelineRun:
        """Run the pipeline; `components` (component name -> (reference, stored YAML)) makes
        each step run the stored version instead of the working tree's file."""
        pipeline_path = pipeline_path.resolve()
        job = load_pipeline(pipeline_path)
        raw = yaml.safe_load(pipeline_path.read_text())
        unknown = set(inputs) - set(job.inputs) - self._bound_parent_inputs(job)
        if unknown:
            raise PipelineFailed(
                f"{pipeline_path.name} has no inputs named {sorted(unknown)}; "
                f"it takes {sorted(job.inputs)}"
            )
        parent_inputs = {name: _literal(value) for name, value in job.inputs.items()}
        parent_inputs.update(inputs)

        experiment_id = self._experiment_id_for(job.experiment_name or pipeline_path.stem)
        display = run_name or job.display_name or pipeline_path.stem
        parent = self.client.create_run(
            experiment_id, run_name=display, tags={"pipeline": pipeline_path.name}
        )
        run_id = parent.info.run_id
        for key, value in parent_inputs.items():
            if value is not None:
                self.client.log_param(run_id, key, str(value)[:500])
        run_dir = self.jobs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)

        order = TopologicalSorter(
            {name: self._dependencies(step) for name, step in job.jobs.items()}
        ).static_order()
        step_outputs: dict[tuple[str, str], str] = {}
        pipeline_outputs: dict[str, str] = {}
        steps: list[StepRun] = []
        ran: dict[str, str] = {}
        try:
            for name in order:
                step = job.jobs[name]
                component_file = (pipeline_path.parent / raw["jobs"][name]["component"]).resolve()
                component = step.component
                if components is not None:
                    # in a pipeline the SDK names a file component "azureml_anonymous"
                    ran[name], component_file = components[component_name(component_file)]
                    component = load_component(component_file)
                result = self._run_step(
                    name,
                    step,
                    component,
                    component_file,
                    parent_inputs,
                    step_outputs,
                    pipeline_outputs,
                    run_dir,
                    run_id,
                    experiment_id,
                )
                steps.append(result)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return PipelineRun(
            run_id=run_id,
            display_name=display,
            status="Completed",
            steps=tuple(steps),
            outputs={**{f"{s}.{o}": p for (s, o), p in step_outputs.items()}, **pipeline_outputs},
            tracking_url=f"{self.tracking_uri}#/experiments/{experiment_id}/runs/{run_id}",
            components=ran,
        )

    @staticmethod
    def _bound_parent_inputs(job: Any) -> set[str]:
        """Inputs that steps bind from the parent without the pipeline declaring them."""
        names = set()
        for step in job.jobs.values():
            for value in step.inputs.values():
                match = PARENT_INPUT.match(str(getattr(value, "_data", "")))
                if match:
                    names.add(match.group(1))
        return names

    @staticmethod
    def _dependencies(step: Any) -> set[str]:
        deps = set()
        for value in step.inputs.values():
            match = STEP_OUTPUT.match(str(getattr(value, "_data", "")))
            if match:
                deps.add(match.group(1))
        return deps

    def _run_step(
        self,
        name: str,
        step: Any,
        component: Any,
        component_file: Path,
        parent_inputs: Mapping[str, Any],
        step_outputs: dict[tuple[str, str], str],
        pipeline_outputs: dict[str, str],
        run_dir: Path,
        parent_run_id: str,
        experiment_id: str,
    ) -> StepRun:
        values: dict[str, Any] = {}
        for input_name, spec in component.inputs.items():
            bound = step.inputs.get(input_name)
            text = str(getattr(bound, "_data", "")) if bound is not None else ""
            if match := PARENT_INPUT.match(text):
                value = parent_inputs.get(match.group(1))
            elif match := STEP_OUTPUT.match(text):
                value = step_outputs[(match.group(1), match.group(2))]
            elif bound is not None and getattr(bound, "_data", None) is not None:
                value = _literal(bound)
            else:
                value = None
            if value is None:
                value = getattr(spec, "default", None)
            values[input_name] = value
        step_dir = run_dir / name
        for output_name in component.outputs:
            out = step_dir / "outputs" / output_name
            out.mkdir(parents=True, exist_ok=True)
            values[output_name] = str(out)
            step_outputs[(name, output_name)] = str(out)
            bound = step.outputs.get(output_name)
            if match := PARENT_OUTPUT.match(str(getattr(bound, "_data", ""))):
                pipeline_outputs[match.group(1)] = str(out)

        code_dir = (component_file.parent / (component.code or ".")).resolve()
        # AML copies each `additional_includes` folder into the snapshot next to the code;
        # here the folder's parent goes on PYTHONPATH so the same imports resolve
        includes = [
            str((component_file.parent / include).resolve().parent)
            for include in getattr(component, "additional_includes", None) or []
        ]
        argv = render_command(component.command, values)
        child = self.client.create_run(
            experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": parent_run_id,
                "component": f"{component.name}:{component.version}",
            },
        )
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": child.info.run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(code_dir), *includes, os.environ.get("PYTHONPATH", "")) if p
            ),
            "AZUREML_RUN_ID": f"{name}_{uuid.uuid4().hex[:8]}",
        }
        log_path = step_dir / "user_logs" / "std_log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with log_path.open("w") as log:
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            code = subprocess.call(argv, cwd=code_dir, env=env, stdout=log, stderr=log)
        seconds = time.perf_counter() - started
        self.client.log_artifact(child.info.run_id, str(log_path), "user_logs")
        if code != 0:
            self.client.set_terminated(child.info.run_id, "FAILED")
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise PipelineFailed(
                f"step {name!r} ({component.name}) exited with code {code} after "
                f"{seconds:.1f} s; full log: {log_path}\n{tail}"
            )
        self.client.set_terminated(child.info.run_id, "FINISHED")
        return StepRun(name, child.info.run_id, "Completed", str(log_path), seconds)
