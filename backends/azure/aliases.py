"""Model aliases (`champion`, `challenger`, ...) on Azure ML, which has none: a tag convention.

AML workspace and registry models have tags and a free-text `stage`, but nothing that points
from a name to exactly one version. We emulate MLflow aliases with a tag per alias on the
version that holds it, `alias.<name>` = the UTC time it was set:

- setting an alias tags the new holder first, then removes the tag from the previous holders,
  so a crash in between leaves two claims, never none;
- reading resolves to the claim with the newest timestamp, so such a crash is harmless and the
  next `set` cleans it up;
- `stage` is left alone (people use it in the studio UI) and so are all other tags.

Why tags and not labels or stages: tags are mutable on existing versions in both workspaces
and registries through the public `models.create_or_update`, show up in the studio, and are
returned by `models.list`, so resolving an alias is one list call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

PREFIX = "alias."


def tag_for(alias: str) -> str:
    return PREFIX + alias


def claim() -> str:
    """A sortable timestamp (microseconds) for a new claim."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def holders(versions: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, str]:
    """alias -> the version holding it (the newest claim), from (version, tags) pairs."""
    best: dict[str, tuple[str, str]] = {}
    for version, tags in versions:
        for key, stamp in tags.items():
            if key.startswith(PREFIX):
                alias = key[len(PREFIX) :]
                if alias not in best or stamp > best[alias][0]:
                    best[alias] = (stamp, version)
    return {alias: version for alias, (_, version) in best.items()}


def without_alias_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The lineage tags a caller sees: alias bookkeeping is surfaced as `aliases` instead."""
    return {k: v for k, v in tags.items() if not k.startswith(PREFIX)}
