"""Who the azure backend is: `DefaultAzureCredential`, and nothing else.

No keys, SAS tokens or client secrets live in config or code: on a laptop the credential is
the `az login` session, in CI a workload identity (federated), on AML compute or a Prefect
worker a managed identity. Every one of those is found by `DefaultAzureCredential`, so the
same code runs everywhere and the only thing to configure is role assignments (Bicep does that).
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential

ARM_SCOPE = "https://management.azure.com/.default"


def default_credential() -> TokenCredential:
    """The ambient Azure identity; the interactive browser login is left out so that a flow
    on a headless worker fails fast with a clear message instead of waiting for a browser."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
