"""Parameter files per environment and for azd: complete, and free of secrets and tenant ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.infra_model import (
    INFRA,
    MAIN,
    REPO,
    ROLE_IDS,
    bicep_files,
    has_default,
    module_path,
    parameter_files,
    parse,
    read_parameters,
    resources_of_type,
)

AZD = INFRA / "main.parameters.json"
ENVIRONMENTS = {
    "staging": INFRA / "main.staging.parameters.json",
    "production": INFRA / "main.production.parameters.json",
}
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Shapes of credentials that must never be committed.
SECRET_SHAPES = re.compile(
    r"AccountKey=|SharedAccessSignature|[?&]sig=|InstrumentationKey=|-----BEGIN|"
    r"eyJ[A-Za-z0-9_-]{10,}|[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{30,}",
)


def _main_parameters() -> dict[str, dict[str, object]]:
    return parse(MAIN)["parameters"]


def _secure(parameters: dict[str, dict[str, object]]) -> set[str]:
    return {
        name
        for name, spec in parameters.items()
        if any(d.get("type") == "secure" for d in spec.get("decorators", []))  # type: ignore[attr-defined]
    }


def test_there_are_parameter_files_for_staging_production_and_azd() -> None:
    assert set(parameter_files()) >= {AZD, *ENVIRONMENTS.values()}


@pytest.mark.parametrize("path", parameter_files(), ids=lambda p: p.name)
def test_parameter_files_only_set_parameters_main_declares(path: Path) -> None:
    unknown = set(read_parameters(path)) - set(_main_parameters())
    assert not unknown, f"{path.name} sets parameters main.bicep does not have: {unknown}"


@pytest.mark.parametrize("path", parameter_files(), ids=lambda p: p.name)
def test_parameter_files_provide_every_required_parameter(path: Path) -> None:
    required = {name for name, spec in _main_parameters().items() if not has_default(spec)}
    missing = required - set(read_parameters(path))
    assert not missing, f"{path.name} lacks {missing}"


@pytest.mark.parametrize("path", parameter_files(), ids=lambda p: p.name)
def test_parameter_files_hold_no_secret_values(path: Path) -> None:
    parameters = read_parameters(path)
    # Secrets are @secure() parameters supplied at deploy time (or set in Key Vault), never here.
    secure = _secure(_main_parameters())
    assert secure >= {"partnerCenterClientSecret", "partnerCenterRefreshToken"}
    assert not secure & set(parameters), f"{path.name} sets a secure parameter"
    for name in ("partnerCenterTenantId", "partnerCenterClientId"):
        assert name not in parameters, f"{path.name}: {name} is supplied at deploy time"
    text = path.read_text()
    assert not GUID.search(text), f"{path.name} contains a GUID (tenant, client or object id?)"
    assert not SECRET_SHAPES.search(text), f"{path.name} contains something shaped like a secret"


def test_bicep_holds_no_ids_but_built_in_role_ids() -> None:
    allowed = set(ROLE_IDS.values())
    for path in bicep_files():
        found = set(GUID.findall(path.read_text())) - allowed
        assert not found, f"{path.name} contains ids {found}"
        assert not SECRET_SHAPES.search(path.read_text()), path.name


def test_secrets_reach_key_vault_only_as_secure_parameters() -> None:
    vault = parse(module_path("keyVault"))
    assert _secure(vault["parameters"]) >= {
        "partnerCenterClientSecret",
        "partnerCenterRefreshToken",
    }
    for name, secret in resources_of_type(vault, "Microsoft.KeyVault/vaults/secrets"):
        # Written only when a value is given, so a redeploy never blanks a rotated token.
        assert secret["config"].get("condition"), f"{name} must be conditional on a value"


def test_azd_parameters_come_from_the_azd_environment() -> None:
    parameters = read_parameters(AZD)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["operatorPrincipalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_environments_are_distinct_and_production_keeps_deleted_secrets() -> None:
    staging = read_parameters(ENVIRONMENTS["staging"])
    production = read_parameters(ENVIRONMENTS["production"])
    assert staging["environmentName"]["value"] != production["environmentName"]["value"]
    assert production.get("enablePurgeProtection", {"value": True})["value"] is True


def test_azure_yaml_deploys_the_app_root_as_a_python_function() -> None:
    text = (REPO / "azure.yaml").read_text()
    service = re.search(r"^services:\n  (\w[\w-]*):\n((?:    .*\n|\s*\n|\s+#.*\n)+)", text, re.M)
    assert service, "azure.yaml needs a service"
    name, block = service.group(1), service.group(2)
    assert re.search(r"^    host: function$", block, re.M)
    assert re.search(r"^    language: python$", block, re.M)
    assert re.search(r"^    project: \.$", block, re.M)
    # azd finds the app to deploy to by this tag on the function app.
    function_app = (INFRA / "modules" / "function-app.bicep").read_text()
    assert f"'azd-service-name': '{name}'" in function_app


# --- azd: every parameter mapped to a variable of the azd environment -----------------------------

# What main.parameters.json leaves out, on purpose. The azd environment is a plain-text file
# (.azure/<env>/.env) and a mapped value is written again on every `azd provision`: a refresh
# token there would overwrite the one the app rotated into Key Vault. The four Partner Center
# settings go into Key Vault directly (the postprovision hook offers to set them; deploy.md step 4).
AZD_NOT_MAPPED = {
    "partnerCenterTenantId",
    "partnerCenterClientId",
    "partnerCenterClientSecret",
    "partnerCenterRefreshToken",
}
# azd's syntax: ${NAME} or ${NAME=default}; the default ends at the first `}` (drone/envsubst).
AZD_VALUE = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)(?:=([^}]*))?\}$")


def _azd_mappings() -> dict[str, tuple[str, str | None]]:
    mapped = {}
    for name, spec in read_parameters(AZD).items():
        match = AZD_VALUE.fullmatch(str(spec["value"]))
        assert match, f"{name}: {spec['value']!r} is not ${{NAME}} or ${{NAME=default}}"
        mapped[name] = (match.group(1), match.group(2))
    return mapped


def _as_azd_text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def test_azd_maps_every_parameter_but_the_partner_center_credentials() -> None:
    unmapped = set(_main_parameters()) - set(read_parameters(AZD))
    assert unmapped == AZD_NOT_MAPPED, f"map these in {AZD.name}: {unmapped - AZD_NOT_MAPPED}"
    assert set(_main_parameters()) >= AZD_NOT_MAPPED, "a parameter named here was removed"


def test_azd_defaults_are_main_bicep_defaults() -> None:
    parameters = _main_parameters()
    variables: dict[str, str] = {}
    for name, (variable, default) in _azd_mappings().items():
        spec = parameters[name]
        assert variables.setdefault(variable, name) == name, f"{variable} maps two parameters"
        if default is not None:
            assert has_default(spec), f"{name} is required: no default in {AZD.name} either"
            assert default == _as_azd_text(spec["default"]), f"{name}: {default!r} is not main's"
        elif has_default(spec):
            # Unset, azd leaves a string parameter out (so main.bicep's default applies) but would
            # pass "" to a bool or an int: those need their default written here.
            assert spec["type"] == "string", f"{name}: write ${{{variable}={spec['default']}}}"
            # A default holding `}` cannot be written in azd's syntax (referralLinkTemplate's {id}).
            text = _as_azd_text(spec["default"])
            assert text == "" or "}" in text, f"{name}: write ${{{variable}={text}}}"


def test_azd_variables_are_documented() -> None:
    text = (REPO / "docs" / "deploy.md").read_text() + (REPO / "docs" / "operate.md").read_text()
    missing = sorted(v for v, _ in _azd_mappings().values() if f"`{v}`" not in text)
    assert not missing, f"docs/deploy.md does not name the azd variables {missing}"
