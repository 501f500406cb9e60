"""Read the Bicep in infra/ (parsed offline by pycep-parser) into the few facts the tests check.

pycep turns a Bicep file into JSON: ``parameters``, ``variables``, ``resources`` (nested child
resources flattened as ``parent__child`` with their full type), ``modules`` and ``outputs``.
Expressions become small trees; string literals, identifiers and interpolated strings all come
back as plain strings (``'sync-jobs'`` and ``queueName`` are both ``str``), so these helpers
resolve identifiers against the file's own variables where it matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"

# Built-in Azure role definition ids (identical in every tenant; reference §6.1).
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
ROLE_NAMES = {role_id: name for name, role_id in ROLE_IDS.items()}

Bicep = dict[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def _parser() -> BicepParser:
    return BicepParser()  # building the Lark parser costs more than parsing a file


@cache
def parse(path: Path) -> Bicep:
    """The pycep JSON of one file, parsed once per session."""
    return _parser().parse(file_path=path)


def has_default(parameter: dict[str, Any]) -> bool:
    """Whether a parsed parameter declares a default (pycep gives `default: None` when not)."""
    return parameter.get("default") is not None


def module_path(name: str) -> Path:
    """The file of module ``name`` declared in main.bicep."""
    module = parse(MAIN)["modules"][name]
    return (MAIN.parent / module["detail"]["path"]).resolve()


def body(resource_or_module: dict[str, Any]) -> dict[str, Any]:
    """The body of a declaration, looking through `if (...)` and `[for ...]` wrappers."""
    config = resource_or_module["config"]
    while isinstance(config.get("config"), dict) and (
        "condition" in config or "loop_type" in config
    ):
        config = config["config"]
    return config


def resources_of_type(tree: Bicep, resource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for symbol, resource in tree.get("resources", {}).items():
        if resource["type"].lower() == resource_type.lower():
            yield symbol, resource


def names_of(tree: Bicep, resource_type: str) -> set[str]:
    """Names of every resource of a type, expanding `[for x in someVar: {name: x}]` loops."""
    names: set[str] = set()
    variables = tree.get("variables", {})
    for _, resource in resources_of_type(tree, resource_type):
        config = resource["config"]
        loop = config.get("loop_type")
        if loop:
            item, array = loop["detail"]["item_name"], loop["detail"]["array_name"]
            assert body(resource)["name"] == item, f"loop over {array} must name each item"
            values = variables[array]["value"]
            assert isinstance(values, list), f"{array} must be a literal list"
            names.update(values)
        else:
            names.add(body(resource)["name"])
    return names


def app_settings() -> dict[str, Any]:
    """The app settings main.bicep gives the function app (its `appSettings` variable)."""
    value = parse(MAIN)["variables"]["appSettings"]["value"]
    assert isinstance(value, dict)
    return value


def walk_strings(node: Any) -> Iterator[str]:
    """Every key and string value anywhere in a parsed tree (comments are already gone)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif isinstance(node, str):
        yield node


def property_path(node: Any) -> list[str]:
    """`a.b.c` (a pycep property_accessor tree) as ['a', 'b', 'c']; a plain name as [name]."""
    if isinstance(node, str):
        return [node]
    operator = node.get("operator", {}) if isinstance(node, dict) else {}
    if operator.get("type") == "property_accessor":
        operands = operator["operands"]
        return property_path(operands["operand_1"]) + property_path(operands["operand_2"])
    raise AssertionError(f"not a property access: {node!r}")


def role_assignments(tree: Bicep) -> set[tuple[str, str, tuple[str, ...]]]:
    """(scope resource type, role name, principalId path) of each role assignment in a file."""
    found: set[tuple[str, str, tuple[str, ...]]] = set()
    variables = tree.get("variables", {})
    resources = tree.get("resources", {})
    for symbol, assignment in resources_of_type(tree, "Microsoft.Authorization/roleAssignments"):
        config = body(assignment)
        scope = resources[config["scope"]]["type"]
        role_ref = config["properties"]["roleDefinitionId"]["function"]
        assert role_ref["type"] == "subscription_resource_id", symbol
        var_name, key = property_path(role_ref["parameters"]["resource_name_1"])
        role_id = variables[var_name]["value"][key]
        principal = tuple(property_path(config["properties"]["principalId"]))
        found.add((scope, ROLE_NAMES.get(role_id, role_id), principal))
    return found


def key_vault_reference(value: str) -> dict[str, str] | None:
    """The parts of `@Microsoft.KeyVault(VaultName=...;SecretName=...)`, or None."""
    match = re.fullmatch(r"@Microsoft\.KeyVault\((.*)\)", value)
    if not match:
        return None
    return dict(part.split("=", 1) for part in match.group(1).split(";"))


def interpolated(value: str, variables: dict[str, Any]) -> str:
    """Resolve `${var.key}` of literal object variables in a string (others are left as is)."""

    def resolve(match: re.Match[str]) -> str:
        name, _, key = match.group(1).partition(".")
        variable = variables.get(name, {}).get("value")
        if isinstance(variable, dict) and key in variable:
            return str(variable[key])
        return match.group(0)

    return re.sub(r"\$\{([A-Za-z_][\w.]*)\}", resolve, value)


def parameter_files() -> list[Path]:
    return sorted(INFRA.glob("*.parameters.json"))


def read_parameters(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    params = data["parameters"]
    assert isinstance(params, dict)
    return params
