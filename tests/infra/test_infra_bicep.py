"""The Bicep parses offline and its modules are wired together the way Flex Consumption needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lark.exceptions import LarkError
from pycep import BicepParser

from tests.infra.infra_model import (
    INFRA,
    MAIN,
    MODULES,
    app_settings,
    bicep_files,
    body,
    has_default,
    module_path,
    parse,
    property_path,
    resources_of_type,
)


def test_pycep_rejects_broken_bicep() -> None:
    # Guards the guard: if pycep accepted anything, "every file parses" would prove nothing.
    with pytest.raises((ValueError, LarkError)):
        BicepParser().parse(text="resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n")


def test_infra_has_main_and_small_modules() -> None:
    files = bicep_files()
    assert MAIN in files
    assert len([f for f in files if f.parent == MODULES]) >= 4


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"
    # pycep silently keeps only the last of several nested sibling resources; every resource
    # must reach the parsed tree, or the checks below would look at an incomplete template.
    declared = re.findall(r"^\s*resource\s+\w+\s+'", path.read_text(), re.M)
    assert len(declared) == len(tree.get("resources", {})), f"{path.name}: resources lost"


def test_modules_are_local_files_not_registry_modules() -> None:
    # Registry modules (br:, br/public:, ts:) need network access to restore; these must not.
    for name, module in parse(MAIN)["modules"].items():
        assert module["type"] == "local", f"module {name} is not a local file"
        assert module_path(name).is_file(), f"module {name}: {module['detail']['path']} missing"
    for path in bicep_files():
        assert "br/public:" not in path.read_text(), path


@pytest.mark.parametrize("name", sorted(parse(MAIN)["modules"]))
def test_module_params_match_the_module(name: str) -> None:
    # A renamed or dropped module parameter is a deployment error that pycep would not catch.
    declared = parse(module_path(name))["parameters"]
    passed = set(body(parse(MAIN)["modules"][name])["params"])
    assert passed <= set(declared), f"unknown params passed to {name}: {passed - set(declared)}"
    required = {p for p, spec in declared.items() if not has_default(spec)}
    assert required <= passed, f"required params of {name} not passed: {required - passed}"


def test_function_app_is_flex_consumption_python_311() -> None:
    tree = parse(module_path("functionApp"))
    [(_, plan)] = resources_of_type(tree, "Microsoft.Web/serverfarms")
    assert body(plan)["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    [(_, site)] = resources_of_type(tree, "Microsoft.Web/sites")
    properties = body(site)["properties"]
    config = properties["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert set(config["scaleAndConcurrency"]) >= {"maximumInstanceCount", "instanceMemoryMB"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_function_app_runs_as_the_user_assigned_identity() -> None:
    tree = parse(module_path("functionApp"))
    [(_, site)] = resources_of_type(tree, "Microsoft.Web/sites")
    config = body(site)
    assert config["identity"]["type"] == "UserAssigned"
    # pycep keeps the quotes of a quoted object key.
    assert list(config["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    # Key Vault references resolve with this identity (there is no system-assigned one).
    assert config["properties"]["keyVaultReferenceIdentity"] == "identityId"
    passed = body(parse(MAIN)["modules"]["functionApp"])["params"]
    assert property_path(passed["identityId"]) == ["identity", "outputs", "id"]


def test_the_app_settings_variable_is_what_the_function_app_gets() -> None:
    # Every settings check reads main.bicep's `appSettings`; make sure it is really applied.
    assert app_settings()
    passed = body(parse(MAIN)["modules"]["functionApp"])["params"]
    assert passed["appSettings"] == "appSettings"
    tree = parse(module_path("functionApp"))
    [(_, config)] = resources_of_type(tree, "Microsoft.Web/sites/config")
    assert body(config)["name"] == "appsettings"
    assert body(config)["properties"] == "appSettings"


def test_outputs_name_the_function_app_and_the_webhook_url(
    declared_functions: dict[str, list[dict[str, object]]],
) -> None:
    outputs = parse(MAIN)["outputs"]
    assert property_path(outputs["AZURE_FUNCTION_NAME"]["value"]) == [
        "functionApp",
        "outputs",
        "name",
    ]
    webhook = outputs["WEBHOOK_URL"]["value"]
    assert webhook == "https://${functionApp.outputs.defaultHostName}/api/webhooks/partner-center"
    # When the webhook function exists, the URL we hand out must be its route.
    routes = {
        binding.get("route")
        for bindings in declared_functions.values()
        for binding in bindings
        if binding["type"] == "httpTrigger"
    }
    if "partner_center_webhook" in declared_functions:
        assert "webhooks/partner-center" in routes, f"webhook route is not in {routes}"


def test_outputs_never_expose_a_secure_parameter() -> None:
    for path in bicep_files():
        tree = parse(path)
        secure = {
            name
            for name, spec in tree.get("parameters", {}).items()
            if any(d.get("type") == "secure" for d in spec.get("decorators", []))
        }
        for name, output in tree.get("outputs", {}).items():
            text = str(output["value"])
            assert not any(s in text for s in secure), f"{path.name}: output {name} leaks a secret"
