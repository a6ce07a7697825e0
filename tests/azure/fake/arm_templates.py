"""The fake's template engine: evaluates a compiled (ARM JSON) template the way Resource Manager
does, enough for the fake to deploy and what-if the templates `bicep build` makes of infra/.

Covered: parameters (defaults, allowed values), variables, conditions, nested deployments
(`Microsoft.Resources/deployments` with inner expression scope, a resource group and optionally
a subscription of their own), child and extension resources (`scope`), outputs, and the template
functions those templates use. `reference()` reads the fake's resources; while predicting
(what-if) a value only a deployment produces (a principal ID) stays an unevaluated expression,
and a resource whose name needs one is reported `Unsupported`, as ARM's what-if does.

Not covered: copy loops, user-defined functions, symbolic-name (languageVersion 2.0) templates,
Complete mode deletes, and most of the function library (an unknown function is an error that
names it, so a template that needs more fails loudly instead of deploying something wrong).
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESOURCE_GROUPS = "Microsoft.Resources/resourceGroups"
DEPLOYMENTS = "Microsoft.Resources/deployments"
TENANT = "72f988bf-0000-0000-0000-000000000000"


class TemplateError(Exception):
    """A deployment error with ARM's code (InvalidTemplate, ResourceGroupNotFound, ...)."""

    def __init__(self, code: str, message: str, target: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target


@dataclass(frozen=True)
class Unevaluated:
    """A value known only once the deployment runs (what-if shows the expression itself)."""

    expression: str

    def __str__(self) -> str:
        return f"[{self.expression}]"


@dataclass
class Scope:
    subscription: str
    resource_group: str | None  # None: a subscription-scope template
    location: str

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"


@dataclass
class Outcome:
    """What one deployment touched, in order, and what it returned."""

    touched: list[str] = field(default_factory=list)  # resource IDs
    unsupported: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, why)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- the expression language -------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][\w]*)|(?P<punct>[(),.\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip() == "":
                break
            raise TemplateError("InvalidTemplate", f"cannot parse expression [{text}]")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """expression := call | literal, followed by `.property` or `[index]` accessors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def parse(self) -> tuple:
        node = self._expression()
        if self.i != len(self.tokens):
            raise TemplateError("InvalidTemplate", f"unexpected text in [{self.text}]")
        return node

    def _next(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise TemplateError("InvalidTemplate", f"expression [{self.text}] ends too early")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _expression(self) -> tuple:
        kind, value = self._next()
        if kind == "string":
            node: tuple = ("literal", value[1:-1].replace("''", "'"))
        elif kind == "number":
            node = ("literal", int(value))
        elif kind == "name":
            args: list[tuple] = []
            if self._next()[1] != "(":
                raise TemplateError("InvalidTemplate", f"{value} must be called in [{self.text}]")
            while self._peek() != ")":
                args.append(self._expression())
                if self._peek() == ",":
                    self._next()
            self._next()
            node = ("call", value.lower(), args)
        else:
            raise TemplateError("InvalidTemplate", f"unexpected {value!r} in [{self.text}]")
        while self._peek() in (".", "["):
            if self._next()[1] == ".":
                node = ("property", node, ("literal", self._next()[1]))
            else:
                index = self._expression()
                self._next()  # ]
                node = ("property", node, index)
        return node


# --- evaluation ------------------------------------------------------------------------------


def unique_string(*parts: str) -> str:
    """13 lowercase base32 characters, stable for the same inputs (ARM's uniqueString shape)."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    number = int.from_bytes(digest[:9], "big")
    return "".join(alphabet[(number >> (5 * i)) & 31] for i in range(13))


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))


def _type_path(resource_type: str, name: str) -> str:
    """`A.B/t1/t2` named `n1/n2` -> `A.B/t1/n1/t2/n2`."""
    namespace, *types = resource_type.split("/")
    names = name.split("/")
    if len(types) != len(names):
        raise TemplateError(
            "InvalidTemplate",
            f"resource type {resource_type} needs {len(types)} name segments, got {name!r}",
        )
    return "/".join([namespace, *(f"{t}/{n}" for t, n in zip(types, names, strict=True))])


class Context:
    """One template's parameters, variables and scope, over the fake's resources."""

    def __init__(
        self,
        engine: TemplateEngine,
        template: dict[str, Any],
        parameters: dict[str, Any],
        scope: Scope,
    ) -> None:
        self.engine = engine
        self.template = template
        self.scope = scope
        self._variables: dict[str, Any] = {}
        self.parameters = self._bind(parameters)

    def _bind(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("parameters", {})
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TemplateError(
                "InvalidTemplate", f"the template does not declare parameters {unknown}"
            )
        bound: dict[str, Any] = {}
        self.parameters = bound
        for name, spec in declared.items():
            if name in given:
                value = given[name]["value"] if isinstance(given[name], dict) else given[name]
            elif "defaultValue" in spec:
                value = self.value(spec["defaultValue"])
            else:
                raise TemplateError(
                    "InvalidTemplate", f"the template parameter {name!r} has no value"
                )
            allowed = spec.get("allowedValues")
            if allowed is not None and value not in allowed:
                raise TemplateError(
                    "InvalidTemplate",
                    f"the value {value!r} of parameter {name!r} is not one of {allowed}",
                )
            bound[name] = value
        return bound

    # values: JSON with "[expression]" strings anywhere inside
    def value(self, raw: Any) -> Any:
        if isinstance(raw, str):
            if raw.startswith("[[") or not (raw.startswith("[") and raw.endswith("]")):
                return raw[1:] if raw.startswith("[[") else raw
            return self.evaluate(_Parser(raw[1:-1]).parse(), raw[1:-1])
        if isinstance(raw, dict):
            return {k: self.value(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        return raw

    def evaluate(self, node: tuple, text: str) -> Any:
        kind = node[0]
        if kind == "literal":
            return node[1]
        if kind == "property":
            target = self.evaluate(node[1], text)
            key = self.evaluate(node[2], text)
            if isinstance(target, Unevaluated):
                return Unevaluated(text)
            try:
                return target[key]
            except (KeyError, IndexError, TypeError):
                raise TemplateError(
                    "InvalidTemplate", f"[{text}]: the value has no property {key!r}"
                ) from None
        name, args = node[1], node[2]
        if name == "if":  # lazy, as ARM's if() is
            condition = self.evaluate(args[0], text)
            if isinstance(condition, Unevaluated):
                return Unevaluated(text)
            return self.evaluate(args[1] if condition else args[2], text)
        values = [self.evaluate(a, text) for a in args]
        if name not in ("reference",) and any(isinstance(v, Unevaluated) for v in values):
            return Unevaluated(text)
        function = FUNCTIONS.get(name)
        if function is None:
            raise TemplateError("InvalidTemplate", f"the fake has no template function {name}()")
        return function(self, text, *values)

    def resource_id(self, resource: dict[str, Any], name: str) -> str:
        resource_type = self.value(resource["type"])
        if "scope" in resource:
            target = self.value(resource["scope"])
            base = target if target.startswith("/") else f"{self.scope.group_id}/providers/{target}"
            return f"{base}/providers/{_type_path(resource_type, name)}"
        if resource_type == RESOURCE_GROUPS:
            return f"/subscriptions/{self.scope.subscription}/resourceGroups/{name}"
        path = _type_path(resource_type, name)
        if self.scope.resource_group is None:
            return f"/subscriptions/{self.scope.subscription}/providers/{path}"
        return f"{self.scope.group_id}/providers/{path}"


def _variables(ctx: Context, text: str, name: str) -> Any:
    if name not in ctx._variables:
        declared = ctx.template.get("variables", {})
        if name not in declared:
            raise TemplateError("InvalidTemplate", f"[{text}]: no variable {name!r}")
        ctx._variables[name] = ctx.value(declared[name])
    return ctx._variables[name]


def _parameters(ctx: Context, text: str, name: str) -> Any:
    if name not in ctx.parameters:
        raise TemplateError("InvalidTemplate", f"[{text}]: no parameter {name!r}")
    return ctx.parameters[name]


def _format(ctx: Context, text: str, pattern: str, *args: Any) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: str(args[int(m.group(1))]), pattern)


def _resource_id(ctx: Context, text: str, *args: str) -> str:
    """resourceId([subscriptionId], [resourceGroupName], type, name1, name2...)."""
    type_at = next(i for i, a in enumerate(args) if "/" in a and "." in a.split("/")[0])
    prefix, resource_type, names = args[:type_at], args[type_at], args[type_at + 1 :]
    subscription = prefix[0] if len(prefix) == 2 else ctx.scope.subscription
    group = prefix[-1] if prefix else ctx.scope.resource_group
    path = _type_path(resource_type, "/".join(names))
    if group is None:
        return f"/subscriptions/{subscription}/providers/{path}"
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{path}"


def _subscription_resource_id(ctx: Context, text: str, *args: str) -> str:
    subscription = args[0] if "/" not in args[0] else ctx.scope.subscription
    rest = args[1:] if "/" not in args[0] else args
    return f"/subscriptions/{subscription}/providers/{_type_path(rest[0], '/'.join(rest[1:]))}"


def _extension_resource_id(ctx: Context, text: str, base: str, kind: str, *names: str) -> str:
    return f"{base}/providers/{_type_path(kind, '/'.join(names))}"


def _reference(ctx: Context, text: str, target: Any, api_version: str = "", full: str = "") -> Any:
    if isinstance(target, Unevaluated):
        return Unevaluated(text)
    if "/providers/" not in target and "/" in target:  # a relative 'A.B/type/name'
        target = f"{ctx.scope.group_id}/providers/{target}"
    found = ctx.engine.resources.get(target.lower())
    if found is None or found.get("_pending"):
        if ctx.engine.predicting:
            return Unevaluated(text)
        raise TemplateError("ResourceNotFound", f"The Resource '{target}' was not found.", target)
    return found if full.lower() == "full" else found.get("properties", {})


def _union(ctx: Context, text: str, *objects: dict) -> dict:
    merged: dict = {}
    for obj in objects:
        merged.update(obj)
    return merged


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "parameters": _parameters,
    "variables": _variables,
    "format": _format,
    "concat": lambda ctx, text, *a: (
        "".join(map(str, a)) if all(isinstance(x, str) for x in a) else sum(a, [])
    ),
    "tolower": lambda ctx, text, s: s.lower(),
    "toupper": lambda ctx, text, s: s.upper(),
    "take": lambda ctx, text, s, n: s[:n],
    "empty": lambda ctx, text, v: not v,
    "not": lambda ctx, text, v: not v,
    "equals": lambda ctx, text, a, b: a == b,
    "union": _union,
    "createobject": lambda ctx, text, *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
    "createarray": lambda ctx, text, *items: list(items),
    "true": lambda ctx, text: True,
    "false": lambda ctx, text: False,
    "uniquestring": lambda ctx, text, *parts: unique_string(*parts),
    "guid": lambda ctx, text, *parts: _guid(*parts),
    "subscription": lambda ctx, text: {
        "id": f"/subscriptions/{ctx.scope.subscription}",
        "subscriptionId": ctx.scope.subscription,
        "tenantId": TENANT,
    },
    "resourcegroup": lambda ctx, text: {
        "id": ctx.scope.group_id,
        "name": ctx.scope.resource_group,
        "location": ctx.scope.location,
    },
    "deployment": lambda ctx, text: {
        "name": ctx.engine.deployment_name,
        "location": ctx.scope.location,
    },
    "resourceid": _resource_id,
    "subscriptionresourceid": _subscription_resource_id,
    "extensionresourceid": _extension_resource_id,
    "reference": _reference,
}


# --- deploying ---------------------------------------------------------------------------------


class TemplateEngine:
    """Deploys templates into `resources` (resource ID, lower-cased -> resource document).

    `predicting=True` is what-if: nothing a deployment would generate (principal IDs) is made
    up, and the caller deploys into a copy and compares it with the original.
    """

    def __init__(
        self,
        resources: dict[str, dict[str, Any]],
        predicting: bool = False,
        on_resource: Callable[[dict[str, Any]], None] | None = None,
        deployment_name: str = "",
    ) -> None:
        self.resources = resources
        self.predicting = predicting
        self.on_resource = on_resource or (lambda document: None)
        self.deployment_name = deployment_name

    def deploy(self, template: dict[str, Any], parameters: dict[str, Any], scope: Scope) -> Outcome:
        ctx = Context(self, template, parameters, scope)
        outcome = Outcome()
        for resource in _resources(template):
            if "condition" in resource and not ctx.value(resource["condition"]):
                continue
            resource_type = ctx.value(resource["type"])
            if resource.get("existing"):
                continue
            name = ctx.value(resource["name"])
            if isinstance(name, Unevaluated):
                why = "The resource name is computed from a value known only at deployment time."
                outcome.unsupported.append((resource_type, str(name), why))
                continue
            if resource_type == DEPLOYMENTS:
                self._nested(ctx, resource, name, outcome)
                continue
            resource_id = ctx.resource_id(resource, name)
            if "scope" in resource and not self.predicting:
                target = resource_id.rsplit("/providers/", 1)[0]
                if target.lower() not in self.resources:
                    raise TemplateError(
                        "ResourceNotFound", f"The Resource '{target}' was not found.", resource_id
                    )
            if (
                resource_type != RESOURCE_GROUPS
                and "scope" not in resource
                and ctx.scope.resource_group is not None  # else: a subscription-level resource
            ):
                group = f"{ctx.scope.group_id}".lower()
                if group not in self.resources:
                    raise TemplateError(
                        "ResourceGroupNotFound",
                        f"Resource group '{ctx.scope.resource_group}' could not be found.",
                        resource_id,
                    )
            self._put(ctx, resource, resource_type, name, resource_id)
            outcome.touched.append(resource_id)
        for key, spec in template.get("outputs", {}).items():
            outcome.outputs[key] = {
                "type": spec.get("type", "String"),
                "value": ctx.value(spec["value"]),
            }
        return outcome

    def _nested(self, ctx: Context, resource: dict[str, Any], name: str, outcome: Outcome) -> None:
        properties = resource["properties"]
        if properties.get("expressionEvaluationOptions", {}).get("scope") != "inner":
            raise TemplateError("InvalidTemplate", f"nested deployment {name}: only inner scope")
        subscription = ctx.value(resource.get("subscriptionId", ctx.scope.subscription))
        group = ctx.value(resource.get("resourceGroup", ctx.scope.resource_group))
        inner_scope = Scope(subscription, group, ctx.scope.location)
        if group is not None and inner_scope.group_id.lower() not in self.resources:
            raise TemplateError(
                "ResourceGroupNotFound",
                f"Resource group '{group}' could not be found.",
                f"{inner_scope.group_id}/providers/{DEPLOYMENTS}/{name}",
            )
        passed = {
            k: {"value": ctx.value(v["value"])} for k, v in properties.get("parameters", {}).items()
        }
        inner = self.deploy(properties["template"], passed, inner_scope)
        outcome.touched += inner.touched
        outcome.unsupported += inner.unsupported
        deployment_id = (
            f"{inner_scope.group_id}/providers/{DEPLOYMENTS}/{name}"
            if group is not None
            else f"/subscriptions/{subscription}/providers/{DEPLOYMENTS}/{name}"
        )
        self.resources[deployment_id.lower()] = {
            "id": deployment_id,
            "name": name,
            "type": DEPLOYMENTS,
            "properties": {"provisioningState": "Succeeded", "outputs": inner.outputs},
            "_nested": True,
        }

    def _put(
        self,
        ctx: Context,
        resource: dict[str, Any],
        resource_type: str,
        name: str,
        resource_id: str,
    ) -> None:
        document: dict[str, Any] = {
            "id": resource_id,
            "name": name.split("/")[-1],
            "type": resource_type,
        }
        for key in ("location", "tags", "sku", "kind", "identity", "properties"):
            if key in resource:
                document[key] = ctx.value(resource[key])
        if resource_type == RESOURCE_GROUPS:
            document.setdefault("properties", {})["provisioningState"] = "Succeeded"
        previous = self.resources.get(resource_id.lower())
        self._runtime_values(document, previous)
        self.resources[resource_id.lower()] = document
        self.on_resource(document)

    def _runtime_values(self, document: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """What Azure fills in: identities' principal IDs (kept across re-deploys)."""
        seed = document["id"].lower()
        made = (
            (lambda what: Unevaluated(f"reference('{document['id']}').{what}"))
            if self.predicting
            else (lambda what: _guid(seed, what))
        )
        identity = document.get("identity")
        if isinstance(identity, dict) and "SystemAssigned" in str(identity.get("type", "")):
            old = (previous or {}).get("identity", {})
            identity["principalId"] = old.get("principalId") or made("identity.principalId")
            identity["tenantId"] = TENANT
        if document["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities":
            old = (previous or {}).get("properties", {})
            properties = document.setdefault("properties", {})
            properties["principalId"] = old.get("principalId") or made("properties.principalId")
            properties["clientId"] = old.get("clientId") or made("properties.clientId")
            properties["tenantId"] = TENANT


def _resources(template: dict[str, Any]) -> list[dict[str, Any]]:
    resources = template.get("resources", [])
    if isinstance(resources, dict):
        raise TemplateError(
            "InvalidTemplate", "symbolic-name templates (languageVersion 2.0) are not supported"
        )
    return resources


# --- what-if -----------------------------------------------------------------------------------

# what a what-if compares: the resource's desired state, not what Azure adds to it
_COMPARED = ("location", "tags", "sku", "kind", "properties")


def what_if(
    resources: dict[str, dict[str, Any]],
    template: dict[str, Any],
    parameters: dict[str, Any],
    scope: Scope,
) -> list[dict[str, Any]]:
    """ARM's WhatIfChange list: deploy into a copy, then compare each touched resource."""
    predicted = copy.deepcopy(resources)
    outcome = TemplateEngine(predicted, predicting=True).deploy(template, parameters, scope)
    changes: list[dict[str, Any]] = []
    for resource_id in dict.fromkeys(outcome.touched):
        after = _public(predicted[resource_id.lower()])
        before_doc = resources.get(resource_id.lower())
        if before_doc is None:
            changes.append({"resourceId": resource_id, "changeType": "Create", "after": after})
            continue
        before = _public(before_doc)
        delta = _delta(before, after)
        changes.append(
            {
                "resourceId": resource_id,
                "changeType": "Modify" if delta else "NoChange",
                "before": before,
                "after": after,
                **({"delta": delta} if delta else {}),
            }
        )
    for resource_type, name, why in outcome.unsupported:
        changes.append(
            {
                "resourceId": f"{resource_type}/{name}",
                "changeType": "Unsupported",
                "unsupportedReason": why,
            }
        )
    return changes


def _public(document: dict[str, Any]) -> dict[str, Any]:
    return _jsonable({k: v for k, v in document.items() if not k.startswith("_")})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Unevaluated):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _delta(before: dict[str, Any], after: dict[str, Any], path: str = "") -> list[dict[str, Any]]:
    """WhatIfPropertyChange entries for the compared parts of a resource."""
    changes: list[dict[str, Any]] = []
    keys = _COMPARED if not path else sorted(set(before) | set(after))
    for key in keys:
        where = f"{path}.{key}" if path else key
        old, new = before.get(key), after.get(key)
        if old == new or (not path and key not in after):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _delta(old, new, where)
        elif key not in after:
            continue  # Incremental mode leaves what the template does not set
        else:
            kind = "Create" if key not in before else "Modify"
            changes.append({"path": where, "propertyChangeType": kind, "before": old, "after": new})
    return changes
