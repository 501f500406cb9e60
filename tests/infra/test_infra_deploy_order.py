"""The deployment works on an empty subscription and on every redeploy (issue 19): nothing refers
to a resource that an `if` condition may leave out, unless the reference carries that condition
too, and every `existing` reference names something this deployment creates first or a
documented prerequisite. The graph and its rules are in deploy_graph.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.deploy_graph import PREREQUISITES, DeploymentGraph, NodeId, Prerequisite
from tests.infra.infra_model import MAIN


@pytest.fixture(scope="module")
def graph() -> DeploymentGraph:
    return DeploymentGraph.build(MAIN)


def test_the_graph_covers_main_and_every_module(graph: DeploymentGraph) -> None:
    modules = {path.split("/")[-1] for path in graph.instances if path != "main"}
    assert modules == {
        "identity",
        "monitoring",
        "storage",
        "keyVault",
        "appRoles",
        "operatorRoles",
        "functionApp",
        "alerts",
    }
    kinds = {node.kind for node in graph.nodes.values()}
    assert kinds == {"resource", "existing", "module", "output"}
    vias = {edge.via for edge in graph.edges}
    assert {"parent", "scope", "dependsOn", "property", "param", "output", "resourceId"} <= vias


def test_nothing_refers_to_a_resource_a_condition_may_leave_out(graph: DeploymentGraph) -> None:
    problems = graph.uncovered()
    assert not problems, "\n".join(problems)


def test_existing_references_name_this_deployment_or_a_documented_prerequisite(
    graph: DeploymentGraph,
) -> None:
    assert not graph.unresolved_existing(), "\n".join(graph.unresolved_existing())
    used = {target for target in graph.existing.values() if isinstance(target, Prerequisite)}
    assert used <= set(PREREQUISITES)
    # The one resource the code deployment makes, not the Bicep: the health function.
    assert {p.name for p in used} == {"'health'"}


def test_existing_references_wait_for_the_module_that_creates_them(graph: DeploymentGraph) -> None:
    problems = graph.existing_out_of_order()
    assert not problems, "\n".join(problems)


def test_the_key_vault_secrets_are_optional_and_nothing_refers_to_them(
    graph: DeploymentGraph,
) -> None:
    secrets = [
        node
        for node in graph.nodes.values()
        if node.kind == "resource" and node.type == "Microsoft.KeyVault/vaults/secrets"
    ]
    assert len(secrets) == 4
    for secret in secrets:
        # Written only when a value is passed, so a redeploy never overwrites a real one...
        assert secret.conditions, f"{secret.id} must be conditional on a value"
        # ...and so nothing may need it: no role on it, no output of it, no existing of it.
        referrers = [e for e in graph.edges if e.target == secret.id and e.source != secret.id]
        assert all(e.via == "dependsOn" for e in referrers), referrers


def test_the_app_may_write_the_refresh_token_on_the_first_deployment(
    graph: DeploymentGraph,
) -> None:
    # shared/secrets.py saves each rotated refresh token as a new version: Key Vault Secrets
    # Officer, scoped to the vault (which always exists), never to the optional secret.
    writer = graph.nodes[NodeId("main/appRoles", "refreshTokenWriter")]
    assert writer.conditions == frozenset()
    scopes = [e.target for e in graph.edges if e.source == writer.id and e.via == "scope"]
    assert scopes == [NodeId("main/keyVault", "vault")]


# --- the model itself, on small deployments ------------------------------------------------------


def _deployment(tmp_path: Path, main: str, **modules: str) -> DeploymentGraph:
    (tmp_path / "modules").mkdir(parents=True)
    for name, text in modules.items():
        (tmp_path / "modules" / f"{name}.bicep").write_text(text)
    path = tmp_path / "main.bicep"
    path.write_text(main)
    return DeploymentGraph.build(path)


VAULT = """
param name string
@secure()
param token string = ''
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: 'westeurope'
  properties: {}
}
resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(token)) {
  parent: vault
  name: 'refresh-token'
  properties: {
    value: token
  }
}
output name string = vault.name
"""
ROLES = """
param vaultName string
param principalId string
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}
resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'refresh-token'
}
resource writer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, principalId)
  scope: secret
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'x')
  }
}
"""
MAIN_TEMPLATE = """
targetScope = 'resourceGroup'
@secure()
param token string = ''
param principalId string
var vaultName = 'kv-test'
module vault 'modules/vault.bicep' = {
  name: 'vault'
  params: {
    name: vaultName
    token: token
  }
}
module roles 'modules/roles.bicep' = __CONDITION__{
  name: 'roles'
  params: {
    vaultName: __VAULT_NAME__
    principalId: principalId
  }
}
"""


NO_ROLES = "param vaultName string\nparam principalId string\n"


def _main(condition: str = "", vault_name: str = "vault.outputs.name") -> str:
    return MAIN_TEMPLATE.replace("__CONDITION__", condition).replace("__VAULT_NAME__", vault_name)


def test_the_model_reports_a_role_on_a_secret_a_condition_may_leave_out(tmp_path: Path) -> None:
    # The bug of issue 19: the secret exists only if a value is passed, the role always.
    graph = _deployment(tmp_path, _main(), vault=VAULT, roles=ROLES)
    assert graph.existing[NodeId("main/roles", "secret")] == NodeId("main/vault", "secret")
    problems = graph.uncovered()
    assert any("main/roles:writer" in p and "via scope" in p for p in problems), problems
    assert all("not(empty(token))" in p for p in problems)


def test_the_model_accepts_a_reference_under_the_same_condition(tmp_path: Path) -> None:
    graph = _deployment(tmp_path, _main("if (!empty(token)) "), vault=VAULT, roles=ROLES)
    assert graph.uncovered() == []


def test_the_model_follows_ternary_guards_and_ignores_depends_on(tmp_path: Path) -> None:
    # Parenthesised: pycep reads `!a ? b : c` as `!(a ? b : c)`.
    guarded = (
        VAULT + "output secretUri string = (!empty(token)) ? secret.properties.secretUri : ''\n"
    )
    depends = VAULT.replace(
        "output name string = vault.name",
        "resource other 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'b'\n"
        "  location: 'westeurope'\n  dependsOn: [\n    secret\n  ]\n}\n"
        "output name string = vault.name",
    )
    for vault in (guarded, depends):
        graph = _deployment(tmp_path / str(len(vault)), _main(), vault=vault, roles=NO_ROLES)
        assert graph.uncovered() == [], vault
    unguarded = VAULT + "output secretUri string = secret.properties.secretUri\n"
    graph = _deployment(tmp_path / "unguarded", _main(), vault=unguarded, roles=NO_ROLES)
    [problem] = graph.uncovered()
    assert "output secretUri" in problem


def test_the_model_reports_an_existing_nothing_creates(tmp_path: Path) -> None:
    roles = ROLES.replace("name: 'refresh-token'", "name: 'typo'")
    graph = _deployment(tmp_path, _main(), vault=VAULT, roles=roles)
    [problem] = graph.unresolved_existing()
    assert "main/roles:secret" in problem and "'typo'" in problem


def test_the_model_reports_an_existing_named_without_waiting_for_its_creator(
    tmp_path: Path,
) -> None:
    # The vault's name as a plain variable: nothing makes `roles` wait for `vault`.
    roles = ROLES.replace("scope: secret", "scope: vault").replace("secret.id", "vault.id")
    graph = _deployment(tmp_path, _main(vault_name="vaultName"), vault=VAULT, roles=roles)
    problems = graph.existing_out_of_order()
    assert any(p.startswith("main/roles:vault resolves to main/vault:vault") for p in problems)
