"""Azure's refusals turned into errors that say what to fix.

azure-core has already retried throttling and transient 5xx answers by the time an error gets
here (see retries.py), so what is left is either a mistake on our side (4xx: a name, a role, a
quota) or an outage that outlasted the retries. Each gets one sentence on what to do next.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from backends.traffic_rules import RequestRefused


class AzureOperationFailed(RuntimeError):
    """An Azure ML call failed for good; the message names the call, the cause and the fix."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AzureRequestRefused(AzureOperationFailed, RequestRefused):
    """Azure refused the request as sent (400 or 422: a value it does not accept, such as
    traffic its rules refuse): the same RequestRefused the local endpoint raises, so a caller
    handles a refusal on either backend alike, with Azure's status and error code."""

    status: int

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message, status, code)
        self.reason = message


class AzureNotSignedIn(AzureOperationFailed):
    """DefaultAzureCredential found no identity, or Azure rejected its token."""


class AzurePermissionDenied(AzureOperationFailed):
    """The identity is known but lacks a role on the resource."""


class AzureResourceMissing(AzureOperationFailed):
    """The workspace, registry, compute or asset named in the topology does not exist."""


class AzureConflict(AzureOperationFailed):
    """The resource exists in another state (a version already taken, an operation running)."""


class ResourceBusy(AzureConflict):
    """Azure kept refusing a write because another operation on the resource was still
    running, for longer than the deadline (see retries.retry_while_busy)."""


OPERATION_IN_PROGRESS_CODES = {"OperationDuplicationConflict", "AnotherOperationInProgress"}
"""409 codes that mean "an operation on this resource is still running": Azure ML's (reported in
Azure/carnegie-mop doc/troubleshooting/model_wrapper/AmlEndpoint.md and Azure/azure-cli issue
17075: "Conflict of operation, another operation on same entity is already running in workspace
..."; see tests/azure/fake/conflicts.py) and ARM's generic one. Any other 409 (a version that
is taken, a name in use) keeps its meaning."""
OPERATION_IN_PROGRESS_MESSAGE = re.compile(
    r"another operation .*(already running|in progress)", re.IGNORECASE
)


def service_code(error: HttpResponseError) -> str | None:
    """The most specific error code Azure sent (ARM nests them in `details`)."""
    inner = getattr(error, "error", None)
    code = getattr(inner, "code", None)
    details = getattr(inner, "details", None) or []
    for detail in details:
        if getattr(detail, "code", None):
            return str(detail.code)
    return str(code) if code else None


def operation_in_progress(error: BaseException) -> bool:
    """Whether `error` is Azure refusing a write because another operation on the same
    resource is still running (wait for it, then write again), not any other 409."""
    if not isinstance(error, HttpResponseError) or error.status_code != 409:
        return False
    codes = {service_code(error), getattr(getattr(error, "error", None), "code", None)}
    return bool(codes & OPERATION_IN_PROGRESS_CODES) or bool(
        OPERATION_IN_PROGRESS_MESSAGE.search(service_message(error))
    )


def service_message(error: HttpResponseError) -> str:
    inner = getattr(error, "error", None)
    details = getattr(inner, "details", None) or []
    for detail in details:
        if getattr(detail, "message", None):
            return str(detail.message)
    message = getattr(inner, "message", None)
    return str(message) if message else str(error.message or error).splitlines()[0]


def explain(action: str, error: Exception) -> AzureOperationFailed:
    """The domain error for `error` raised while doing `action` (e.g. "register model x")."""
    if isinstance(error, AzureOperationFailed):
        return error
    if isinstance(error, ClientAuthenticationError) and not isinstance(error, HttpResponseError):
        return AzureNotSignedIn(
            f"{action}: no Azure identity ({error}). Sign in with `az login`, or give the "
            "worker a managed identity / workload identity; DefaultAzureCredential is the only "
            "credential used, no keys"
        )
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return AzureOperationFailed(
            f"{action}: could not reach Azure ({error}). Check network access to "
            "management.azure.com and *.api.azureml.ms (private endpoints need a VNet-joined "
            "worker), then re-run"
        )
    if not isinstance(error, HttpResponseError):
        return AzureOperationFailed(f"{action}: {error}")
    status = error.status_code
    code = service_code(error)
    reason = service_message(error).rstrip(".")
    where = f"{action}: Azure answered {status}" + (f" {code}" if code else "") + f": {reason}"
    if status in (200, 201, 202):  # a long-running operation that ran and ended Failed
        return AzureOperationFailed(
            f"{action}: the operation ran on Azure and failed"
            + (f" ({code})" if code else "")
            + f": {reason}. Fix the cause named there (logs, quota, the model), then re-run",
            status,
            code,
        )
    if status == 401:
        return AzureNotSignedIn(
            f"{where}. The token was rejected: sign in again (`az login`) or check the tenant "
            "of the managed identity",
            status,
            code,
        )
    if status == 403:
        return AzurePermissionDenied(
            f"{where}. Grant the identity 'AzureML Data Scientist' on the workspace (and "
            "'AzureML Registry User' on the shared registry); infra/ assigns these roles",
            status,
            code,
        )
    if status == 404:
        return AzureResourceMissing(
            f"{where}. Check the names in environments.yaml and that `deploy_infra` ran for "
            "this environment",
            status,
            code,
        )
    if status == 409:
        return AzureConflict(
            f"{where}. Another operation holds the resource or the name/version is taken; "
            "wait for it to finish, then re-run",
            status,
            code,
        )
    if status == 429 or (status is not None and status >= 500):
        return AzureOperationFailed(
            f"{where}. Azure kept throttling or failing after the configured retries; try "
            "again later or lower the request rate (RetrySettings in backends/azure/retries.py)",
            status,
            code,
        )
    if status in (400, 422):
        return AzureRequestRefused(
            f"{where}. The request was refused as sent: fix the value named above", status, code
        )
    return AzureOperationFailed(
        f"{where}. The request was refused as sent: fix the value named above", status, code
    )


@contextmanager
def explained(action: str) -> Iterator[None]:
    """Re-raise Azure SDK errors from the block as AzureOperationFailed with advice."""
    try:
        yield
    except (HttpResponseError, ClientAuthenticationError, ServiceRequestError) as error:
        raise explain(action, error) from error
