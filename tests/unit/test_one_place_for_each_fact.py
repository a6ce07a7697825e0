"""Each quality-gate threshold is written once: config/training.yaml, typed by the settings package.
(And, at the end, two facts with a copy that must stay: the training pipeline's output keys,
which train.yml declares and records.workspace names, and the label rule, which each code
snapshot under components/ holds once.)

The training pipeline's evaluate step takes the thresholds as required inputs and the flow
passes the settings' values in, so no component, pipeline, script default, task or flow may
carry a copy. A copy is what made a change to one file silently lose to another: these tests
fail when one comes back, naming the file and line.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from records.workspace import (
    EVALUATION_OUTPUT,
    MODEL_OUTPUT,
    TEST_DATA_OUTPUT,
    TRAIN_DATA_OUTPUT,
)
from settings import FairnessSettings, GateSettings, PipelineSettings, load_training_settings

REPO = Path(__file__).resolve().parents[2]
SCANNED = (
    "flows",
    "tasks",
    "backends",
    "components",
    "mlops_cli",
    "settings",
    "records",
    "audit",
    "reports",
)
SETTINGS_MODULE = REPO / "settings" / "__init__.py"
GATE = frozenset(GateSettings.model_fields)
VALUES = frozenset(load_training_settings().gate.model_dump().values())
PIPELINE_INPUTS = frozenset(PipelineSettings.model_fields) | frozenset(
    FairnessSettings.model_fields
)
"""The other settings train.yml's steps take as required inputs (numbers too common to scan
Python for: only YAML copies and script defaults are looked for)."""


def files(*suffixes: str) -> list[Path]:
    found = (
        path
        for folder in SCANNED
        for path in sorted((REPO / folder).rglob("*"))
        if path.suffix in suffixes and "__pycache__" not in path.parts
    )
    return [path for path in found if path != SETTINGS_MODULE]


def is_number(node: ast.AST | None) -> bool:
    """A numeric literal, signed or not (`-0.005` is a unary minus on a constant)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


def number(node: ast.AST) -> float:
    return float(ast.literal_eval(node))  # type: ignore[arg-type]


def copies_in_python(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) for every literal value given to a threshold's name, and every comparison
    with a threshold's value."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in GATE and is_number(node.value):
            yield node.value.lineno, f"{node.arg}={ast.unparse(node.value)}"
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in GATE and is_number(value):
                    yield key.lineno, f"{key.value!r}: {ast.unparse(value)}"
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            with_defaults = positional[len(positional) - len(node.defaults) :]
            pairs = [
                *zip(with_defaults, node.defaults, strict=True),
                *zip(node.kwonlyargs, node.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                if arg.arg in GATE and is_number(default):
                    yield arg.lineno, f"parameter {arg.arg} = {ast.unparse(default)}"  # type: ignore[arg-type]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and is_number(node.value):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = getattr(target, "id", getattr(target, "attr", None))
                if name in GATE:
                    yield node.lineno, f"{name} = {ast.unparse(node.value)}"  # type: ignore[arg-type]
        elif isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else None
            flag = text.lstrip("-") if isinstance(text, str) else None
            for keyword in node.keywords:
                if flag in GATE and keyword.arg == "default" and is_number(keyword.value):
                    yield node.lineno, f"{first.value} default={ast.unparse(keyword.value)}"  # type: ignore[union-attr]
        elif isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                if is_number(operand) and number(operand) in VALUES:
                    yield node.lineno, f"comparison with {ast.unparse(operand)}"


def copies_in_yaml(document: Any, where: str = "", names: frozenset[str] = GATE) -> Iterator[str]:
    """Every name of `names` holding a number, or an input spec of one with a default/value."""
    if isinstance(document, dict):
        for key, value in document.items():
            here = f"{where}.{key}" if where else str(key)
            if key in names and isinstance(value, int | float) and not isinstance(value, bool):
                yield f"{here}: {value}"
            elif key in names and isinstance(value, dict):
                yield from (
                    f"{here}.{field}: {value[field]}"
                    for field in ("default", "value")
                    if isinstance(value.get(field), int | float)
                )
            else:
                yield from copies_in_yaml(value, here, names)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from copies_in_yaml(item, f"{where}[{index}]", names)


def test_the_gate_thresholds_are_the_settings_fields() -> None:
    """The scan below looks for these names: if the settings rename one, it looks for the new."""
    assert {"min_auc", "min_f1", "max_brier", "champion_min_delta"} == GATE


def test_no_python_module_outside_the_settings_writes_a_gate_threshold() -> None:
    python = files(".py")
    assert len(python) > 50, "the scan found too few modules to mean anything"
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in python
        for line, what in copies_in_python(ast.parse(path.read_text(), str(path)))
    ]
    assert found == [], "gate thresholds belong in config/training.yaml only:\n" + "\n".join(found)


YAML_FILES = files(".yml", ".yaml")


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_no_component_or_pipeline_yaml_writes_a_gate_threshold(path: Path) -> None:
    found = list(copies_in_yaml(yaml.safe_load(path.read_text())))
    assert found == [], f"{path.relative_to(REPO)} copies config/training.yaml's gate: {found}"


COMPONENT_YAMLS = [p for p in YAML_FILES if p.relative_to(REPO).parts[0] == "components"]


@pytest.mark.parametrize("path", COMPONENT_YAMLS, ids=lambda path: str(path.relative_to(REPO)))
def test_no_component_or_pipeline_yaml_writes_a_pipeline_or_fairness_setting(path: Path) -> None:
    """test_size, seed, learning_rate, max_iter and the fairness limits: required inputs, the
    values from config/training.yaml through the flow."""
    found = list(copies_in_yaml(yaml.safe_load(path.read_text()), names=PIPELINE_INPUTS))
    assert found == [], f"{path.relative_to(REPO)} copies config/training.yaml: {found}"


def test_no_component_script_defaults_a_pipeline_or_fairness_setting() -> None:
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
        for path in (REPO / "components").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).lstrip("-") in PIPELINE_INPUTS
        and any(k.arg == "default" for k in node.keywords)
    ]
    assert found == [], "\n".join(found)


def test_the_scan_finds_each_kind_of_copy() -> None:
    """The checks above pass on clean files only because they can see a copy."""
    python = ast.parse(
        "def f(min_auc: float = 0.7) -> None: ...\n"
        "max_brier = 0.2\n"
        "settings = {'min_f1': 0.3}\n"
        "g(champion_min_delta=-0.005)\n"
        "parser.add_argument('--min_auc', type=float, default=0.7)\n"
        "passed = auc >= 0.7\n"
    )
    assert sorted(line for line, _ in copies_in_python(python)) == [1, 2, 3, 4, 5, 6]
    pipeline = {"inputs": {"min_auc": 0.7, "min_f1": {"type": "number", "default": 0.3}}}
    assert list(copies_in_yaml(pipeline)) == ["inputs.min_auc: 0.7", "inputs.min_f1.default: 0.3"]


# --- the training pipeline's output keys: records.workspace names what train.yml declares ----

TRAIN_PIPELINE = REPO / "components" / "pipelines" / "train.yml"


@pytest.mark.parametrize("key", [TRAIN_DATA_OUTPUT, TEST_DATA_OUTPUT])
def test_each_pipeline_output_key_names_an_output_of_a_job_in_train_yml(key: str) -> None:
    """Renaming the job or its output in the YAML fails here, not in a release's endpoint
    tests (PipelineRun.test_data / .train_data read these keys)."""
    job_name, output = key.split(".")
    jobs = yaml.safe_load(TRAIN_PIPELINE.read_text())["jobs"]
    assert job_name in jobs, f"train.yml has no job {job_name!r} (jobs: {sorted(jobs)})"
    component = yaml.safe_load((TRAIN_PIPELINE.parent / jobs[job_name]["component"]).read_text())
    assert output in component["outputs"], (
        f"{jobs[job_name]['component']} (train.yml's job {job_name!r}) has no output {output!r}"
    )


@pytest.mark.parametrize("key", [MODEL_OUTPUT, EVALUATION_OUTPUT])
def test_each_pipeline_level_output_key_is_an_output_of_train_yml(key: str) -> None:
    """PipelineRun.model_folder / .evaluation_folder read these: train.yml must declare them."""
    assert key in yaml.safe_load(TRAIN_PIPELINE.read_text())["outputs"]


# --- the label rule: one copy per code snapshot, and the two agree ---------------------------

TRAINING_SNAPSHOT = REPO / "components" / "src"
SERVING_SNAPSHOT = REPO / "components" / "serving" / "src"


def test_the_training_and_serving_snapshots_label_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """components/src/label_rule.py (evaluation: the threshold chosen, the metrics, the fairness
    gate) and components/serving/src/model_scoring.py (what deployments answer) each hold the
    rule `probability >= threshold` once; Azure ML uploads the two folders as separate code
    snapshots, so they cannot share it. Here they must label every probability alike at every
    threshold, at the boundary too (a probability equal to the threshold is a 1)."""
    monkeypatch.syspath_prepend(str(TRAINING_SNAPSHOT))
    monkeypatch.syspath_prepend(str(SERVING_SNAPSHOT))
    training = importlib.import_module("label_rule").predicted_labels
    serving = importlib.import_module("model_scoring").predicted_labels

    grid = np.linspace(0.0, 1.0, 101)
    probabilities = np.concatenate(
        [grid, np.nextafter(grid, -1.0), np.nextafter(grid, 2.0), [0.0, 1.0]]
    )
    for threshold in (*grid.tolist(), 0.27, 1e-12, 1.0 - 1e-12):
        expected = [1 if p >= threshold else 0 for p in probabilities.tolist()]
        assert training(probabilities, threshold).tolist() == expected, threshold
        assert serving(probabilities, threshold).tolist() == expected, threshold
    assert training(np.array([0.3]), 0.3).tolist() == serving(np.array([0.3]), 0.3).tolist() == [1]


def test_the_serving_snapshot_reads_the_threshold_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """score.py and batch_score.py take MODEL_THRESHOLD through model_scoring's one reader."""
    monkeypatch.syspath_prepend(str(SERVING_SNAPSHOT))
    model_scoring = importlib.import_module("model_scoring")
    assert model_scoring.decision_threshold({"MODEL_THRESHOLD": "0.27"}) == 0.27
    assert model_scoring.decision_threshold({}) == 0.5
    with pytest.raises(ValueError, match="not a probability"):
        model_scoring.decision_threshold({"MODEL_THRESHOLD": "1.5"})
    for script in ("score.py", "batch_score.py"):
        source = (SERVING_SNAPSHOT / script).read_text()
        assert "decision_threshold(" in source and "predicted_labels(" in source, script
        assert '"MODEL_THRESHOLD"' not in source, f"{script} reads MODEL_THRESHOLD itself"
        assert ">= served.threshold" not in source and ">= loaded.threshold" not in source


def test_what_a_deployment_is_given_is_what_the_script_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """backends/serving_package.py sets the variable and its default; the serving snapshot
    cannot import it, so the two are held equal here: a model's threshold tag reaches the
    script's labels, and a model without one is labelled at the same default on both sides."""
    from backends import serving_package
    from records import lineage_tags
    from records.workspace import ModelVersion

    monkeypatch.syspath_prepend(str(SERVING_SNAPSHOT))
    model_scoring = importlib.import_module("model_scoring")
    tagged = ModelVersion("m", "1", "src", None, {lineage_tags.TEST_THRESHOLD: "0.27"})
    untagged = ModelVersion("m", "1", "src", None, {})
    assert model_scoring.decision_threshold(serving_package.model_settings(tagged)) == 0.27
    assert model_scoring.decision_threshold(serving_package.model_settings(untagged)) == (
        serving_package.DEFAULT_THRESHOLD
    )
    assert model_scoring.decision_threshold({}) == serving_package.DEFAULT_THRESHOLD
