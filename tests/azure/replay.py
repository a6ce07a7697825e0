"""How a reply of the fake is compared with what its source answered: the status code, the
long-running-operation and blob headers, the JSON structure both ways (what the source has
and the fake lacks, and what the fake sends that the source lacks), and the values of the
fields the SDK branches on. Used for the recordings (test_recordings.py) and the vendored REST
API spec examples (test_fake_sources.py), so both hold the fake to the same standard.

A difference that is justified is allowed per source in an `allowed` set, as
`"<entry>: <path>"` (`"<entry>: header <name>"` for a header); the callers say why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from tests.azure.fake_arm import Reply

# fields whose values must match, not only exist (the SDK branches on them)
VALUE_FIELDS = {
    "status",
    "type",
    "dataType",
    "modelType",
    "authMode",
    "jobType",
    "jobOutputType",
    "traffic",
    "mirrorTraffic",
    "isDefault",
    "datastoreType",
    "tokenType",
    "isAnonymous",
    "isArchived",
    "kind",
    "description",
    "flavors",
    "displayName",
    "experimentName",
}
DYNAMIC_MAPS = {"registryFqdns"}  # keyed by region names
# headers the source must show when the fake sends them: the operation and blob headers the
# SDK follows (the others are compared in the reverse direction only)
FOLLOWED_HEADERS = ("Azure-AsyncOperation", "Location", "x-ms-blob-type", "Content-Range")
# transport headers every answer has under some name: the HTTP framing (Content-Type,
# Content-Length, Date, Server), the blob service's protocol version and the request ids
# the recorded services send as x-ms-request-id / x-ms-client-request-id / x-request-time
TRANSPORT_HEADERS = {
    "content-type",
    "content-length",
    "date",
    "server",
    "x-ms-version",
    "x-ms-request-id",
    "x-ms-client-request-id",
    "x-ms-correlation-request-id",
    "x-request-id",
}


def missing(
    recorded: Any, actual: Any, path: str = "$", strict_tags: bool = True, values: bool = True
) -> Iterator[str]:
    """Paths where `actual` lacks what `recorded` has (structure, and values of VALUE_FIELDS).
    `values=False` (a spec example, whose values are placeholders such as "string"): the
    structure only, free-form maps skipped, a null present."""
    if not values and (
        recorded == "string"
        or isinstance(recorded, dict)
        and (_free_form(path.rsplit(".", 1)[-1], recorded) or path.endswith(".traffic"))
    ):
        return
    if isinstance(recorded, dict):
        if not isinstance(actual, dict):
            yield f"{path}: expected an object, got {type(actual).__name__}"
            return
        for key, value in recorded.items():
            if key not in actual:
                yield f"{path}.{key}"
                continue
            if not values:
                yield from missing(value, actual[key], f"{path}.{key}", strict_tags, values)
                continue
            if key in VALUE_FIELDS and value is not None and not isinstance(value, dict | list):
                if actual[key] != value:
                    yield f"{path}.{key}: {actual[key]!r} != recorded {value!r}"
                continue
            if key in ("traffic", "mirrorTraffic") and value != actual[key]:
                yield f"{path}.{key}: {actual[key]!r} != recorded {value!r}"
                continue
            if key == "tags" and strict_tags and value != actual[key]:
                yield f"{path}.{key}: {actual[key]!r} != recorded {value!r}"
                continue
            if key in DYNAMIC_MAPS and isinstance(value, dict) and isinstance(actual[key], dict):
                if value and actual[key]:  # region-keyed: compare one entry's shape
                    yield from missing(next(iter(value.values())), next(iter(actual[key].values())))
                continue
            if key == "tags":
                continue  # service-set tags (run history) are free-form
            yield from missing(value, actual[key], f"{path}.{key}", strict_tags)
    elif isinstance(recorded, list):
        if not isinstance(actual, list):
            yield f"{path}: expected a list, got {type(actual).__name__}"
        elif bool(recorded) != bool(actual):
            yield f"{path}: {len(actual)} items, recorded {len(recorded)}"
        elif recorded:
            yield from missing(recorded[0], actual[0], f"{path}[0]", strict_tags, values)
    elif recorded is not None and actual is None and values:
        yield f"{path}: missing value"
    elif isinstance(recorded, bool) != isinstance(actual, bool):
        yield f"{path}: {type(actual).__name__} != recorded {type(recorded).__name__}"


def extra(recorded: Any, actual: Any, path: str = "$") -> Iterator[str]:
    """Paths of fields the fake sends that the source lacks (`missing` the other way round;
    lists by their first item). Free-form maps (tags, properties, DYNAMIC_MAPS, a null or
    empty recorded object) are the caller's data, not the service's shape."""
    if not (isinstance(recorded, dict) and isinstance(actual, dict)):
        if isinstance(recorded, list) and isinstance(actual, list) and recorded and actual:
            yield from extra(recorded[0], actual[0], f"{path}[0]")
        return
    if not recorded:
        return
    for key, value in actual.items():
        if key not in recorded:
            yield f"{path}.{key}: not in the source"
        elif not _free_form(key, value):
            yield from extra(recorded[key], value, f"{path}.{key}")


def _free_form(key: str, value: Any) -> bool:
    """`tags` and the assets' inner `properties` are maps of the user's strings; a resource's
    `properties` (a dict with dicts or lists in it) is the service's shape."""
    if key in DYNAMIC_MAPS or key == "tags":
        return True
    return isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values())


def compare(
    index: int | str,
    method: str,
    status: int | tuple[int, ...],
    headers: Mapping[str, Any],
    body: Any,
    reply: Reply,
    allowed: set[str],
    values: bool = True,
) -> list[str]:
    """What differs between the source's answer (status, headers, JSON body) and the fake's
    reply, less what `allowed` names. `status` may be several codes (a spec example lists each
    one the operation may answer)."""
    problems: list[str] = []
    statuses = status if isinstance(status, tuple) else (status,)
    if reply.status not in statuses:
        return [f"status {reply.status} != recorded {status}"]
    source_headers = {k.lower() for k in headers}
    sent_headers = {k.lower() for k in reply.headers}
    for header in FOLLOWED_HEADERS:
        if header.lower() in source_headers and header.lower() not in sent_headers:
            problems.append(f"missing header {header}")
    if isinstance(body, dict | list):
        data, _ = reply.encoded()
        actual = json.loads(data) if data else None
        problems += missing(body, actual, strict_tags=method == "PUT", values=values)
    return [p for p in problems if f"{index}: {_key(p)}" not in allowed]


def _key(problem: str) -> str:
    """The part of a problem `allowed` names: its path, or `header <name>`."""
    if problem.startswith("missing header "):
        return "header " + problem.removeprefix("missing header ")
    return problem.split(":")[0]
