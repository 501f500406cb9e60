"""Each command needs the settings of the services it talks to, and only those
(``shared.cli._settings.NEEDS``); Key Vault references among them are read with the operator's
identity (``shared.cli._keyvault``), those of other services are not read at all.

Storage is Azurite; Key Vault is the fake of ``tests/key_vault.py`` (TLS, the SDK's challenge),
reached through the transport the CLI's ``ACCESS`` hook takes; no test talks to Microsoft."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from shared import wiring
from shared.cli import _keyvault, build_parser
from shared.cli._keyvault import KeyVaultAccess, parse_reference, resolve_references
from shared.cli._settings import DATAVERSE, STORAGE, needs_of
from shared.errors import SettingsError
from shared.jobs import POISON_QUEUE, SyncJob
from shared.partner_center import PartnerCenterAuthError
from shared.settings import SERVICES, get_settings, load_settings, setting_names
from shared.storage import queue_client, table_service_client
from tests.key_vault import KeyVaultServer, StaticCredential

pytestmark = pytest.mark.azurite

REFERRAL = "6f1f8a5e-3d4c-4b2a-9e8f-000000000001"
PC_SECRETS = (
    "PARTNER_CENTER_TENANT_ID",
    "PARTNER_CENTER_CLIENT_ID",
    "PARTNER_CENTER_CLIENT_SECRET",
    "PARTNER_CENTER_REFRESH_TOKEN",
)


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No app setting in the environment, and no way to Key Vault unless a test gives one."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)

    def no_identity() -> StaticCredential:
        raise AssertionError("Key Vault was asked for a secret this command does not need")

    monkeypatch.setattr(_keyvault, "ACCESS", KeyVaultAccess(credential=no_identity))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def storage_only(bare: pytest.MonkeyPatch, storage_connection_string: str) -> str:
    bare.setenv("AzureWebJobsStorage", storage_connection_string)
    return storage_connection_string


@pytest.fixture
def poisoned(storage_connection_string: str) -> Iterator[str]:
    """One job in ``sync-jobs-poison`` (base64, as the host leaves it); its referral id."""
    client = QueueClient.from_connection_string(storage_connection_string, POISON_QUEUE)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.clear_messages()
    job = SyncJob.now("referral", uuid.uuid4(), reason="webhook:referral-updated")
    client.send_message(base64.b64encode(job.to_json().encode()).decode())
    yield str(job.id)
    client.clear_messages()
    client.close()


@pytest.fixture(scope="module")
def key_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultServer]:
    with KeyVaultServer(tmp_path_factory.mktemp("key-vault")) as served:
        yield served


@pytest.fixture
def vault(key_vault: KeyVaultServer, bare: pytest.MonkeyPatch) -> KeyVaultServer:
    """The fake vault, emptied, as the CLI's way to Key Vault (a static identity)."""
    access = KeyVaultAccess(credential=StaticCredential, transport=key_vault.transport)
    bare.setattr(_keyvault, "ACCESS", access)
    return key_vault.reset()


def settings_file(folder: Path, **values: str) -> str:
    path = folder / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
    return str(path)


# -- only what the command needs ------------------------------------------------------------


def test_poison_list_runs_with_storage_settings_alone(
    storage_only: str, poisoned: str, cosell: Any
) -> None:
    ran = cosell("poison", "list", "--json")

    assert ran.code == 0, ran.err
    assert [m["id"] for m in ran.json()["messages"]] == [poisoned]


def test_history_runs_with_storage_settings_alone(storage_only: str, cosell: Any) -> None:
    ran = cosell("history", REFERRAL, "--json")

    assert ran.code == 0, ran.err
    assert "missing" not in ran.err


PC_MISSING = [
    f"{n}: missing; required when PARTNER_CENTER_API_URL is the real service" for n in PC_SECRETS
]
DATAVERSE_MISSING = "DATAVERSE_URL: missing; expected the https URL of the Dataverse environment"
EMULATED_PC = {"PARTNER_CENTER_API_URL": "http://127.0.0.1:9/v1.0/engagements"}


@pytest.mark.parametrize(
    ("command", "given", "named", "not_named"),
    [
        (("poison", "list"), {}, ["AzureWebJobsStorage: missing"], ["DATAVERSE", "PARTNER"]),
        (
            ("sync", "referral", REFERRAL, "--dry-run"),
            {"DATAVERSE_URL": "https://contoso.crm.dynamics.com", "AzureWebJobsStorage": "-"},
            PC_MISSING,
            ["DATAVERSE_URL", "AzureWebJobsStorage"],
        ),
        (
            ("sync", "referral", REFERRAL),
            {**EMULATED_PC, "AzureWebJobsStorage": "-"},
            [DATAVERSE_MISSING],
            ["PARTNER_CENTER", "AzureWebJobsStorage"],
        ),
        (("schema", "check"), {}, ["DATAVERSE_URL: missing"], ["AzureWebJobsStorage", "PARTNER"]),
    ],
    ids=["storage-command", "sync-without-pc", "sync-without-dataverse", "dataverse-command"],
)
def test_a_missing_setting_is_named_for_the_command_that_needs_it_and_no_other(
    bare: pytest.MonkeyPatch,
    storage_connection_string: str,
    cosell: Any,
    command: tuple[str, ...],
    given: dict[str, str],
    named: list[str],
    not_named: list[str],
) -> None:
    for name, value in given.items():
        bare.setenv(name, storage_connection_string if value == "-" else value)

    ran = cosell(*command)

    assert ran.code == 1
    assert [text for text in named if text not in ran.err] == []
    assert [text for text in not_named if text in ran.err] == []


def test_status_with_storage_alone_reports_the_unconfigured_services(
    storage_only: str, cosell: Any
) -> None:
    ran = cosell("status", "--json")

    report = ran.json()
    assert ran.code == 1  # degraded: no token can be had for either service
    assert set(report["tokens"]) == {"partner_center", "dataverse"}
    assert all(state.startswith("failed") for state in report["tokens"].values())
    problems = "\n".join(report["problems"])
    assert "PARTNER_CENTER_TENANT_ID" in problems and "DATAVERSE_URL" in problems
    assert "queues" in report


def test_a_given_setting_is_still_checked_when_the_command_does_not_need_it(
    storage_only: str, bare: pytest.MonkeyPatch, cosell: Any
) -> None:
    bare.setenv("CONFLICT_POLICY", "loudest")

    ran = cosell("poison", "list")

    assert ran.code == 1
    assert "CONFLICT_POLICY" in ran.err


# -- Key Vault references ---------------------------------------------------------------------


def test_references_of_services_the_command_does_not_use_are_not_read(
    storage_only: str, tmp_path: Path, poisoned: str, cosell: Any
) -> None:
    references = {
        name: f"@Microsoft.KeyVault(VaultName=kv-cosell;SecretName={name.lower()})"
        for name in PC_SECRETS
    }
    path = settings_file(tmp_path, **references)

    ran = cosell("--settings-file", path, "poison", "list", "--json")

    assert ran.code == 0, ran.err  # the `bare` fixture fails any Key Vault access
    assert ran.json()["depth"] == 1


def test_a_needed_reference_is_read_with_the_operators_identity(
    vault: KeyVaultServer,
    storage_connection_string: str,
    poisoned: str,
    tmp_path: Path,
    cosell: Any,
) -> None:
    version = vault.vault.put("storage-connection", storage_connection_string)
    secret_uri = f"https://kv-cosell.vault.azure.net/secrets/storage-connection/{version}"
    path = settings_file(
        tmp_path,
        AzureWebJobsStorage=f"@Microsoft.KeyVault(SecretUri={secret_uri})",
        PARTNER_CENTER_CLIENT_SECRET="@Microsoft.KeyVault(VaultName=kv-cosell;SecretName=x)",
    )

    ran = cosell("--settings-file", path, "poison", "list", "--json")

    assert ran.code == 0, ran.err
    assert [m["id"] for m in ran.json()["messages"]] == [poisoned]
    reads = [(r["method"], r["host"], r["path"]) for r in vault.vault.requests]
    assert reads == [("GET", "kv-cosell.vault.azure.net", f"/secrets/storage-connection/{version}")]


def test_a_reference_that_cannot_be_read_names_the_setting_and_the_fix(
    vault: KeyVaultServer, tmp_path: Path, cosell: Any
) -> None:
    path = settings_file(
        tmp_path,
        AzureWebJobsStorage="@Microsoft.KeyVault(VaultName=kv-cosell;SecretName=nowhere)",
    )

    ran = cosell("--settings-file", path, "poison", "list")

    assert ran.code == 1
    assert "AzureWebJobsStorage: the secret https://kv-cosell.vault.azure.net/secrets/nowhere" in (
        ran.err
    )
    assert "does not exist" in ran.err


async def test_a_refused_read_says_which_role_is_needed(vault: KeyVaultServer) -> None:
    vault.vault.put("token", "s3cr3t-value")
    vault.vault.status = 403
    values = {"PARTNER_CENTER_REFRESH_TOKEN": "@Microsoft.KeyVault(VaultName=kv1;SecretName=token)"}

    with pytest.raises(SettingsError) as raised:
        await resolve_references(values)

    assert "PARTNER_CENTER_REFRESH_TOKEN: the secret" in str(raised.value)
    assert "'Key Vault Secrets User'" in str(raised.value)
    assert "s3cr3t-value" not in str(raised.value)


async def test_both_reference_forms_are_read_and_other_values_kept(vault: KeyVaultServer) -> None:
    first = vault.vault.put("client-secret", "s-1")
    vault.vault.put("client-secret", "s-2")
    values = {
        "PARTNER_CENTER_CLIENT_SECRET": (
            "@Microsoft.KeyVault(VaultName=kv1;SecretName=client-secret)"
        ),
        "PARTNER_CENTER_REFRESH_TOKEN": "@Microsoft.KeyVault(SecretUri="
        f"https://kv1.vault.azure.net/secrets/client-secret/{first})",
        "CONFLICT_POLICY": "crm",
    }

    resolved = await resolve_references(values)

    assert resolved == {
        "PARTNER_CENTER_CLIENT_SECRET": "s-2",  # no version: the current one
        "PARTNER_CENTER_REFRESH_TOKEN": "s-1",
        "CONFLICT_POLICY": "crm",
    }


@pytest.mark.parametrize(
    "reference",
    [
        "@Microsoft.KeyVault(SecretUri=https://evil.example.com/secrets/x)",
        "@Microsoft.KeyVault(SecretUri=http://kv1.vault.azure.net/secrets/x)",
        "@Microsoft.KeyVault(VaultName=kv1)",
        "@Microsoft.KeyVault(VaultName=kv1;SecretName=x;Other=y)",
        "@Microsoft.KeyVault(SecretUri=https://kv1.vault.azure.net/keys/x)",
    ],
)
def test_a_reference_outside_key_vault_or_malformed_is_refused(reference: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_reference(reference)


async def test_a_malformed_reference_names_its_setting_before_any_request() -> None:
    values = {"PARTNER_CENTER_CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://x.test/s)"}

    with pytest.raises(
        SettingsError, match="PARTNER_CENTER_CLIENT_SECRET: the Key Vault reference"
    ):
        await resolve_references(values)


def test_a_client_of_a_service_the_settings_were_not_loaded_for_names_its_setting() -> None:
    """Declaring too little in NEEDS fails clearly, naming the setting, not deep in a client."""
    only_dataverse = load_settings({"DATAVERSE_URL": "https://x.crm.dynamics.com"}, needs=DATAVERSE)
    only_storage = load_settings(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, needs=STORAGE
    )

    with pytest.raises(SettingsError, match="AzureWebJobsStorage: missing"):
        queue_client(only_dataverse, POISON_QUEUE)
    with pytest.raises(SettingsError, match="AzureWebJobsStorage: missing"):
        table_service_client(only_dataverse)
    with pytest.raises(SettingsError, match="DATAVERSE_URL: missing"):
        wiring.dataverse_client(only_storage)
    with pytest.raises(PartnerCenterAuthError, match="PARTNER_CENTER_TENANT_ID"):
        wiring.partner_center_tokens(only_storage)


def test_commands_not_listed_need_every_service() -> None:
    parser = build_parser()

    assert needs_of(parser.parse_args(["config", "check"])) == SERVICES
    assert needs_of(parser.parse_args(["poison", "list"])) == STORAGE
    assert set(needs_of(parser.parse_args(["webhook", "show"]))) == {"partner_center", "dataverse"}
