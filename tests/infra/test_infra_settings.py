"""Every setting the app and its bindings read is set in Azure, the way Flex Consumption allows."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest

from shared.settings import (
    STORAGE_IDENTITY_SETTINGS,
    ConflictPolicy,
    Settings,
    load_settings,
    setting_names,
)
from tests.infra.infra_model import (
    INFRA,
    MAIN,
    REPO,
    app_settings,
    bicep_files,
    body,
    interpolated,
    key_vault_reference,
    module_path,
    parse,
    property_path,
    read_parameters,
    resources_of_type,
    walk_strings,
)

Functions = dict[str, list[dict[str, Any]]]

# Settings Flex Consumption rejects or ignores (reference §6.1, "Flex Consumption plan
# deprecations"); the runtime and package location live in functionAppConfig instead.
FLEX_REJECTED = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE",
    "TZ",
}
# The local connection string alternative: shared keys are off in Azure, so it must not be set.
LOCAL_ONLY = "AzureWebJobsStorage"
# SPEC 6: the Partner Center credentials are Key Vault references in Azure.
KEY_VAULT_SETTINGS = {
    "PARTNER_CENTER_TENANT_ID",
    "PARTNER_CENTER_CLIENT_ID",
    "PARTNER_CENTER_CLIENT_SECRET",
    "PARTNER_CENTER_REFRESH_TOKEN",
}
# Which identity-based service URI a storage binding needs (reference §1.5).
SERVICE_OF_BINDING = {
    "queueTrigger": "queueServiceUri",
    "queue": "queueServiceUri",
    "table": "tableServiceUri",
    "blobTrigger": "blobServiceUri",
    "blob": "blobServiceUri",
}
DEPLOY_DOC = REPO / "docs" / "deploy.md"


def _optional_settings_in_docs() -> set[str]:
    """Setting names listed under the "Optional settings" heading of docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    match = re.search(r"^#+ Optional settings\s*$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, "docs/deploy.md needs an 'Optional settings' section"
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", match.group(1)))


def test_every_setting_the_app_reads_is_set_in_bicep_or_documented_as_optional() -> None:
    in_bicep = set(app_settings())
    optional = _optional_settings_in_docs()
    for name in setting_names():
        if name in in_bicep:
            continue
        assert name in optional, f"{name} is neither set in main.bicep nor documented optional"
        # Only a setting with a default may be left out; a required one would fail start-up.
        field = next(f for n, f in Settings.model_fields.items() if (f.alias or n) == name)
        assert not field.is_required(), f"{name} is required by the app but not set in Bicep"


def test_local_connection_string_is_not_set_in_azure() -> None:
    assert LOCAL_ONLY not in app_settings()
    for path in [*bicep_files(), *INFRA.glob("*.json")]:
        text = path.read_text()
        assert "UseDevelopmentStorage" not in text, path
        assert "AccountKey=" not in text, path
        assert "listKeys(" not in text, path


def test_storage_identity_settings_use_the_managed_identity() -> None:
    settings = app_settings()
    for name in [*STORAGE_IDENTITY_SETTINGS, "AzureWebJobsStorage__blobServiceUri"]:
        assert name in settings, f"{name} missing from main.bicep"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    client_id = property_path(settings["AzureWebJobsStorage__clientId"])
    assert client_id == ["identity", "outputs", "clientId"]
    for service in ("blob", "queue", "table"):
        uri = property_path(settings[f"AzureWebJobsStorage__{service}ServiceUri"])
        assert uri == ["storage", "outputs", f"{service}Endpoint"]


def _connections(functions: Functions) -> dict[str, set[str]]:
    """connection prefix -> the service URIs its bindings need."""
    needed: dict[str, set[str]] = {LOCAL_ONLY: {"blobServiceUri"}}  # host: keys, timer locks
    for bindings in functions.values():
        for binding in bindings:
            service = SERVICE_OF_BINDING.get(binding["type"])
            if service is None and "connection" not in binding:
                continue  # http, timer: no storage connection of their own
            # A storage binding without `connection` uses the host's AzureWebJobsStorage.
            prefix = binding.get("connection") or LOCAL_ONLY
            needed.setdefault(prefix, set())
            if service:
                needed[prefix].add(service)
    return needed


def test_every_binding_connection_has_its_identity_based_settings(
    declared_functions: Functions,
) -> None:
    settings = app_settings()
    for prefix, services in _connections(declared_functions).items():
        assert prefix not in settings, f"{prefix} must be identity-based, not a connection string"
        for suffix in ("credential", "clientId", *sorted(services)):
            assert f"{prefix}__{suffix}" in settings, f"{prefix}__{suffix} missing from main.bicep"
        assert settings[f"{prefix}__credential"] == "managedidentity"


def test_every_app_setting_a_binding_names_is_set(declared_functions: Functions) -> None:
    settings = app_settings()
    for function, bindings in declared_functions.items():
        for text in walk_strings(bindings):
            for name in re.findall(r"%([^%\s]+)%", text):
                assert name in settings, f"{function} uses %{name}% but main.bicep does not set it"


def test_no_setting_flex_consumption_rejects() -> None:
    assert not FLEX_REJECTED & set(app_settings())
    # Anywhere else, e.g. siteConfig.appSettings or a second config resource.
    for path in bicep_files():
        found = FLEX_REJECTED & set(walk_strings(parse(path)))
        assert not found, f"{path.name} sets {found}, which Flex Consumption rejects"


def test_webhook_signatures_are_verified_in_azure() -> None:
    assert app_settings()["WEBHOOK_SIGNATURE_MODE"] == "verify"


@pytest.mark.parametrize("name", sorted(KEY_VAULT_SETTINGS))
def test_partner_center_credentials_are_key_vault_references(name: str) -> None:
    main = parse(MAIN)
    value = app_settings()[name]
    assert isinstance(value, str)
    reference = key_vault_reference(interpolated(value, main["variables"]))
    assert reference, f"{name} must be a @Microsoft.KeyVault(...) reference"
    assert reference["VaultName"] == "${keyVault.outputs.name}"
    # The referenced secret is one the Key Vault module writes.
    vault = parse(module_path("keyVault"))
    written = {
        ".".join(property_path(body(secret)["name"]))
        for _, secret in resources_of_type(vault, "Microsoft.KeyVault/vaults/secrets")
    }
    names = main["variables"]["secretNames"]["value"]
    key = next(k for k, v in names.items() if v == reference["SecretName"])
    assert f"secretNames.{key}" in written
    assert body(main["modules"]["keyVault"])["params"]["secretNames"] == "secretNames"


def test_application_insights_uses_entra_auth() -> None:
    settings = app_settings()
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert auth == "ClientId=${identity.outputs.clientId};Authorization=AAD"
    tree = parse(module_path("monitoring"))
    [(_, component)] = resources_of_type(tree, "Microsoft.Insights/components")
    assert body(component)["properties"]["DisableLocalAuth"] is True


# Stand-ins for values only Azure knows at deploy time (endpoints, Key Vault references).
_DEPLOY_TIME = {
    "AzureWebJobsStorage__queueServiceUri": "https://example.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "https://example.table.core.windows.net",
    "AzureWebJobsStorage__blobServiceUri": "https://example.blob.core.windows.net",
    "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
    "PARTNER_CENTER_TENANT_ID": "00000000-0000-0000-0000-000000000002",
    "PARTNER_CENTER_CLIENT_ID": "00000000-0000-0000-0000-000000000003",
    "PARTNER_CENTER_CLIENT_SECRET": "not-a-secret",
    "PARTNER_CENTER_REFRESH_TOKEN": "not-a-token",
}


def _environment(overrides: dict[str, Any]) -> dict[str, str]:
    """The app settings main.bicep would produce, with parameter values from `overrides`."""
    parameters = parse(MAIN)["parameters"]
    values = {name: spec.get("default") for name, spec in parameters.items()}
    values.update(overrides)
    environ: dict[str, str] = {}
    for name, value in app_settings().items():
        if name in _DEPLOY_TIME:
            environ[name] = _DEPLOY_TIME[name]
        elif isinstance(value, dict) and value["operator"]["type"] == "conditional":
            operands = value["operator"]["operands"]
            chosen = values[operands["condition"]]
            environ[name] = operands["true_value" if chosen else "false_value"]
        elif isinstance(value, str) and value in parameters:
            environ[name] = str(values[value])
        elif isinstance(value, str) and "${" not in value:
            environ[name] = value
    return environ


@pytest.mark.parametrize(
    "path",
    [None, INFRA / "main.staging.parameters.json", INFRA / "main.production.parameters.json"],
    ids=["defaults", "staging", "production"],
)
def test_values_bicep_deploys_pass_the_apps_own_validation(path: Any) -> None:
    # A 5-field cron or a misspelt policy would otherwise surface only as a start-up failure.
    overrides = {"dataverseUrl": "https://contoso.crm.dynamics.com"}
    if path is not None:
        overrides.update({k: v["value"] for k, v in read_parameters(path).items()})
    settings = load_settings(_environment(overrides))
    assert settings.webhook_signature_mode == "verify"
    assert settings.storage_credential == "managedidentity"


def test_allowed_conflict_policies_are_the_apps() -> None:
    spec = parse(MAIN)["parameters"]["conflictPolicy"]
    allowed = next(d["argument"] for d in spec["decorators"] if d["type"] == "allowed")
    assert set(allowed) == set(get_args(ConflictPolicy))


def test_azure_identity_picks_the_user_assigned_identity() -> None:
    # The Dataverse client uses DefaultAzureCredential(); with no system-assigned identity its
    # managed-identity step needs AZURE_CLIENT_ID to know which identity to ask a token for.
    client_id = app_settings()["AZURE_CLIENT_ID"]
    assert property_path(client_id) == ["identity", "outputs", "clientId"]
    # EnvironmentCredential would take over (as another principal) if these were set.
    assert not {"AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_USERNAME"} & set(app_settings())
