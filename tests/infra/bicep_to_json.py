"""Print every Bicep and Bicep-parameter file under a directory as JSON, parsed by pycep.

Runs under `.venv-checkov/bin/python`, not the project venv: pycep-parser comes with
checkov, whose dependencies clash with the project's pins. tests/infra/test_bicep.py calls
it once per session and reads its output.

pycep's grammar predates `.bicepparam` files, so a parameter file is read as what it is,
one `using '<template>'` line and `param name = value` lines, and each value is parsed
with the Bicep grammar (as a `var`).

Usage: python bicep_to_json.py <directory>
Output: {"files": {relative path: parsed}, "errors": {relative path: message}}
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pycep import BicepParser

USING = re.compile(r"^\s*using\s+'(?P<template>[^']+)'\s*$", re.MULTILINE)
PARAM = re.compile(r"^(?P<indent>\s*)param(?P<rest>\s+\w+\s*=)", re.MULTILINE)


def parse_bicepparam(parser: BicepParser, text: str) -> dict[str, Any]:
    usings = USING.findall(text)
    if len(usings) != 1:
        raise ValueError(f"expected exactly one `using '<template>'` line, found {len(usings)}")
    as_bicep = PARAM.sub(r"\g<indent>var\g<rest>", USING.sub("", text))
    parsed = parser.parse(text=as_bicep)
    unexpected = sorted(set(parsed) - {"globals", "variables"})
    if unexpected:
        raise ValueError(f"only `param name = value` lines are expected, also found {unexpected}")
    values = {name: spec["value"] for name, spec in parsed.get("variables", {}).items()}
    return {"using": usings[0], "parameters": values}


def main(directory: Path) -> None:
    parser = BicepParser()
    files: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for path in sorted(directory.rglob("*.bicep*")):
        relative = path.relative_to(directory).as_posix()
        try:
            if path.suffix == ".bicepparam":
                files[relative] = parse_bicepparam(parser, path.read_text())
            elif path.suffix == ".bicep":
                files[relative] = parser.parse(file_path=path)
        except Exception as error:  # report every file, not just the first failure
            errors[relative] = f"{type(error).__name__}: {error}"
    json.dump({"files": files, "errors": errors}, sys.stdout, default=str)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
