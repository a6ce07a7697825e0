"""The layering rules of docs/architecture.md, read from the imports, and one place per tag name
and per alias name.

Each rule is checked on the source with `ast` (nothing is imported), so a violation fails here
naming the file, the line and the import, instead of surfacing later as a backend that cannot be
swapped or a tag or alias name that changed in one copy only. Imports under `if TYPE_CHECKING:`
count: a type hint is a dependency too.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Collection, Iterator, Mapping
from functools import cache
from pathlib import Path

import pytest

from records import aliases, lineage_tags

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = tuple(
    tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["isort"][
        "known-first-party"
    ]
)
"""Our top-level packages, as ruff's isort knows them (pyproject.toml)."""


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in the source, wherever it is written."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from backends import local` imports backends.local
                yield node.lineno, f"{node.module}.{alias.name}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in python_files(folder)
        for line, module in imports(path.read_text())
        if any(within(module, package) for package in forbidden)
    ]


def test_the_packages_the_rules_name_exist() -> None:
    for folder in ("flows", "tasks", "records", "backends/local", "backends/azure"):
        assert python_files(folder), f"{folder}/ has no Python files: the rules below check nothing"
    assert {"records", "settings", "backends", "tasks", "flows"} <= set(FIRST_PARTY)


def test_the_import_reader_sees_every_form() -> None:
    """Module-level, function-local and type-checking imports, and a submodule imported by
    name from its package."""
    source = (
        "import backends.local\n"
        "from backends import azure\n"
        "if TYPE_CHECKING:\n"
        "    from backends.base import Workspace\n"
        "def f():\n"
        "    from backends.topology import load_topology\n"
    )
    seen = {module for _, module in imports(source) if within(module, "backends")}
    assert {"backends.local", "backends.azure", "backends.base", "backends.topology"} <= seen


def test_flows_never_import_a_backend() -> None:
    """Flows are runbooks over tasks; the records they pass around come from `records`."""
    assert offending("flows", ("backends",)) == []


def test_tasks_reach_backends_only_through_the_facade() -> None:
    """Tasks call `backends.workspace(env)` & co. and never name an implementation."""
    assert offending("tasks", ("backends.local", "backends.azure")) == []


@pytest.mark.parametrize(
    ("implementation", "other"),
    [("backends/local", "backends.azure"), ("backends/azure", "backends.local")],
)
def test_a_backend_never_imports_the_other(implementation: str, other: str) -> None:
    """What both need (parameter files, traffic rules, ...) lives in backends/*.py."""
    assert offending(implementation, (other,)) == []


def test_records_import_nothing_of_ours() -> None:
    """Neutral ground: any layer may import a record without importing another layer."""
    assert offending("records", FIRST_PARTY) == []


# --- one place for each tag name -----------------------------------------------------------

TAGS = {
    value: name
    for name, value in vars(lineage_tags).items()
    if name.isupper() and isinstance(value, str) and not name.endswith("_PREFIX")
}
"""Every tag name records/lineage_tags.py defines -> its constant."""

ALSO_ORDINARY_WORDS = {
    lineage_tags.GATE: "the training settings' `gate:` section and the evaluation's gate.json",
    lineage_tags.RUN_ID: "MLflow's REST field and query parameter",
    lineage_tags.SOURCE_RUN_ID: "MLflow's REST field of a logged model",
}
"""Tag names that are also other things' names: a literal of one of these is a copy of the tag
only where it is used as a tag (a key of a dict display, `x.tags[...]`, `x.tags.get(...)`,
`... in x.tags`)."""

SCANNED = tuple(package for package in FIRST_PARTY if package != "records")
"""Our Python outside records/ (which defines the names) and components/ (which run in their
own image and cannot import them)."""


def scanned_files() -> list[Path]:
    return [path for package in SCANNED for path in python_files(package)]


def is_tags(node: ast.AST) -> bool:
    """`tags` or `<anything>.tags`."""
    return (isinstance(node, ast.Name) and node.id == "tags") or (
        isinstance(node, ast.Attribute) and node.attr == "tags"
    )


def tag_uses(tree: ast.AST) -> set[int]:
    """ids of string constants used as a tag name: dict display keys, subscripts of and
    .get/.pop/.setdefault on `tags`, membership tests against `tags`."""
    used: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            used.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript) and is_tags(node.value):
            used.add(id(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and is_tags(node.func.value)
            and node.args
        ):
            used.add(id(node.args[0]))
        elif isinstance(node, ast.Compare) and any(is_tags(c) for c in node.comparators):
            used.add(id(node.left))  # `"x" in tags`, `"x" not in model.tags`
    return used


def literal_copies(
    tree: ast.AST,
    where: str,
    names: Mapping[str, str],
    ambiguous: Collection[str],
    used_as_names: set[int],
    module: str,
) -> list[str]:
    """Each string constant in `tree` that is one of `names` written out, in reading order; a
    name in `ambiguous` (also an ordinary word or key) only where `used_as_names` says so."""
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in names
        and (node.value not in ambiguous or id(node) in used_as_names)
    ]
    return [
        f"{where}:{node.lineno} writes {node.value!r}: use {module}.{names[node.value]}"
        for node in sorted(found, key=lambda n: (n.lineno, n.col_offset))
    ]


def copies(source: str, where: str) -> list[str]:
    """Each string constant in `source` that is a tag name written out, in reading order."""
    tree = ast.parse(source, where)
    return literal_copies(
        tree, where, TAGS, ALSO_ORDINARY_WORDS, tag_uses(tree), "records.lineage_tags"
    )


def test_lineage_tag_names_are_written_only_in_the_records_module() -> None:
    found = [
        copy
        for path in scanned_files()
        for copy in copies(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert found == [], "\n".join(found)


def test_the_tag_check_sees_a_copy_where_tags_are_written_and_read() -> None:
    sample = (
        "tags = {'pipeline_run_id': run, 'gate': 'passed'}\n"
        "model.tags.get('approved_by')\n"
        "assert 'run_id' in model.tags\n"
        "identity_tag = 'promoted_from'\n"
        "settings['gate']['min_auc']\n"  # the settings' section, not the tag
        "query.get('run_id')\n"  # MLflow's parameter, not the tag
    )
    found = [copy.split(" writes ")[1].split(":")[0] for copy in copies(sample, "sample.py")]
    assert found == ["'pipeline_run_id'", "'gate'", "'approved_by'", "'run_id'", "'promoted_from'"]


# --- one place for each alias name ---------------------------------------------------------

ALIASES = {
    value: name
    for name, value in vars(aliases).items()
    if name.isupper() and isinstance(value, str)
}
"""Every alias name records/aliases.py defines -> its constant."""

ALIASES_ALSO_KEYS = {
    aliases.CHAMPION: "the champion's figures in metrics.json and fairness.json (written by the "
    "evaluate component, read by reports/ and tasks/training/), the audit trail's action",
    aliases.CANDIDATE: "the candidate's figures in metrics.json and fairness.json",
}
"""Alias names that are also keys of the evaluation's JSON: a literal of one of these is a copy
of the alias only where it is given as an alias (an argument landing on a parameter named
`alias`, that parameter's default, or a comparison with `x.aliases`); the other names are
copies wherever they are written."""


@cache
def alias_parameters() -> Mapping[str, frozenset[int]]:
    """Function name -> the positions of its `alias` parameter in a call (after `self`/`cls`),
    over every definition in our scanned code: `get_model`, `set_model_alias`,
    `train_in_environment`, `register_model`, ..."""
    found: dict[str, set[int]] = {}
    for path in scanned_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                if "alias" in names:
                    found.setdefault(node.name, set()).add(names.index("alias"))
    return {name: frozenset(positions) for name, positions in found.items()}


def called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def alias_uses(tree: ast.AST, parameters: Mapping[str, frozenset[int]]) -> set[int]:
    """ids of the nodes given as an alias: call arguments that land on a parameter named
    `alias` (by keyword, or by position in a function of that name), defaults of such a
    parameter, and everything compared with `x.aliases`."""
    used: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            positions = parameters.get(called_name(node) or "", frozenset())
            used.update(id(arg) for i, arg in enumerate(node.args) if i in positions)
            used.update(id(k.value) for k in node.keywords if k.arg == "alias")
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            with_defaults = positional[len(positional) - len(node.defaults) :]
            pairs = [
                *zip(with_defaults, node.defaults, strict=True),
                *zip(node.kwonlyargs, node.kw_defaults, strict=True),
            ]
            used.update(id(default) for arg, default in pairs if arg.arg == "alias")
        elif isinstance(node, ast.Compare) and any(
            isinstance(part, ast.Attribute) and part.attr == "aliases" for part in ast.walk(node)
        ):
            used.update(id(part) for part in ast.walk(node))
    return used


def alias_copies(source: str, where: str, parameters: Mapping[str, frozenset[int]]) -> list[str]:
    """Each string constant in `source` that is an alias name written out, in reading order."""
    tree = ast.parse(source, where)
    uses = alias_uses(tree, parameters)
    return literal_copies(tree, where, ALIASES, ALIASES_ALSO_KEYS, uses, "records.aliases")


def test_the_alias_check_knows_the_functions_that_take_an_alias() -> None:
    parameters = alias_parameters()
    assert parameters["get_model"] == {1}
    assert parameters["set_model_alias"] == {1}
    assert parameters["train_in_environment"] == {2}


def test_alias_names_are_written_only_in_the_records_module() -> None:
    parameters = alias_parameters()
    found = [
        copy
        for path in scanned_files()
        for copy in alias_copies(path.read_text(), str(path.relative_to(REPO)), parameters)
    ]
    assert found == [], "\n".join(found)


def test_the_alias_check_sees_a_copy_where_an_alias_is_given() -> None:
    sample = (
        "registry.get_model(name, 'champion')\n"
        "registry.set_model_alias(name, 'previous-champion', version)\n"
        "train_in_environment('test', path, 'candidate')\n"
        "register_model(environment, name, run, alias='champion')\n"
        "def train(alias: str = 'candidate') -> None: ...\n"
        "assert set(model.aliases) == {'champion'}\n"
        "promoted = 'challenger'\n"
        "metrics['champion']['auc']\n"  # the evaluation's figures, not the alias
        "report = {'candidate': ours, 'champion': theirs}\n"
        "audit.record('champion', actor, subject, reason)\n"  # the audit trail's action
    )
    parameters = {"get_model": frozenset({1}), "set_model_alias": frozenset({1})}
    parameters |= {"train_in_environment": frozenset({2})}
    found = [
        copy.split(" writes ")[1].split(":")[0]
        for copy in alias_copies(sample, "sample.py", parameters)
    ]
    assert found == [
        "'champion'",
        "'previous-champion'",
        "'candidate'",
        "'champion'",
        "'candidate'",
        "'champion'",
        "'challenger'",
    ]
