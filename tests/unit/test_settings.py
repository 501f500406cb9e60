"""Settings: defaults, validation that names the wrong setting, and the sample file in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import SettingsError
from shared.settings import STORAGE_IDENTITY_SETTINGS, load_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "DATAVERSE_URL": "http://127.0.0.1:7102",
    "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements",
    "PARTNER_CENTER_WEBHOOK_API_URL": "http://127.0.0.1:7101/webhooks/v1",
}
PRODUCTION = {
    "AzureWebJobsStorage__queueServiceUri": "https://contosostore.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "https://contosostore.table.core.windows.net",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "11111111-1111-1111-1111-111111111111",
    "DATAVERSE_URL": "https://contoso.crm.dynamics.com/",
    "PARTNER_CENTER_TENANT_ID": "22222222-2222-2222-2222-222222222222",
    "PARTNER_CENTER_CLIENT_ID": "33333333-3333-3333-3333-333333333333",
    "PARTNER_CENTER_CLIENT_SECRET": "not-a-real-secret-value",
    "PARTNER_CENTER_REFRESH_TOKEN": "not-a-real-refresh-token",
}


def settings_error(**overrides: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SANDBOX, **overrides})
    return str(caught.value)


def test_defaults_match_the_spec() -> None:
    settings = load_settings(PRODUCTION)

    assert settings.partner_center_api_url == "https://api.partner.microsoft.com/v1.0/engagements"
    assert settings.partner_center_webhook_api_url == (
        "https://api.partnercenter.microsoft.com/webhooks/v1"
    )
    assert settings.dataverse_url == "https://contoso.crm.dynamics.com"  # trailing / dropped
    assert settings.dataverse_poll_schedule == "0 */1 * * * *"
    assert settings.partner_center_reconcile_schedule == "0 */15 * * * *"
    assert settings.conflict_policy == "newest"
    assert settings.show_sync_mark_in_name is True
    assert settings.sync_cosell_only is True
    assert settings.crm_deal_value_field == "estimatedvalue"
    assert settings.crm_country_field == "address1_country"
    assert settings.crm_column_prefix == "cosell_"
    assert settings.referral_link_template.endswith("inbox?id={id}")
    assert settings.webhook_signature_mode == "verify"
    assert settings.webhook_cert_hosts == ("3psostorageacct.blob.core.windows.net",)
    assert settings.webhook_trusted_root_certificates == []
    assert settings.sandbox is False


def test_sandbox_settings_load_without_partner_center_credentials() -> None:
    settings = load_settings(SANDBOX)

    assert settings.sandbox is True
    assert settings.partner_center_refresh_token is None


def test_missing_dataverse_url_names_the_setting_and_what_is_expected() -> None:
    environ = {k: v for k, v in SANDBOX.items() if k != "DATAVERSE_URL"}
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert "DATAVERSE_URL: missing; expected the https URL of the Dataverse environment" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CONFLICT_POLICY", "latest", "one of: newest, partner_center, crm"),
        ("DATAVERSE_POLL_SCHEDULE", "*/5 * * * *", "expected 6 fields"),
        ("PARTNER_CENTER_RECONCILE_SCHEDULE", "0 */15 25 * * *", "hour field: 25 is outside 0-23"),
        ("CRM_COLUMN_PREFIX", "mscrm_", "not with 'mscrm'"),
        ("CRM_COLUMN_PREFIX", "Co-Sell_", "lower-case letters or digits"),
        ("CRM_DEAL_VALUE_FIELD", "Estimated Value", "Dataverse logical name"),
        ("DATAVERSE_URL", "http://contoso.crm.dynamics.com", "must use https"),
        ("PARTNER_CENTER_API_URL", "ftp://example.com/x", "absolute URL"),
        ("REFERRAL_LINK_TEMPLATE", "https://partner.microsoft.com/referrals", "must contain {id}"),
        ("SHOW_SYNC_MARK_IN_NAME", "perhaps", "true or false"),
        ("WEBHOOK_SIGNATURE_MODE", "sometimes", "verify (Azure) or off"),
        ("WEBHOOK_CERT_HOST_ALLOWLIST", "https://certs.example.net/x", "is not a host name"),
        ("WEBHOOK_CERT_HOST_ALLOWLIST", " , ", "at least one host name"),
        ("WEBHOOK_TRUSTED_ROOTS", "MIIB...", "BEGIN CERTIFICATE"),
        (
            "WEBHOOK_TRUSTED_ROOTS",
            "-----BEGIN CERTIFICATE-----\\nnot base64\\n-----END CERTIFICATE-----",
            "cannot be read",
        ),
    ],
)
def test_wrong_value_fails_with_the_setting_name(name: str, value: str, says: str) -> None:
    message = settings_error(**{name: value})

    line = next(line for line in message.splitlines() if line.strip().startswith(f"- {name}:"))
    assert says in line


def test_every_wrong_setting_is_reported_at_once() -> None:
    message = settings_error(CONFLICT_POLICY="x", CRM_COLUMN_PREFIX="1abc")

    assert "CONFLICT_POLICY" in message
    assert "CRM_COLUMN_PREFIX" in message


def test_secret_values_are_never_echoed_in_errors() -> None:
    environ = {**PRODUCTION, "PARTNER_CENTER_TENANT_ID": "not-a-guid"}
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    message = str(caught.value)
    assert "PARTNER_CENTER_TENANT_ID" in message
    assert "not-a-real-secret-value" not in message
    assert "not-a-real-refresh-token" not in message


def test_real_partner_center_needs_app_and_user_credentials() -> None:
    environ = {k: v for k, v in PRODUCTION.items() if k != "PARTNER_CENTER_REFRESH_TOKEN"}
    with pytest.raises(SettingsError, match="PARTNER_CENTER_REFRESH_TOKEN: missing"):
        load_settings(environ)


def test_storage_needs_a_connection_string_or_both_service_uris() -> None:
    environ = {k: v for k, v in SANDBOX.items() if k != "AzureWebJobsStorage"}
    with pytest.raises(SettingsError, match="AzureWebJobsStorage: missing"):
        load_settings(environ)
    partial = {
        **environ,
        "AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net",
    }
    with pytest.raises(SettingsError, match="AzureWebJobsStorage__tableServiceUri: missing"):
        load_settings(partial)


def test_prefix_without_underscore_is_completed() -> None:
    assert load_settings({**SANDBOX, "CRM_COLUMN_PREFIX": "contoso"}).crm_column_prefix == (
        "contoso_"
    )


def test_empty_values_mean_default() -> None:
    assert load_settings({**SANDBOX, "CONFLICT_POLICY": ""}).conflict_policy == "newest"


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SANDBOX.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONFLICT_POLICY", "crm")

    assert load_settings().conflict_policy == "crm"


def test_sample_file_lists_every_setting_and_only_settings() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    host_only = {"FUNCTIONS_WORKER_RUNTIME"}

    expected = set(setting_names()) - set(STORAGE_IDENTITY_SETTINGS)
    assert set(sample) - host_only == expected


def test_sample_file_values_are_valid_settings() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]

    settings = load_settings(sample)

    assert settings.sandbox is True
    assert settings.webhook_signature_mode == "off"


def test_webhook_certificate_hosts_are_a_trimmed_lower_case_list() -> None:
    settings = load_settings(
        {**SANDBOX, "WEBHOOK_CERT_HOST_ALLOWLIST": " Certs.Example.NET, *.blob.example.net ,"}
    )

    assert settings.webhook_cert_hosts == ("certs.example.net", "*.blob.example.net")


def test_trusted_roots_read_pem_with_literal_newline_escapes() -> None:
    pem = _self_signed_pem()
    escaped = pem.replace("\n", "\\n")  # how a one-line portal or Bicep value carries it

    for value in (pem, escaped, pem + pem):
        certificates = load_settings(
            {**SANDBOX, "WEBHOOK_TRUSTED_ROOTS": value}
        ).webhook_trusted_root_certificates
        assert certificates
        assert all(c.subject.rfc4514_string() == "CN=Test Root" for c in certificates)


def _self_signed_pem() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Root")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_an_unresolved_key_vault_reference_names_the_setting() -> None:
    environ = {
        **PRODUCTION,
        "PARTNER_CENTER_CLIENT_SECRET": "@Microsoft.KeyVault(VaultName=kv;SecretName=secret)",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert "PARTNER_CENTER_CLIENT_SECRET: the Key Vault reference was not resolved" in str(
        caught.value
    )


def test_a_broken_mapping_is_a_settings_error_naming_its_json_path() -> None:
    said = settings_error(CRM_MAPPING='{"extra": [{"referral": "x", "crm": "A"}]}')

    assert "  - CRM_MAPPING: $.extra[0].crm: expected a Dataverse logical name" in said


def test_a_cross_setting_problem_stays_on_one_line() -> None:
    """Each problem is one line, even when its own text has a semicolon."""
    with pytest.raises(SettingsError) as raised:
        load_settings({"DATAVERSE_URL": "https://contoso.crm.dynamics.com"})

    lines = str(raised.value).splitlines()
    assert any(
        line.startswith("  - PARTNER_CENTER_CLIENT_ID: missing; required when") for line in lines
    )
    assert not any(line.startswith("  - required when") for line in lines)
