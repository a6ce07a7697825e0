"""Writes to a resource while an operation on it still runs: Azure ML's 409 Conflict.

What Azure ML answers, as reported from live workspaces (no recording or REST API example has
it; the REST specs only say a non-2xx answer carries ARM's `ErrorResponse`):

- Azure/carnegie-mop, doc/troubleshooting/model_wrapper/AmlEndpoint.md quotes azure-core's
  rendering of the error an online endpoint write got: "(Conflict) Conflict Code: Conflict
  Message: Conflict Exception Details: (OperationDuplicationConflict) Conflict of operation,
  another operation on same entity is already running in workspace <name>." That is the
  envelope `{"error": {"code": "Conflict", "message": "Conflict", "details": [{"code":
  "OperationDuplicationConflict", "message": "Conflict of operation, ..."}]}}`.
- https://github.com/Azure/azure-cli/issues/17075: the same message from a model deployment in
  an Azure DevOps release ("Conflict of operation, another operation on same entity is already
  running in workspace mlops-wrksp.").

Neither says the status number; "Conflict" is 409's reason phrase and ARM's code for it. The
message says *same entity*, so what is refused here is a write to the resource an unfinished
operation works on. An endpoint's delete removes its deployments, so it is an operation on
them too: while it runs their writes are refused, and an endpoint cannot be deleted while an
operation on one of its deployments runs. A deployment's operation does not block its
endpoint's traffic update (the endpoint refuses traffic to a deployment that is not Succeeded
on its own, with a 400; see endpoints.py).

Writes are PUT, PATCH, DELETE and the POST actions that change a resource; GETs and the
read-only POSTs (listKeys, token, getLogs, listSecrets) are never refused.
"""

from __future__ import annotations

import re
import sys
import uuid

from tests.azure.fake.http import Reply, SeenRequest
from tests.azure.fake.state import Lro

READ_ONLY_ACTIONS = {"listkeys", "token", "getlogs", "listsecrets"}
HELD = "held:"
"""Operation ids of `hold_operation`: an operation nobody polls any more."""


class ConflictApi:
    """Mixed into FakeAzureML, which holds the state (`lros`, `workspaces`) and calls
    `_refused_while_running` from `_dispatch` before any route."""

    # --- fault switch ----------------------------------------------------------------------

    def hold_operation(self, resource_pattern: str, polls: int | None = None) -> Lro:
        """Start an update of the one online endpoint or deployment whose ID matches
        `resource_pattern`, as a flow that crashed mid-update leaves behind: its
        provisioningState is Updating and writes to it are refused, for `polls` reads of the
        resource (or of what contains it), or until `release_operations()` when `polls` is
        None. Then it ends Succeeded and the resource is as it was."""
        pattern = re.compile(resource_pattern)
        found = [r for r in self._ml_resources() if pattern.search(r["id"])]
        if len(found) != 1:
            raise ValueError(
                f"hold_operation({resource_pattern!r}) must match one endpoint or deployment, "
                f"matched {[r['id'] for r in found]}"
            )
        resource = found[0]
        props = resource["properties"]
        before = props["provisioningState"]
        props["provisioningState"] = "Updating"

        def done() -> None:
            props["provisioningState"] = before

        lro = Lro(
            f"{HELD}{uuid.uuid4()}",
            "arm",
            sys.maxsize if polls is None else polls,
            done,
            target=("PUT", resource["id"]),
        )
        self.lros[lro.id] = lro
        return lro

    def release_operations(self) -> None:
        """Every held operation ends now (Succeeded)."""
        for lro in self._held():
            lro.polls = 0
            self._advance(lro)

    # --- dispatch --------------------------------------------------------------------------

    def _refused_while_running(self, request: SeenRequest) -> Reply | None:
        """Azure ML's 409 for a write to a resource an unfinished operation works on; a read
        of a held operation's resource counts as one of its polls."""
        path = request.path.lower().rstrip("/")
        if request.method in ("GET", "HEAD"):
            for lro in self._held():
                target = lro.target[1].lower()
                if target == path or target.startswith(path + "/"):
                    self._advance(lro)
            return None
        if request.method == "POST":
            path, _, action = path.rpartition("/")
            if action.lower() in READ_ONLY_ACTIONS:
                return None
        for lro in list(self.lros.values()):
            if lro.status != "InProgress" or lro.target is None:
                continue
            method, target = lro.target[0], lro.target[1].lower()
            if (
                path == target
                or (path.startswith(target + "/") and method == "DELETE")
                or (target.startswith(path + "/") and request.method == "DELETE")
            ):
                return _operation_in_progress(request.path)
        return None

    def _held(self) -> list[Lro]:
        return [
            lro
            for lro in self.lros.values()
            if lro.id.startswith(HELD) and lro.status == "InProgress" and lro.target
        ]

    def _ml_resources(self) -> list[dict]:
        resources: list[dict] = []
        for ws in self.workspaces.values():
            resources += ws.endpoints.values()
            for deployments in ws.deployments.values():
                resources += deployments.values()
        return resources


def _operation_in_progress(path: str) -> Reply:
    """The envelope of the carnegie-mop report (module docstring), in the management front
    end's shape (details and additionalInfo as in the recordings' 404)."""
    workspace = re.search(r"/workspaces/([^/]+)", path, re.IGNORECASE)
    message = (
        "Conflict of operation, another operation on same entity is already running in "
        f"workspace {workspace[1] if workspace else ''}."
    )
    return Reply(
        409,
        {
            "error": {
                "code": "Conflict",
                "message": "Conflict",
                "details": [
                    {
                        "code": "OperationDuplicationConflict",
                        "message": message,
                        "details": [],
                        "additionalInfo": [],
                    }
                ],
                "additionalInfo": [{"type": "ComponentName", "info": {"value": "fake-mfe"}}],
            }
        },
    )
