"""The Bicep in infra/ as a specification: it parses, lints clean, names resources the same on
every deployment, keeps the security settings the design promises, and names each
environment's resources as environments.yaml does.

There is no Bicep CLI here. The Bicep is parsed by pycep and linted by checkov, both from
.venv-checkov (checkov's dependencies clash with the project's pins), through subprocesses.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CHECKOV_CONFIG = INFRA / "checkov.yaml"
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_PYTHON = CHECKOV_VENV / "bin" / "python"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
BICEP_TO_JSON = Path(__file__).with_name("bicep_to_json.py")

ENVIRONMENTS = ("dev", "test", "prod")
# pycep's names for parsed calls, and Bicep's for calls left inside '${...}' interpolations
NON_DETERMINISTIC_FUNCTIONS = {"utc_now", "new_guid", "utcNow", "newGuid"}

NO_CHECKOV_VENV = (
    ".venv-checkov is missing, so there is no Bicep parser (pycep) or linter (checkov): "
    "run `make checkov-venv` (builds it from requirements-checkov.lock)"
)
needs_checkov_venv = pytest.mark.skipif(not CHECKOV.exists(), reason=NO_CHECKOV_VENV)


# --- parsing -----------------------------------------------------------------------------


def parse_infra() -> dict[str, Any]:
    """Every .bicep and .bicepparam file under infra/, parsed by pycep in .venv-checkov."""
    completed = subprocess.run(
        [str(CHECKOV_PYTHON), str(BICEP_TO_JSON), str(INFRA)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"bicep_to_json.py failed:\n{completed.stderr}"
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.skip(NO_CHECKOV_VENV)
    return parse_infra()


@pytest.fixture(scope="module")
def files(parsed: dict[str, Any]) -> dict[str, Any]:
    return parsed["files"]


@pytest.fixture(scope="module")
def reparsed_files(files: dict[str, Any]) -> dict[str, Any]:
    """A second, independent parse of infra/: names must not change between two."""
    return parse_infra()["files"]


@pytest.fixture(scope="module")
def topology() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "environments.yaml").read_text())


def body(entry: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a resource or module, also when it is deployed conditionally."""
    config = entry["config"]
    return config["config"] if "condition" in config else config


def resources_of_type(files: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    found = [
        body(resource)
        for parsed_file in files.values()
        for resource in parsed_file.get("resources", {}).values()
        if resource["type"] == resource_type and not resource.get("existing")
    ]
    assert found, f"no {resource_type} resource in infra/"
    return found


def bicep_files(files: dict[str, Any]) -> dict[str, Any]:
    return {path: parsed for path, parsed in files.items() if path.endswith(".bicep")}


def function_types(value: Any) -> Iterator[str]:
    """Every Bicep function called anywhere inside a parsed value."""
    if isinstance(value, str):  # pycep keeps '${...}' interpolations as text
        for inside in re.findall(r"\$\{(.*?)\}", value):
            yield from re.findall(r"(\w+)\s*\(", inside)
    elif isinstance(value, dict):
        if "function" in value and isinstance(value["function"], dict):
            yield value["function"]["type"]
        for item in value.values():
            yield from function_types(item)
    elif isinstance(value, list):
        for item in value:
            yield from function_types(item)


def test_every_bicep_and_parameter_file_parses(parsed: dict[str, Any]) -> None:
    on_disk = {p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep*")}
    assert parsed["errors"] == {}, f"files pycep could not parse: {parsed['errors']}"
    assert set(parsed["files"]) == on_disk
    assert {"main.bicep", "shared.bicep"} <= on_disk
    assert {f"parameters/{name}.bicepparam" for name in (*ENVIRONMENTS, "shared")} <= on_disk


def test_every_module_path_exists(files: dict[str, Any]) -> None:
    for path, parsed_file in bicep_files(files).items():
        for module_name, module in parsed_file.get("modules", {}).items():
            target = (INFRA / path).parent / module["detail"]["path"]
            assert target.exists(), f"{path}: module {module_name} points at missing {target}"


# --- lint --------------------------------------------------------------------------------


@needs_checkov_venv
def test_checkov_passes_with_only_the_documented_skips() -> None:
    completed = subprocess.run(
        [str(CHECKOV), "--config-file", str(CHECKOV_CONFIG), "--quiet", "--output", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(completed.stdout)
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    assert completed.returncode == 0 and summary["failed"] == 0, f"checkov failed: {failed}"
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0, "checkov checked nothing: did it find the Bicep files?"


def test_every_skipped_checkov_check_says_why() -> None:
    lines = CHECKOV_CONFIG.read_text().splitlines()
    skipped = [i for i, line in enumerate(lines) if re.match(r"\s*- CKV2?_", line)]
    assert skipped, "no skip list in infra/checkov.yaml"
    for index in skipped:
        assert lines[index - 1].strip().startswith("#"), f"no reason above: {lines[index]}"


# --- stable names ------------------------------------------------------------------------


def test_no_clock_or_random_values_in_any_template_text() -> None:
    for path in INFRA.rglob("*.bicep*"):
        text = path.read_text()
        for function in ("utcNow", "newGuid"):
            assert function not in text, f"{path.relative_to(ROOT)} calls {function}()"


def test_no_clock_or_random_function_in_any_parsed_template(files: dict[str, Any]) -> None:
    for path, parsed_file in bicep_files(files).items():
        called = set(function_types(parsed_file))
        assert not called & NON_DETERMINISTIC_FUNCTIONS, f"{path} calls {called}"


class NotStable(Exception):
    """A name depends on something other than parameters and deterministic functions."""


class NameEvaluator:
    """Evaluates the name expressions of a template for given parameter values.

    Knows only what names are allowed to be made of: parameters, variables, string
    interpolation, take/toLower/replace, subscription().subscriptionId and uniqueString (as a
    deterministic stand-in hash). Anything else, the clock or a random GUID in particular,
    raises NotStable.
    """

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self.template = template
        self.values: dict[str, Any] = {}
        for name, spec in template.get("parameters", {}).items():
            if name in parameters:
                self.values[name] = parameters[name]
            elif "default" in spec:
                self.values[name] = self.evaluate(spec["default"])

    def lookup(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        variables = self.template.get("variables", {})
        if name in variables:
            self.values[name] = self.evaluate(variables[name]["value"])
            return self.values[name]
        raise NotStable(f"`{name}` is neither a parameter nor a variable")

    def is_symbol(self, text: str) -> bool:
        known = set(self.template.get("parameters", {})) | set(self.template.get("variables", {}))
        return text in known

    def evaluate(self, value: Any) -> Any:
        if isinstance(value, bool | int) or value is None:
            return value
        if isinstance(value, str):
            if self.is_symbol(value):
                return self.lookup(value)
            rendered = re.sub(r"\$\{(\w+)\}", lambda m: str(self.lookup(m.group(1))), value)
            if "${" in rendered:
                raise NotStable(f"interpolation of more than a parameter or variable: {value}")
            return rendered
        if isinstance(value, dict) and "function" in value:
            return self.call(value["function"])
        if isinstance(value, dict) and "operator" not in value:
            return {key: self.evaluate(item) for key, item in value.items()}
        raise NotStable(f"unsupported expression in a name: {value}")

    def call(self, function: dict[str, Any]) -> Any:
        kind = function["type"]
        args = [self.evaluate(arg) for arg in (function.get("parameters") or {}).values()]
        if kind == "take":
            return args[0][: args[1]]
        if kind == "to_lower":
            return args[0].lower()
        if kind == "replace":
            return args[0].replace(args[1], args[2])
        if kind == "union":
            return {key: item for arg in args for key, item in arg.items()}
        if kind == "subscription" and function.get("property_name") == "subscriptionId":
            return "00000000-0000-0000-0000-000000000000"
        if kind == "unique_string":
            digest = hashlib.sha256("|".join(map(str, args)).encode()).digest()
            alphabet = "abcdefghijklmnopqrstuvwxyz234567"
            return "".join(alphabet[byte % 32] for byte in digest[:13])
        raise NotStable(f"{kind}() in a name")


def main_template_names(main: dict[str, Any], files: dict[str, Any], params: dict) -> dict:
    """The name of every resource and deployment main.bicep creates, directly or through a
    module that names its resource after one of its parameters."""
    evaluator = NameEvaluator(main, params)
    names = {
        f"main.bicep:{symbol}": evaluator.evaluate(body(resource)["name"])
        for symbol, resource in main.get("resources", {}).items()
    }
    for symbol, module in main.get("modules", {}).items():
        config = body(module)
        names[f"deployment:{symbol}"] = evaluator.evaluate(config["name"])
        module_file = files[module["detail"]["path"]]
        for resource_symbol, resource in module_file.get("resources", {}).items():
            if resource.get("existing"):
                continue  # a reference to a resource named elsewhere
            name = body(resource)["name"]
            if isinstance(name, str) and name in config["params"]:
                key = f"{module['detail']['path']}:{resource_symbol}"
                names[key] = evaluator.evaluate(config["params"][name])
    return names


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_names_are_the_same_on_every_deployment(
    files: dict[str, Any], reparsed_files: dict[str, Any], environment: str
) -> None:
    params = files[f"parameters/{environment}.bicepparam"]["parameters"]
    first = main_template_names(files["main.bicep"], files, params)
    second = main_template_names(reparsed_files["main.bicep"], reparsed_files, params)
    assert first == second
    assert first["modules/workspace.bicep:workspace"] == f"mlw-readmission-{environment}"
    assert first["main.bicep:environmentGroup"] == f"rg-readmission-{environment}"


def test_globally_unique_names_fit_azure_rules_and_differ_per_environment(
    files: dict[str, Any],
) -> None:
    seen: dict[str, str] = {}
    for environment in ENVIRONMENTS:
        params = files[f"parameters/{environment}.bicepparam"]["parameters"]
        names = main_template_names(files["main.bicep"], files, params)
        storage = names["modules/storage.bicep:storage"]
        key_vault = names["modules/key-vault.bicep:keyVault"]
        registry = names["modules/container-registry.bicep:containerRegistry"]
        assert re.fullmatch(r"[a-z0-9]{3,24}", storage), storage
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", key_vault), key_vault
        assert "--" not in key_vault, key_vault
        assert re.fullmatch(r"[a-zA-Z0-9]{5,50}", registry), registry
        for name in (storage, key_vault, registry):
            assert name not in seen, f"{name} is used by both {seen.get(name)} and {environment}"
            seen[name] = environment


def test_role_assignment_names_are_guid_of_scope_principal_and_role(
    files: dict[str, Any],
) -> None:
    for path, parsed_file in bicep_files(files).items():
        variables = parsed_file.get("variables", {})
        for symbol, resource in parsed_file.get("resources", {}).items():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = body(resource)
            name = config["name"]["function"]
            assert name["type"] == "guid", f"{path}:{symbol} is not named with guid()"
            scope_id, principal, role = name["parameters"].values()
            if "scope" in config:
                accessor = scope_id["operator"]["operands"]
                assert accessor == {"operand_1": config["scope"], "operand_2": "id"}, symbol
            else:  # assigned at the template's own scope: a subscription or a resource group
                own_scope = parsed_file["globals"]["scope"]["value"]
                call = scope_id["function"]
                expected = {"subscription": "subscription", "resourceGroup": "resource_group"}
                assert (call["type"], call.get("property_name")) == (expected[own_scope], "id"), (
                    symbol
                )
                assert not any((call.get("parameters") or {}).values()), symbol  # no other scope
            assert principal == config["properties"]["principalId"], symbol
            assert role == config["properties"]["roleDefinitionId"], symbol
            role_id = variables[role]["value"]["function"]
            assert role_id["type"] == "subscription_resource_id", symbol
            assert config["properties"]["principalType"] == "ServicePrincipal", symbol


# --- security settings -------------------------------------------------------------------


def test_storage_takes_only_entra_id_over_tls_1_2_https_and_no_public_blobs(
    files: dict[str, Any],
) -> None:
    for storage in resources_of_type(files, "Microsoft.Storage/storageAccounts"):
        properties = storage["properties"]
        assert properties["allowSharedKeyAccess"] is False
        assert properties["minimumTlsVersion"] == "TLS1_2"
        assert properties["allowBlobPublicAccess"] is False
        assert properties["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection(files: dict[str, Any]) -> None:
    for vault in resources_of_type(files, "Microsoft.KeyVault/vaults"):
        properties = vault["properties"]
        assert properties["enableRbacAuthorization"] is True
        assert properties["enableSoftDelete"] is True
        assert properties["enablePurgeProtection"] is True
        assert "accessPolicies" not in properties


def test_container_registry_has_no_admin_user(files: dict[str, Any]) -> None:
    for registry in resources_of_type(files, "Microsoft.ContainerRegistry/registries"):
        assert registry["properties"]["adminUserEnabled"] is False
        assert registry["properties"]["anonymousPullEnabled"] is False


def test_compute_cluster_scales_to_zero_under_its_own_identity(files: dict[str, Any]) -> None:
    computes = resources_of_type(files, "Microsoft.MachineLearningServices/workspaces/computes")
    for compute in computes:
        assert compute["properties"]["computeType"] == "AmlCompute"
        assert compute["properties"]["properties"]["scaleSettings"]["minNodeCount"] == 0
        assert compute["identity"]["type"] == "SystemAssigned"
        assert compute["properties"]["disableLocalAuth"] is True


def test_workspace_and_registry_have_system_assigned_identities(files: dict[str, Any]) -> None:
    for workspace in resources_of_type(files, "Microsoft.MachineLearningServices/workspaces"):
        assert workspace["identity"]["type"] == "SystemAssigned"
        # the storage account refuses shared keys, so the default datastores use identities
        assert workspace["properties"]["systemDatastoresAuthMode"] == "Identity"
    for registry in resources_of_type(files, "Microsoft.MachineLearningServices/registries"):
        assert registry["identity"]["type"] == "SystemAssigned"


def test_workspace_dependencies_send_logs_to_log_analytics(files: dict[str, Any]) -> None:
    scoped = {
        f"{path}:{body(resource)['scope']}"
        for path, parsed_file in bicep_files(files).items()
        for resource in parsed_file.get("resources", {}).values()
        if resource["type"] == "Microsoft.Insights/diagnosticSettings"
    }
    for expected in (
        "modules/workspace.bicep:workspace",
        "modules/storage.bicep:blobService",
        "modules/key-vault.bicep:keyVault",
        "modules/container-registry.bicep:containerRegistry",
    ):
        assert expected in scoped


def test_workspace_identity_is_granted_the_shared_registry_in_its_resource_group(
    files: dict[str, Any],
) -> None:
    access = body(files["main.bicep"]["modules"]["registryAccess"])
    scope = access["scope"]["function"]
    assert scope["type"] == "resource_group"
    assert scope["parameters"] == {
        "resource_group_name": "registryResourceGroup",
        "subscription_id": "registrySubscriptionId",
    }
    assert files["main.bicep"]["modules"]["registryAccess"]["detail"]["path"] == (
        "modules/registry-access.bicep"
    )


# --- parameter files match environments.yaml ---------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_parameter_file_names_the_environment_as_environments_yaml_does(
    files: dict[str, Any], topology: dict[str, Any], environment: str
) -> None:
    parameter_file = files[f"parameters/{environment}.bicepparam"]
    params = parameter_file["parameters"]
    expected = topology["environments"][environment]
    shared = topology["shared_registry"]
    assert parameter_file["using"] == "../main.bicep"
    assert params["environmentName"] == environment
    assert params["workspaceName"] == expected["workspace"]
    assert params["resourceGroupName"] == expected["resource_group"]
    assert params["location"] == expected["location"]
    assert params["computeName"] == expected["compute"]
    assert params["registryName"] == shared["name"]
    assert params["registryResourceGroup"] == shared["resource_group"]
    # test and prod endpoints serve registry models under their own identity; dev has none
    assert params["deployEndpointIdentity"] is (environment in ("test", "prod"))


def test_shared_parameter_file_names_the_registry_as_environments_yaml_does(
    files: dict[str, Any], topology: dict[str, Any]
) -> None:
    parameter_file = files["parameters/shared.bicepparam"]
    shared = topology["shared_registry"]
    assert parameter_file["using"] == "../shared.bicep"
    assert parameter_file["parameters"]["registryName"] == shared["name"]
    assert parameter_file["parameters"]["resourceGroupName"] == shared["resource_group"]
    assert parameter_file["parameters"]["location"] == shared["location"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_topologys_endpoint_identity_is_the_one_the_environments_bicep_creates(
    files: dict[str, Any], topology: dict[str, Any], environment: str
) -> None:
    params = files[f"parameters/{environment}.bicepparam"]["parameters"]
    names = main_template_names(files["main.bicep"], files, params)
    spec = topology["environments"][environment]
    if not params["deployEndpointIdentity"]:
        assert "endpoint_identity" not in spec, f"{environment}'s Bicep creates no identity"
        return
    expected = (
        f"/subscriptions/{spec['subscription_id']}/resourceGroups/{spec['resource_group']}"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
        f"{names['modules/endpoint-identity.bicep:endpointIdentity']}"
    )
    assert spec["endpoint_identity"] == expected


def test_the_endpoint_identity_gets_what_azure_ml_documents_for_serving_from_the_registry(
    files: dict[str, Any],
) -> None:
    """AcrPull + blob read on the workspace's registry and storage (automatic only for a
    system-assigned identity), blob write where the data collector writes, AzureML Registry
    User on the shared registry, and AcrPull + blob read on the registry's own storage and
    registry (at its subscription: they sit in a resource group Azure manages)."""
    roles = {
        "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
        "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
        "1823dd4f-9b8c-4ab6-ab4e-7397a3684615": "AzureML Registry User",
    }
    granted = set()
    for path in (
        "modules/workspace-role-assignments.bicep",
        "modules/registry-access.bicep",
        "modules/registry-subscription-access.bicep",
    ):
        parsed_file = files[path]
        variables = parsed_file.get("variables", {})
        for resource in parsed_file.get("resources", {}).values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = body(resource)
            if config["properties"]["principalId"] != "endpointPrincipalId":
                continue
            role_call = variables[config["properties"]["roleDefinitionId"]]["value"]["function"]
            guid = next(v for v in role_call["parameters"].values() if v in roles)
            granted.add((path, roles[guid], config.get("scope", "subscription")))
    assert granted == {
        ("modules/workspace-role-assignments.bicep", "AcrPull", "containerRegistry"),
        ("modules/workspace-role-assignments.bicep", "Storage Blob Data Contributor", "storage"),
        ("modules/registry-access.bicep", "AzureML Registry User", "registry"),
        ("modules/registry-subscription-access.bicep", "AcrPull", "subscription"),
        ("modules/registry-subscription-access.bicep", "Storage Blob Data Reader", "subscription"),
    }
    access = body(files["main.bicep"]["modules"]["registrySubscriptionAccess"])
    assert access["scope"]["function"] == {
        "type": "subscription",
        "parameters": {"subscription_id": "registrySubscriptionId"},
    }


@pytest.mark.parametrize("name", [*ENVIRONMENTS, "shared"])
def test_parameter_file_sets_only_declared_parameters_and_every_required_one(
    files: dict[str, Any], name: str
) -> None:
    parameter_file = files[f"parameters/{name}.bicepparam"]
    template = files[posixpath.normpath(posixpath.join("parameters", parameter_file["using"]))]
    declared = template["parameters"]
    given = set(parameter_file["parameters"])
    assert given <= set(declared), f"undeclared: {given - set(declared)}"
    required = {param for param, spec in declared.items() if "default" not in spec}
    assert required <= given, f"missing: {required - given}"


# --- the orchestration: what flow runs run on in Azure ------------------------------------

# Actions and notActions of every built-in role infra/ grants, as Azure documents them
# (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles and its category
# pages: containers, storage, ai-machine-learning, monitor, identity, security). Data actions are
# left out: none of them can create resources or assign roles.
BUILT_IN_ROLES: dict[str, tuple[str, list[str], list[str]]] = {
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": (
        "AcrPull",
        ["Microsoft.ContainerRegistry/registries/pull/read"],
        [],
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": (
        "Storage Blob Data Contributor",
        [
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        [],
    ),
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": (
        "Storage Blob Data Reader",
        [
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        [],
    ),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", [], []),
    "1823dd4f-9b8c-4ab6-ab4e-7397a3684615": (
        "AzureML Registry User",
        [
            "Microsoft.MachineLearningServices/registries/read",
            "Microsoft.MachineLearningServices/registries/assets/*",
        ],
        [],
    ),
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": (
        "AzureML Data Scientist",
        [
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/*/action",
            "Microsoft.MachineLearningServices/workspaces/*/delete",
            "Microsoft.MachineLearningServices/workspaces/*/write",
        ],
        [
            "Microsoft.MachineLearningServices/workspaces/delete",
            "Microsoft.MachineLearningServices/workspaces/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
            "Microsoft.MachineLearningServices/workspaces/computes/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/hubs/write",
            "Microsoft.MachineLearningServices/workspaces/hubs/delete",
            "Microsoft.MachineLearningServices/workspaces/featurestores/write",
            "Microsoft.MachineLearningServices/workspaces/featurestores/delete",
        ],
    ),
    "43d0d8ad-25c7-4714-9337-8ba259a9fe05": (
        "Monitoring Reader",
        ["*/read", "Microsoft.OperationalInsights/workspaces/search/action", "Microsoft.Support/*"],
        [],
    ),
    "f1a07417-d97a-45cb-824c-7a7467783830": (
        "Managed Identity Operator",
        [
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ],
        [],
    ),
}
ASSIGN_ROLES = "Microsoft.Authorization/roleAssignments/write"
CREATE_CONTAINER_GROUPS = "Microsoft.ContainerInstance/containerGroups/write"
# the principal parameters through which the two orchestration identities are granted roles
FLOWS_IDENTITY = {
    ("modules/flow-run-access.bicep", "flowsPrincipalId"),
    ("modules/flows-access.bicep", "flowsPrincipalId"),
}
WORKER_IDENTITY = {("modules/flow-run-access.bicep", "workerPrincipalId")}


def accessor(value: Any) -> str:
    """`a.b.c` for a parsed property access, the text itself for a symbol."""
    if isinstance(value, str):
        return value
    operands = value["operator"]["operands"]
    return f"{accessor(operands['operand_1'])}.{accessor(operands['operand_2'])}"


def custom_roles(files: dict[str, Any]) -> dict[str, tuple[str, list[str], list[str]]]:
    """The custom role definitions in infra/, by the variable that names them."""
    found = {}
    for parsed_file in bicep_files(files).values():
        for resource in parsed_file.get("resources", {}).values():
            if resource["type"] == "Microsoft.Authorization/roleDefinitions":
                config = body(resource)
                (permissions,) = config["properties"]["permissions"]
                found[config["name"]] = (
                    config["properties"]["roleName"],
                    permissions["actions"],
                    permissions.get("notActions", []),
                )
    return found


def grants(files: dict[str, Any]) -> dict[tuple[str, str], list[tuple[str, list, list, str]]]:
    """(file, principal parameter) -> [(role name, actions, notActions, scope)] for every role
    assignment in infra/; a role the tables do not know fails the test that asks."""
    # a custom role reaches a module as a parameter named like shared.bicep's variable
    custom_by_param = custom_roles(files)
    found: dict[tuple[str, str], list[tuple[str, list, list, str]]] = {}
    for path, parsed_file in bicep_files(files).items():
        variables = parsed_file.get("variables", {})
        for resource in parsed_file.get("resources", {}).values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = body(resource)
            role_call = variables[config["properties"]["roleDefinitionId"]]["value"]["function"]
            role_id = role_call["parameters"]["resource_name_1"]
            role = BUILT_IN_ROLES.get(role_id) or custom_by_param.get(role_id)
            assert role is not None, f"{path}: role {role_id} is in neither table"
            principal = config["properties"]["principalId"]
            scope = config.get("scope", parsed_file["globals"]["scope"]["value"])
            found.setdefault((path, principal), []).append((*role, scope))
    return found


def allows(actions: list[str], not_actions: list[str], operation: str) -> bool:
    """Azure RBAC's rule for one role: some action matches and no notAction does. A `*`
    stands for any characters, and a `/*/` segment for none too: Managed Identity Operator's
    `userAssignedIdentities/*/assign/action` is what grants `userAssignedIdentities/assign/action`.
    """

    def matches(pattern: str) -> bool:
        return any(
            fnmatch.fnmatchcase(operation.lower(), candidate.lower())
            for candidate in (pattern, pattern.replace("/*/", "/"))
        )

    return any(map(matches, actions)) and not any(map(matches, not_actions))


def test_shared_parameter_file_names_the_orchestration_as_environments_yaml_does(
    files: dict[str, Any], topology: dict[str, Any]
) -> None:
    params = files["parameters/shared.bicepparam"]["parameters"]
    orchestration = topology["orchestration"]
    flows_identity = orchestration["flows_identity"].split("/")
    assert params["resourceGroupName"] == orchestration["resource_group"]
    assert params["location"] == orchestration["location"]
    assert params["containerRegistryName"] == orchestration["container_registry"]
    assert params["flowsStorageAccountName"] == orchestration["storage_account"]
    assert params["resultsContainerName"] == orchestration["results_container"]
    assert params["auditContainerName"] == orchestration["audit_container"]
    assert params["flowsIdentityName"] == flows_identity[-1]
    assert flows_identity[2] == orchestration["subscription_id"]
    assert flows_identity[4] == orchestration["resource_group"]
    assert flows_identity[6:8] == ["Microsoft.ManagedIdentity", "userAssignedIdentities"]
    assert params["workerIdentityName"] != params["flowsIdentityName"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_environment_grants_the_flows_identity_the_topology_names(
    files: dict[str, Any], topology: dict[str, Any], environment: str
) -> None:
    params = files[f"parameters/{environment}.bicepparam"]["parameters"]
    orchestration = topology["orchestration"]
    assert params["orchestrationResourceGroup"] == orchestration["resource_group"]
    assert params["flowsIdentityName"] == orchestration["flows_identity"].rsplit("/", 1)[-1]
    main = files["main.bicep"]
    identity = main["resources"]["flowsIdentity"]
    assert identity["existing"] and body(identity)["name"] == "flowsIdentityName"
    assert body(identity)["scope"]["function"] == {
        "type": "resource_group",
        "parameters": {
            "resource_group_name": "orchestrationResourceGroup",
            "subscription_id": "orchestrationSubscriptionId",
        },
    }
    access = body(main["modules"]["flowsAccess"])
    assert accessor(access["params"]["flowsPrincipalId"]) == "flowsIdentity.properties.principalId"
    shared_access = body(files["shared.bicep"]["modules"]["flowRunAccess"])["params"]
    assert (
        accessor(shared_access["flowsPrincipalId"]) == "flowRunIdentities.outputs.flowsPrincipalId"
    )
    assert accessor(shared_access["workerPrincipalId"]) == (
        "flowRunIdentities.outputs.workerPrincipalId"
    )


def test_the_flows_storage_takes_only_entra_id_and_its_containers_are_private(
    files: dict[str, Any],
) -> None:
    flows_storage = files["modules/flows-storage.bicep"]["resources"]
    properties = body(flows_storage["storage"])["properties"]
    assert properties["allowSharedKeyAccess"] is False  # no account keys, so no SAS either
    assert properties["defaultToOAuthAuthentication"] is True
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["allowBlobPublicAccess"] is False
    for container in ("resultsContainer", "auditContainer"):
        assert body(flows_storage[container])["parent"] == "blobService"
        assert body(flows_storage[container])["properties"]["publicAccess"] == "None"
    assert body(flows_storage["blobService"])["name"] == "default"


def test_the_audit_container_is_write_once_with_protected_append_writes(
    files: dict[str, Any],
) -> None:
    flows_storage = files["modules/flows-storage.bicep"]
    policies = [
        body(resource)
        for resource in flows_storage["resources"].values()
        if resource["type"].endswith("/containers/immutabilityPolicies")
    ]
    assert len(policies) == 1
    (policy,) = policies
    assert policy["parent"] == "auditContainer" and policy["name"] == "default"
    assert policy["properties"]["allowProtectedAppendWrites"] is True  # the log grows by appends
    assert policy["properties"]["immutabilityPeriodSinceCreationInDays"] == "auditRetentionDays"
    # the period comes from the parameter file, and it is years, not days
    shared_params = files["parameters/shared.bicepparam"]["parameters"]
    assert shared_params["auditRetentionDays"] >= 365
    passed = body(files["shared.bicep"]["modules"]["flowsStorage"])["params"]
    assert passed["auditRetentionDays"] == "auditRetentionDays"
    assert passed["auditContainerName"] == "auditContainerName"


def test_the_flows_identity_can_neither_assign_roles_nor_create_container_groups(
    files: dict[str, Any],
) -> None:
    granted = grants(files)
    flows_roles = [role for key in FLOWS_IDENTITY for role in granted[key]]
    assert {name for name, *_ in flows_roles} == {
        "AcrPull",
        "Storage Blob Data Contributor",
        "AzureML Registry User",
        "AzureML Data Scientist",
        "Monitoring Reader",
        "Managed Identity Operator",
    }
    for name, actions, not_actions, scope in flows_roles:
        assert not allows(actions, not_actions, ASSIGN_ROLES), f"{name} on {scope}"
        assert not allows(actions, not_actions, CREATE_CONTAINER_GROUPS), f"{name} on {scope}"
    # blob data on the two containers, not on the whole flows storage account
    blob_scopes = {
        scope
        for name, *_, scope in granted[("modules/flow-run-access.bicep", "flowsPrincipalId")]
        if name == "Storage Blob Data Contributor"
    }
    assert blob_scopes == {"resultsContainer", "auditContainer"}


def test_only_the_worker_identity_can_create_container_groups_and_none_can_assign_roles(
    files: dict[str, Any],
) -> None:
    granted = grants(files)
    creators = set()
    for principal, roles in granted.items():
        for name, actions, not_actions, scope in roles:
            assert not allows(actions, not_actions, ASSIGN_ROLES), f"{principal}: {name}"
            if allows(actions, not_actions, CREATE_CONTAINER_GROUPS):
                creators.add((principal, scope))
    assert creators == {(next(iter(WORKER_IDENTITY)), "resourceGroup")}
    worker_roles = granted[next(iter(WORKER_IDENTITY))]
    for operation, on in (
        ("Microsoft.Resources/deployments/write", "resourceGroup"),
        ("Microsoft.ContainerInstance/containerGroups/delete", "resourceGroup"),
        ("Microsoft.ContainerInstance/containerGroups/containers/logs/read", "resourceGroup"),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", "flowsIdentity"),
    ):
        assert any(
            allows(actions, not_actions, operation) and scope == on
            for _, actions, not_actions, scope in worker_roles
        ), operation
    # the worker touches no data and no Azure ML
    for operation in (
        "Microsoft.Storage/storageAccounts/blobServices/containers/read",
        "Microsoft.MachineLearningServices/workspaces/jobs/write",
        "Microsoft.ContainerRegistry/registries/pull/read",
    ):
        assert not any(allows(a, n, operation) for _, a, n, _ in worker_roles), operation


# --- the compiled-template fixtures stay in step with the Bicep ---------------------------

BICEP_FIXTURES = ROOT / "tests" / "azure" / "fixtures" / "bicep"


def bicep_resource_types(files: dict[str, Any], path: str) -> list[str]:
    """Every resource type a Bicep file deploys, its modules' included (each module once per
    use), in no particular order."""
    parsed_file = files[path]
    types = [
        resource["type"]
        for resource in parsed_file.get("resources", {}).values()
        if not resource.get("existing")
    ]
    for module in parsed_file.get("modules", {}).values():
        module_path = posixpath.normpath(
            posixpath.join(posixpath.dirname(path), module["detail"]["path"])
        )
        types += bicep_resource_types(files, module_path)
    return sorted(types)


def template_resource_types(template: dict[str, Any]) -> list[str]:
    types = []
    for resource in template.get("resources", []):
        if resource["type"] == "Microsoft.Resources/deployments":
            types += template_resource_types(resource["properties"]["template"])
        else:
            types.append(resource["type"])
    return sorted(types)


def nested_parameters(template: dict[str, Any]) -> dict[str, set[str]]:
    """Nested deployment name expression -> the parameters its inner template declares."""
    return {
        resource["name"]: set(resource["properties"]["template"]["parameters"])
        for resource in template.get("resources", [])
        if resource["type"] == "Microsoft.Resources/deployments"
    }


@pytest.mark.parametrize("name", ["main", "shared"])
def test_the_compiled_fixture_deploys_what_the_bicep_declares(
    files: dict[str, Any], name: str
) -> None:
    """tests/azure/fixtures/bicep/<name>.json is written by hand in `bicep build`'s shape (no
    Bicep CLI here): the same parameters, modules and resource types as infra/<name>.bicep."""
    compiled = json.loads((BICEP_FIXTURES / f"{name}.json").read_text())
    parsed_file = files[f"{name}.bicep"]
    assert set(compiled["parameters"]) == set(parsed_file["parameters"])
    assert template_resource_types(compiled) == bicep_resource_types(files, f"{name}.bicep")
    nested = nested_parameters(compiled)
    assert len(nested) == len(parsed_file.get("modules", {}))
    for module in parsed_file["modules"].values():
        declared = set(files[module["detail"]["path"]]["parameters"])
        assert declared in nested.values(), f"no nested deployment of {module['detail']['path']}"
