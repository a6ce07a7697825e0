"""How a reply of the fake is compared with what its source answered: the status code, the
long-running-operation and blob headers, the JSON structure both ways (what the source has
and the fake lacks, and what the fake sends that the source lacks), and the values of the
fields the SDK branches on. Used for the recordings (test_recordings.py) and the vendored REST
API spec examples (test_fake_sources.py), so both hold the fake to the same standard.

A difference that is justified is allowed per source in an `allowed` set, as
`"<entry>: <path>"` (`"<entry>: header <name>"` for a header; `*` for every entry); the
callers say why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tests.azure.fake_arm import Reply

# fields whose values must match, not only exist (the SDK branches on them)
VALUE_FIELDS = {
    "status",
    "provisioningState",
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
# the HTTP framing every answer has, whatever the recorder kept of it; other headers the fake
# sends must be ones a recorded answer of the same route shows (request ids included: the
# recordings show each service's own, x-ms-request-id, x-request-id, x-ms-version ...)
TRANSPORT_HEADERS = {"content-type", "content-length", "date", "server"}


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


def fields(body: Any, path: str = "$") -> Iterator[str]:
    """Every field path in a JSON body (lists by their first item)."""
    if isinstance(body, dict):
        for key, value in body.items():
            yield f"{path}.{key}"
            yield from fields(value, f"{path}.{key}")
    elif isinstance(body, list) and body:
        yield from fields(body[0], f"{path}[0]")


def _document(body: Any) -> tuple[str, str] | None:
    """(path prefix, ARM type) of the resource document a body is or lists first."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        return "$", body["type"]
    items = body.get("value") if isinstance(body, dict) else None
    first = items[0] if isinstance(items, list) and items else None
    if isinstance(first, dict) and isinstance(first.get("type"), str):
        return "$.value[0]", first["type"]
    return None


def known_fields(answers: Iterable[tuple[str, Any]]) -> dict[str, set[str]]:
    """What the sources show, from (route, body) pairs: the field paths of each route's
    answers, and of each resource type's documents wherever they appear (a GET, a PUT, a
    list). The fake answers every api-version the SDK ever sent with one shape, so a field one
    recording lacks may be one another recording of the same resource (a newer api-version)
    shows: that is not a field the fake made up."""
    known: dict[str, set[str]] = {}
    for route, body in answers:
        known.setdefault(route, set()).update(fields(body))
        document = _document(body)
        if document is not None:
            prefix, kind = document
            inner = body if prefix == "$" else body["value"][0]
            known.setdefault(kind, set()).update(fields(inner))
    return known


def _shown(field: str, actual: Any, route: str, known: Mapping[str, set[str]]) -> bool:
    if field in known.get(route, ()):
        return True
    document = _document(actual)
    if document is None or not field.startswith(document[0] + "."):
        return False
    return "$" + field[len(document[0]) :] in known.get(document[1], ())


def compare(
    index: int | str,
    method: str,
    status: int | tuple[int, ...],
    headers: Mapping[str, Any],
    body: Any,
    reply: Reply,
    allowed: set[str],
    values: bool = True,
    route: str = "",
    known: Mapping[str, set[str]] | None = None,
) -> list[str]:
    """What differs between the source's answer (status, headers, JSON body) and the fake's
    reply, less what `allowed` names. `status` may be several codes (a spec example lists each
    one the operation may answer). A field or header the fake sends that this answer lacks is
    not flagged when `known` (see known_fields; headers under `"<route> headers"`) shows
    another source of the same route or resource type has it."""
    known = known or {}
    problems: list[str] = []
    statuses = status if isinstance(status, tuple) else (status,)
    if reply.status not in statuses:
        return [f"status {reply.status} != recorded {status}"]
    source_headers = {k.lower() for k in headers}
    sent_headers = {k.lower() for k in reply.headers}
    for header in FOLLOWED_HEADERS:
        if header.lower() in source_headers and header.lower() not in sent_headers:
            problems.append(f"missing header {header}")
    shown = known.get(f"{route} headers", set())
    for header in sorted(sent_headers - source_headers - TRANSPORT_HEADERS - shown):
        problems.append(f"header {header}: not in the source")
    if isinstance(body, dict | list):
        data, _ = reply.encoded()
        actual = json.loads(data) if data else None
        problems += missing(body, actual, strict_tags=method == "PUT", values=values)
        problems += [
            p for p in extra(body, actual) if not _shown(p.split(":")[0], actual, route, known)
        ]
    return [p for p in problems if not {f"{index}: {_key(p)}", f"*: {_key(p)}"} & allowed]


def _key(problem: str) -> str:
    """The part of a problem `allowed` names: its path, or `header <name>`."""
    if problem.startswith("missing header "):
        return "header " + problem.removeprefix("missing header ")
    return problem.split(":")[0]
