"""Long-running operations: `Azure-AsyncOperation` status documents and `Location` results."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.azure.fake.http import (
    ARM_HOST,
    PROVIDER,
    Reply,
    SeenRequest,
    arm_error,
)
from tests.azure.fake.state import (
    Lro,
    ProvisioningFailed,
    Registry,
    Workspace,
    _now,
)


class LroApi:
    """Mixed into FakeAzureML, which holds the state and routes requests here."""

    # --- long-running operations -----------------------------------------------------------

    def _start_lro(
        self,
        request: SeenRequest,
        ws: Workspace | Registry,
        prefix: str,
        outcome: Callable[[], None] | None,
        error: str | None = None,
        pending: Callable[[], bool] | None = None,
    ) -> Lro:
        for i, (pattern, message) in enumerate(self._failing_lros):
            if pattern.search(request.path):
                del self._failing_lros[i]
                error = message
                break
        op_id = f"{prefix}:{ws.guid}:{uuid.uuid4()}"
        lro = Lro(
            op_id,
            "arm",
            self.lro_polls,
            outcome,
            {
                "code": "InternalServerError" if prefix != "odidp" else "DeploymentFailed",
                "message": error,
            }
            if error
            else None,
            pending=pending,
            target=(request.method, request.path),
        )
        self.lros[op_id] = lro
        return lro

    def _lro_headers(self, lro: Lro, ws: Workspace, api_version: str, delete: bool = False) -> dict:
        base = (
            f"https://{ARM_HOST}/subscriptions/{ws.subscription}/providers/{PROVIDER}/locations/"
            f"{ws.location}"
        )
        signature = f"&t={uuid.uuid4().int % 10**18}&c=fakecert&s=fakesig&h=fakehash"
        headers = {
            "Azure-AsyncOperation": (
                f"{base}/mfeOperationsStatus/{lro.id}?api-version={api_version}{signature}"
            ),
            "x-ms-async-operation-timeout": "PT1H",
        }
        if delete:
            headers["Location"] = (
                f"{base}/mfeOperationResults/{lro.id}?api-version={api_version}{signature}"
            )
        return headers

    def _advance(self, lro: Lro) -> None:
        if lro.status != "InProgress":
            return
        if lro.polls > 0:
            lro.polls -= 1
            return
        if lro.pending is not None and lro.pending():
            return
        if lro.error:
            lro.status = "Failed"
            return
        try:
            if lro.outcome is not None:
                lro.outcome()
        except ProvisioningFailed as failure:
            lro.status = "Failed"
            lro.error = {"code": failure.code, "message": failure.message}
            return
        lro.status = "Succeeded"

    def _operation_status(self, request: SeenRequest, sub: str, loc: str, op: str) -> Reply:
        if bad := self._api_version(request, "operation"):
            return bad
        lro = self.lros.get(op)
        if lro is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        self._advance(lro)
        body: dict[str, Any] = {
            "id": f"/subscriptions/{sub}/providers/{PROVIDER}/locations/{loc}"
            f"/mfeOperationsStatus/{op}",
            "name": op,
            "startTime": lro.started,
            "endTime": _now() if lro.status != "InProgress" else "0001-01-01T00:00:00+00:00",
            "percentComplete": 100.0 if lro.status != "InProgress" else 0.0,
            "status": "Updating" if lro.status == "InProgress" else lro.status,
        }
        if lro.status == "Failed":
            body["error"] = lro.error
        # a container that is starting is polled less often (the recording: every ~5 s)
        wait = "200" if lro.status == "InProgress" and lro.pending is not None else "20"
        return Reply(200, body, {"x-ms-retry-after-ms": wait})

    def _operation_result(self, request: SeenRequest, sub: str, loc: str, op: str) -> Reply:
        lro = self.lros.get(op)
        if lro is None:
            return arm_error(404, "NotFound", f"operation {op} not found")
        self._advance(lro)
        if lro.status == "InProgress":
            return Reply(202, None, {"x-ms-retry-after-ms": "20", "Location": request.url})
        if lro.status == "Failed":
            return Reply(500, {"error": lro.error})
        return Reply(200, None)
