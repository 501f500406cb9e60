"""The typed settings object: every app setting of SPEC section 6, read once.

Setting names are the app-setting names users type in the portal, Bicep and
``local.settings.json`` (they are fixed by the SPEC), so each field carries its exact name as an
alias. ``load_settings`` turns pydantic's validation errors into one ``SettingsError`` that names
every wrong setting and says what is expected, without echoing secret values.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from cryptography import x509
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.crm_mapping import CrmMapping, MappingError, load_mapping
from shared.errors import SettingsError
from shared.ncrontab import parse_schedule

ConflictPolicy = Literal["newest", "partner_center", "crm"]
SignatureMode = Literal["verify", "off"]
# The services whose settings a consumer needs complete: the app needs all three; a CLI command
# says which it uses (``load_settings(needs=...)``), so `cosell poison list` runs with storage
# settings alone. The settings of each, by app-setting name prefix, are ``SERVICE_SETTINGS``.
Service = Literal["storage", "partner_center", "dataverse"]
SERVICES: tuple[Service, ...] = get_args(Service)
SERVICE_SETTINGS: dict[Service, tuple[str, ...]] = {
    "storage": ("AzureWebJobsStorage",),
    "partner_center": ("PARTNER_CENTER_",),
    "dataverse": ("DATAVERSE_URL",),
}
# Key Vault's DNS suffixes (public, China, US Government clouds): a secret URI is
# https://<vault><suffix>/secrets/<name>[/<version>] and a vault token goes nowhere else.
KEY_VAULT_DNS_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net")
_VAULT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,22}[a-z0-9])$")
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
# The services being loaded for (``load_settings(needs=...)``); None: all of them.
_NEEDS: ContextVar[tuple[Service, ...] | None] = ContextVar("settings_needs", default=None)

# Dataverse publisher prefix: 2-8 letters or digits, starting with a letter, never "mscrm".
_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}_?$")
_GUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# The host of the signing certificate in Microsoft's documented example (reference: Partner
# Center §4.3); the host of live deliveries is UNCERTAIN, so it is a setting.
DEFAULT_CERT_HOSTS = "3psostorageacct.blob.core.windows.net"
# A DNS name, optionally "*." for its subdomains: no scheme, port, path or user info.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"^(\*\.)?(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# Dataverse logical (column) names: lower-case letters, digits and underscores.
_LOGICAL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")

# The identity-based storage connection used in Azure (SPEC 6); locally the connection string
# `AzureWebJobsStorage` (Azurite) is used instead, so the sample file leaves these out.
STORAGE_IDENTITY_SETTINGS = (
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
)
_SECRET_SETTINGS = {"PARTNER_CENTER_CLIENT_SECRET", "PARTNER_CENTER_REFRESH_TOKEN"}


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on localhost / 127.0.0.0/8 / ::1 (the sandbox)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_of(name: str) -> Service | None:
    """The service an app setting belongs to (``SERVICE_SETTINGS``), or None for the others."""
    for service, prefixes in SERVICE_SETTINGS.items():
        if any(name.startswith(prefix) for prefix in prefixes):
            return service
    return None


def parse_secret_uri(uri: str, *, version: bool = True) -> tuple[str, str, str | None]:
    """``https://<vault>.vault.azure.net/secrets/<name>[/<version>]`` as (vault URL, secret
    name, version or None); ValueError for anything else, so a vault token never goes to another
    host. ``version=False`` refuses a version (a secret written to takes new versions)."""
    parts = urlsplit(uri.strip())
    host = (parts.hostname or "").lower()
    suffix = next((s for s in KEY_VAULT_DNS_SUFFIXES if host.endswith(s)), None)
    expected = "expected https://<vault>.vault.azure.net/secrets/<name>" + (
        "[/<version>]" if version else " (no version)"
    )
    if (
        parts.scheme != "https"
        or suffix is None
        or not _VAULT_NAME.match(host.removesuffix(suffix))
        or parts.port is not None
        or parts.username
        or parts.query
        or parts.fragment
    ):
        raise ValueError(expected)
    path = parts.path.strip("/").split("/")
    if not 2 <= len(path) <= (3 if version else 2) or path[0] != "secrets":
        raise ValueError(expected)
    if not _SECRET_NAME.match(path[1]) or (len(path) == 3 and not path[2].isalnum()):
        raise ValueError(expected)
    return f"https://{host}", path[1], path[2] if len(path) == 3 else None


def _check_service_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute URL such as https://host/path")
    if parts.scheme != "https" and not is_loopback_url(value):
        raise ValueError("must use https (plain http is accepted only for localhost/127.0.0.1)")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    return value.rstrip("/")


class Settings(BaseSettings):
    """Every app setting of the product, with its default and validation."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        env_ignore_empty=True,
        populate_by_name=True,
        frozen=True,
    )

    storage_connection_string: SecretStr | None = Field(
        default=None,
        alias="AzureWebJobsStorage",
        description="a storage connection string (Azurite locally); in Azure use the "
        "identity-based AzureWebJobsStorage__queueServiceUri/__tableServiceUri settings",
    )
    storage_queue_service_uri: str | None = Field(
        default=None,
        alias="AzureWebJobsStorage__queueServiceUri",
        description="the queue endpoint, e.g. https://<account>.queue.core.windows.net",
    )
    storage_table_service_uri: str | None = Field(
        default=None,
        alias="AzureWebJobsStorage__tableServiceUri",
        description="the table endpoint, e.g. https://<account>.table.core.windows.net",
    )
    storage_credential: Literal["managedidentity"] | None = Field(
        default=None,
        alias="AzureWebJobsStorage__credential",
        description="'managedidentity'",
    )
    storage_client_id: str | None = Field(
        default=None,
        alias="AzureWebJobsStorage__clientId",
        description="the client id of the user-assigned managed identity",
    )

    partner_center_api_url: str = Field(
        default="https://api.partner.microsoft.com/v1.0/engagements",
        alias="PARTNER_CENTER_API_URL",
        description="the https base URL of the Partner Center Referrals API",
    )
    partner_center_webhook_api_url: str = Field(
        default="https://api.partnercenter.microsoft.com/webhooks/v1",
        alias="PARTNER_CENTER_WEBHOOK_API_URL",
        description="the https base URL of the Partner Center webhook registration API",
    )
    partner_center_tenant_id: str | None = Field(
        default=None,
        alias="PARTNER_CENTER_TENANT_ID",
        description="the partner's Entra tenant id (a GUID)",
    )
    partner_center_client_id: str | None = Field(
        default=None,
        alias="PARTNER_CENTER_CLIENT_ID",
        description="the application (client) id registered for Partner Center (a GUID)",
    )
    partner_center_client_secret: SecretStr | None = Field(
        default=None,
        alias="PARTNER_CENTER_CLIENT_SECRET",
        description="the client secret of that application (a Key Vault reference in Azure)",
    )
    partner_center_refresh_token: SecretStr | None = Field(
        default=None,
        alias="PARTNER_CENTER_REFRESH_TOKEN",
        description="the app+user refresh token (a Key Vault reference in Azure)",
    )

    partner_center_refresh_token_secret_uri: str | None = Field(
        default=None,
        alias="PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI",
        description="the Key Vault secret the rotated refresh token is saved to, "
        "e.g. https://<vault>.vault.azure.net/secrets/partner-center-refresh-token",
    )

    # Required (see ``_complete``) unless the consumer does not need Dataverse; then "".
    dataverse_url: str = Field(
        default="",
        alias="DATAVERSE_URL",
        description="the https URL of the Dataverse environment, "
        "e.g. https://contoso.crm.dynamics.com",
    )
    dataverse_poll_schedule: str = Field(
        default="0 */1 * * * *",
        alias="DATAVERSE_POLL_SCHEDULE",
        description="a 6-field NCRONTAB schedule, e.g. '0 */1 * * * *' (every minute)",
    )
    partner_center_reconcile_schedule: str = Field(
        default="0 */15 * * * *",
        alias="PARTNER_CENTER_RECONCILE_SCHEDULE",
        description="a 6-field NCRONTAB schedule, e.g. '0 */15 * * * *' (every 15 minutes)",
    )
    conflict_policy: ConflictPolicy = Field(
        default="newest",
        alias="CONFLICT_POLICY",
        description="one of: newest, partner_center, crm",
    )
    show_sync_mark_in_name: bool = Field(
        default=True,
        alias="SHOW_SYNC_MARK_IN_NAME",
        description="true or false",
    )
    sync_cosell_only: bool = Field(
        default=True,
        alias="SYNC_COSELL_ONLY",
        description="true or false",
    )
    crm_deal_value_field: str = Field(
        default="estimatedvalue",
        alias="CRM_DEAL_VALUE_FIELD",
        description="the logical name of an opportunity column (lower-case, e.g. estimatedvalue)",
    )
    crm_country_field: str = Field(
        default="address1_country",
        alias="CRM_COUNTRY_FIELD",
        description="the logical name of an account column (lower-case, e.g. address1_country)",
    )
    _mapping: CrmMapping = PrivateAttr(default_factory=CrmMapping)
    crm_mapping: str | None = Field(
        default=None,
        alias="CRM_MAPPING",
        description="the declarative mapping as JSON text (SPEC 13)",
    )
    crm_mapping_file: str | None = Field(
        default=None,
        alias="CRM_MAPPING_FILE",
        description="the path of a JSON file with the declarative mapping (SPEC 13), "
        "deployed with the app",
    )
    crm_column_prefix: str = Field(
        default="cosell_",
        alias="CRM_COLUMN_PREFIX",
        description="a Dataverse publisher prefix: 2-8 lower-case letters or digits starting "
        "with a letter, not 'mscrm', followed by '_' (e.g. cosell_)",
    )
    referral_link_template: str = Field(
        default="https://partner.microsoft.com/referrals/v2/inbox?id={id}",
        alias="REFERRAL_LINK_TEMPLATE",
        description="an https URL containing {id}, where the referral id goes",
    )
    webhook_signature_mode: SignatureMode = Field(
        default="verify",
        alias="WEBHOOK_SIGNATURE_MODE",
        description="verify (Azure) or off (sandbox only)",
    )
    webhook_cert_host_allowlist: str = Field(
        default=DEFAULT_CERT_HOSTS,
        alias="WEBHOOK_CERT_HOST_ALLOWLIST",
        description="comma-separated host names the webhook signing certificate may be "
        "downloaded from; '*.example.net' allows its subdomains",
    )
    webhook_trusted_roots: str | None = Field(
        default=None,
        alias="WEBHOOK_TRUSTED_ROOTS",
        description="PEM certificates (one or more BEGIN CERTIFICATE blocks) the webhook "
        "signing certificate must chain to, instead of the default Microsoft and DigiCert roots",
    )

    @field_validator("partner_center_api_url", "partner_center_webhook_api_url", "dataverse_url")
    @classmethod
    def _service_url(cls, value: str) -> str:
        # "" is DATAVERSE_URL's default (empty values are ignored): ``_complete`` decides.
        return _check_service_url(value) if value else value

    @field_validator("partner_center_refresh_token_secret_uri")
    @classmethod
    def _secret_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_secret_uri(value, version=False)
        return value.strip().rstrip("/")

    @field_validator("storage_queue_service_uri", "storage_table_service_uri")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_service_url(value)

    @field_validator("dataverse_poll_schedule", "partner_center_reconcile_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("crm_deal_value_field", "crm_country_field")
    @classmethod
    def _logical_name(cls, value: str) -> str:
        if not _LOGICAL_NAME.match(value):
            raise ValueError("expected a Dataverse logical name: lower-case letters, digits, '_'")
        return value

    @field_validator("crm_column_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value) or value.startswith("mscrm"):
            raise ValueError(
                "expected 2-8 lower-case letters or digits, starting with a letter and not with "
                "'mscrm', then '_' (e.g. cosell_)"
            )
        return value if value.endswith("_") else value + "_"

    @field_validator("referral_link_template")
    @classmethod
    def _link_template(cls, value: str) -> str:
        if "{id}" not in value:
            raise ValueError("must contain {id}, where the referral id goes")
        parts = urlsplit(value.replace("{id}", "x"))
        if parts.scheme != "https" and not is_loopback_url(value.replace("{id}", "x")):
            raise ValueError("must be an https URL")
        return value

    @field_validator("webhook_cert_host_allowlist")
    @classmethod
    def _cert_hosts(cls, value: str) -> str:
        hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("expected at least one host name")
        for host in hosts:
            if not _HOST_PATTERN.match(host):
                raise ValueError(
                    f"{host[:80]!r} is not a host name; expected names such as "
                    "3psostorageacct.blob.core.windows.net or *.example.net (no scheme, path "
                    "or port)"
                )
        return ",".join(hosts)

    @field_validator("webhook_trusted_roots")
    @classmethod
    def _trusted_roots(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Portal and Bicep values often carry the PEM's line breaks as literal "\n".
        text = value.replace("\\n", "\n").strip()
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError("expected PEM text with -----BEGIN CERTIFICATE----- blocks")
        try:
            x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            raise ValueError("a certificate in the PEM text cannot be read") from None
        return text + "\n"

    @field_validator("partner_center_tenant_id", "partner_center_client_id")
    @classmethod
    def _guid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", value
        ):
            raise ValueError("expected a GUID such as 00000000-0000-0000-0000-000000000000")
        return value

    @model_validator(mode="before")
    @classmethod
    def _resolved(cls, data: Any) -> Any:
        # App Service hands the literal reference text to the app when it cannot read the
        # secret; failing here names the setting instead of failing later at Partner Center.
        if isinstance(data, dict):
            unresolved = sorted(
                name
                for name, value in data.items()
                if isinstance(value, str) and value.lstrip().startswith("@Microsoft.KeyVault(")
            )
            if unresolved:
                raise ValueError(
                    "\n".join(
                        f"{name}: the Key Vault reference was not resolved; check that the "
                        "secret exists and the app's identity has 'Key Vault Secrets User' "
                        "(and keyVaultReferenceIdentity points at it)"
                        for name in unresolved
                    )
                )
        return data

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        # Only the services the consumer needs must be complete (all of them, for the app).
        needs = set(_NEEDS.get() or SERVICES)
        problems: list[str] = []
        identity = self.storage_queue_service_uri or self.storage_table_service_uri
        if "storage" not in needs:
            pass
        elif self.storage_connection_string is None and not identity:
            problems.append(
                "AzureWebJobsStorage: missing; expected a storage connection string, or the "
                "identity-based AzureWebJobsStorage__queueServiceUri and "
                "AzureWebJobsStorage__tableServiceUri with AzureWebJobsStorage__credential"
            )
        elif self.storage_connection_string is None:
            for name, value in (
                ("AzureWebJobsStorage__queueServiceUri", self.storage_queue_service_uri),
                ("AzureWebJobsStorage__tableServiceUri", self.storage_table_service_uri),
            ):
                if not value:
                    problems.append(f"{name}: missing; the app uses both queues and tables")
        if "dataverse" in needs and not self.dataverse_url:
            description = Settings.model_fields["dataverse_url"].description
            problems.append(f"DATAVERSE_URL: missing; expected {description}")
        # The sandbox emulators accept a static token; the real service needs app+user auth.
        if "partner_center" in needs and not is_loopback_url(self.partner_center_api_url):
            credentials: tuple[tuple[str, object], ...] = (
                ("PARTNER_CENTER_TENANT_ID", self.partner_center_tenant_id),
                ("PARTNER_CENTER_CLIENT_ID", self.partner_center_client_id),
                ("PARTNER_CENTER_CLIENT_SECRET", self.partner_center_client_secret),
                ("PARTNER_CENTER_REFRESH_TOKEN", self.partner_center_refresh_token),
            )
            for name, credential in credentials:
                if credential is None:
                    problems.append(
                        f"{name}: missing; required when PARTNER_CENTER_API_URL is the real "
                        "service (app+user authentication)"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _mapping_loaded(self) -> Settings:
        # Parsed once, here, so a wrong mapping stops start-up like any wrong setting.
        try:
            self._mapping = load_mapping(text=self.crm_mapping, file=self.crm_mapping_file)
        except MappingError as exc:
            raise ValueError("\n".join(exc.problems)) from None
        return self

    @property
    def mapping(self) -> CrmMapping:
        """The declarative mapping (SPEC 13): ``CRM_MAPPING`` or ``CRM_MAPPING_FILE``."""
        return self._mapping

    @property
    def webhook_cert_hosts(self) -> tuple[str, ...]:
        """``WEBHOOK_CERT_HOST_ALLOWLIST`` as a tuple of lower-case host patterns."""
        return tuple(self.webhook_cert_host_allowlist.split(","))

    @property
    def webhook_trusted_root_certificates(self) -> list[x509.Certificate]:
        """The certificates of ``WEBHOOK_TRUSTED_ROOTS`` (empty when it is not set: then the
        verifier trusts ``shared.partner_center.default_trusted_roots()``)."""
        if self.webhook_trusted_roots is None:
            return []
        return list(x509.load_pem_x509_certificates(self.webhook_trusted_roots.encode()))

    @property
    def sandbox(self) -> bool:
        """True when both SaaS APIs are local emulators (static tokens, no Entra)."""
        return is_loopback_url(self.partner_center_api_url) and is_loopback_url(self.dataverse_url)


class _GivenSettings(Settings):
    """The settings of exactly the values given (``load_settings(needs=...)``), without the
    environment's: a value the caller left out (a secret it does not need) stays out."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def setting_names() -> list[str]:
    """Every app setting the product reads, by its app-setting name."""
    return [field.alias or name for name, field in Settings.model_fields.items()]


def load_settings(
    environ: dict[str, str] | None = None, *, needs: Collection[Service] | None = None
) -> Settings:
    """Read and validate the settings (from ``environ`` if given, else the environment).

    ``needs``: the services whose settings must be complete (default: all, as the app needs);
    a setting of another service may be missing, and is still checked when it is given. With
    ``needs``, only the values of ``environ`` (or the environment) are read.
    """
    try:
        if environ is None and needs is None:
            return Settings()
        source = dict(os.environ) if environ is None else environ
        known = {k: v for k, v in source.items() if k in set(setting_names()) and v != ""}
        if needs is None:
            return Settings.model_validate(known)
        token = _NEEDS.set(tuple(needs))
        try:
            return _GivenSettings.model_validate(known)
        finally:
            _NEEDS.reset(token)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()


def _describe(exc: ValidationError) -> str:
    by_alias = {field.alias or name: field for name, field in Settings.model_fields.items()}
    lines: list[str] = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if not name:  # cross-setting rules already name their settings
            lines.extend(f"  - {part}" for part in message.split("\n"))
            continue
        field = by_alias.get(name)
        expected = field.description if field else None
        if error["type"] == "missing":
            lines.append(f"  - {name}: missing; expected {expected}")
            continue
        shown = "" if name in _SECRET_SETTINGS else f" (got {str(error.get('input'))[:80]!r})"
        # Our own validators already say what is expected; pydantic's built-in ones do not.
        hint = f"; expected {expected}" if expected and error["type"] != "value_error" else ""
        lines.append(f"  - {name}: {message}{shown}{hint}")
    return "invalid app settings:\n" + "\n".join(lines)
