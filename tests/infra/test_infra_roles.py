"""The app's managed identity holds a role for each data plane it uses, and no other role."""

from __future__ import annotations

import re

from tests.infra.infra_model import (
    MAIN,
    app_settings,
    body,
    key_vault_reference,
    module_path,
    parse,
    property_path,
    resources_of_type,
    role_assignments,
)

STORAGE = "Microsoft.Storage/storageAccounts"
APP_INSIGHTS = "Microsoft.Insights/components"
KEY_VAULT = "Microsoft.KeyVault/vaults"
PRINCIPAL = ("principalId",)

# Exactly what the app needs (reference §1.5): blob for host keys, timer locks and the Flex
# package; queue incl. creating/writing the poison queue; tables for state and host diagnostics;
# telemetry with Entra auth; reading the Partner Center secrets.
EXPECTED = {
    (STORAGE, "Storage Blob Data Owner", PRINCIPAL),
    (STORAGE, "Storage Queue Data Contributor", PRINCIPAL),
    (STORAGE, "Storage Table Data Contributor", PRINCIPAL),
    (APP_INSIGHTS, "Monitoring Metrics Publisher", PRINCIPAL),
    (KEY_VAULT, "Key Vault Secrets User", PRINCIPAL),
    # Saving the rotated refresh token (SPEC 6). On the vault: a secret exists only once a value
    # is given, so a role on it fails the first deployment (test_infra_deploy_order.py); an
    # optional ABAC condition limits the writes to that secret (test below).
    (KEY_VAULT, "Key Vault Secrets Officer", PRINCIPAL),
}


def _app_roles() -> set[tuple[str, str, tuple[str, ...]]]:
    return role_assignments(parse(module_path("appRoles")))


def test_app_identity_has_exactly_the_roles_it_needs() -> None:
    assert _app_roles() == EXPECTED


def test_roles_are_granted_to_the_apps_identity() -> None:
    passed = body(parse(MAIN)["modules"]["appRoles"])["params"]
    assert property_path(passed["principalId"]) == ["identity", "outputs", "principalId"]


def test_each_data_plane_the_app_uses_has_a_role() -> None:
    settings = app_settings()
    granted = {(scope, role) for scope, role, _ in _app_roles()}
    needs: list[tuple[str, str, str]] = []
    for service, role in (
        ("blob", "Storage Blob Data Owner"),
        ("queue", "Storage Queue Data Contributor"),
        ("table", "Storage Table Data Contributor"),
    ):
        if f"AzureWebJobsStorage__{service}ServiceUri" in settings:
            needs.append((f"{service} storage", STORAGE, role))
    if "Authorization=AAD" in str(settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")):
        needs.append(("telemetry", APP_INSIGHTS, "Monitoring Metrics Publisher"))
    if any(isinstance(v, str) and key_vault_reference(v) for v in settings.values()):
        needs.append(("Key Vault references", KEY_VAULT, "Key Vault Secrets User"))
    assert len(needs) == 5, "the app uses blob, queue, table, monitoring and Key Vault"
    for what, scope, role in needs:
        assert (scope, role) in granted, f"{what}: no {role} on {scope}"


def test_role_assignments_target_a_service_principal_with_stable_names() -> None:
    tree = parse(module_path("appRoles"))
    for _, assignment in tree["resources"].items():
        if assignment["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = body(assignment)
        assert config["properties"]["principalType"] == "ServicePrincipal"
        # guid(scope, principal, role) keeps re-deployments idempotent.
        assert config["name"]["function"]["type"] == "guid"


def test_operator_roles_are_optional_and_separate() -> None:
    operator = parse(MAIN)["modules"]["operatorRoles"]
    assert "condition" in operator["config"], "operator roles must be skippable"
    roles = {role for _, role, _ in role_assignments(parse(module_path("operatorRoles")))}
    assert roles == {
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
        "Key Vault Secrets Officer",
    }


def test_key_vault_authorizes_with_rbac() -> None:
    # With access policies instead, the Key Vault Secrets User assignment would grant nothing.
    tree = parse(module_path("keyVault"))
    [(_, vault)] = resources_of_type(tree, KEY_VAULT)
    assert body(vault)["properties"]["enableRbacAuthorization"] is True


def test_the_optional_write_condition_allows_only_the_refresh_token() -> None:
    tree = parse(module_path("appRoles"))
    [writer] = [
        body(r)
        for _, r in resources_of_type(tree, "Microsoft.Authorization/roleAssignments")
        if "keyVaultSecretsOfficer" in str(body(r)["properties"]["roleDefinitionId"])
    ]
    properties = writer["properties"]
    switch = properties["condition"]["operator"]
    assert switch["type"] == "conditional"
    assert switch["operands"]["condition"] == "restrictSecretWrites"
    assert switch["operands"]["false_value"] is None  # off: no condition at all
    assert properties["conditionVersion"]["operator"]["operands"]["true_value"] == "2.0"
    passed = body(parse(MAIN)["modules"]["appRoles"])["params"]
    assert passed["restrictSecretWrites"] == "vaultAbacWriteCondition"
    assert passed["refreshTokenSecretName"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {"operand_1": "secretNames", "operand_2": "refreshToken"},
        }
    }
    # The condition as Key Vault will read it, for the refresh token's secret name.
    variables = tree["variables"]
    replace = variables["refreshTokenOnlyCondition"]["value"]["function"]
    assert replace["parameters"]["original_string"] == "refreshTokenOnlyConditionTemplate"
    name = parse(MAIN)["variables"]["secretNames"]["value"]["refreshToken"]
    text = variables["refreshTokenOnlyConditionTemplate"]["value"].replace(
        replace["parameters"]["old_string"], name
    )
    assert text.count("(") == text.count(")")
    blocks = [b for b in text.split("\nAND\n") if b.strip()]
    assert len(blocks) == 2
    # Every secret data action that Secrets Officer adds to Secrets User (rbac-abac reference),
    # each with the attribute Key Vault evaluates for it.
    by_request = {"setSecret/action", "restore/action"}
    by_resource = {
        "update/action",
        "rotate/action",
        "delete",
        "backup/action",
        "recover/action",
        "purge/action",
    }
    for block, actions, source in (
        (blocks[0], by_request, "Request"),
        (blocks[1], by_resource, "Resource"),
    ):
        found = set(
            re.findall(r"ActionMatches\{'Microsoft\.KeyVault/vaults/secrets/([^']+)'\}", block)
        )
        assert found == actions
        assert f"@{source}[Microsoft.KeyVault/vaults/secrets:name] StringEquals '{name}'" in block
        assert block.count("!(ActionMatches") == len(actions)
