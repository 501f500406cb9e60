"""``cosell config check``: settings, both tokens, one call to each API, and storage.

One line per check; a failing check says what to fix, naming the setting concerned. Warnings
(a queue or table not created yet, no webhook registered) do not fail the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError

from shared import wiring
from shared.cli._context import Context
from shared.cli._output import CheckStatus, Output, mask_url
from shared.cli._parser import add_command, add_group
from shared.dataverse import (
    AccessDenied,
    AuthenticationFailed,
    ConnectionFailed,
    DataverseError,
)
from shared.dataverse import NotFound as DataverseNotFound
from shared.dataverse import Throttled as DataverseThrottled
from shared.errors import SettingsError
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.partner_center import (
    REFERRALS_RESOURCE,
    WEBHOOKS_RESOURCE,
    NotFound,
    PartnerCenterAuthError,
    PartnerCenterError,
    RefreshTokenRejected,
    StaticTokenProvider,
)
from shared.partner_center import ConnectionFailed as PartnerCenterConnectionFailed
from shared.retry import RetryPolicy
from shared.settings import Settings
from shared.state import TABLE_NAMES
from shared.storage import queue_client

CHECK_TIMEOUT_S = 20.0
# A check should fail fast: one retry, short timeouts (the app itself retries much longer).
_QUICK = RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0)
_STORAGE_FIX = (
    "check AzureWebJobsStorage (locally: is Azurite running?); in Azure the app's identity "
    "needs Storage Queue Data Contributor and Storage Table Data Contributor"
)


@dataclass
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None


def add_parser(commands: Any) -> None:
    group = add_group(commands, "config", help="check the app settings and connectivity")
    parser = add_command(
        group,
        "check",
        help="load the settings, get both tokens, call each API once and check storage",
        examples=("cosell config check", "cosell config check --json"),
        notes="Exit status 0 when every check passes (warnings allowed), 1 otherwise.",
        handler=run,
    )
    parser.set_defaults(settings_error=settings_failed)


def settings_failed(out: Output, error: SettingsError) -> int:
    """Settings did not load: that is the first check's result, and the others cannot run."""
    check = Check("settings", "fail", str(error), "set the app settings named above")
    _report(out, [check])
    return 1


async def run(ctx: Context) -> int:
    settings = ctx.settings
    checks = [
        Check("settings", "pass", "loaded" + (" (sandbox emulators)" if settings.sandbox else ""))
    ]
    checks += await asyncio.gather(_queues(ctx), _tables(ctx))
    checks += await _partner_center(settings)
    checks += await _dataverse(settings)
    _report(ctx.out, checks)
    return 0 if all(c.status != "fail" for c in checks) else 1


def _report(out: Output, checks: list[Check]) -> None:
    failed = sum(c.status == "fail" for c in checks)
    if out.json_mode:
        out.json({"ok": failed == 0, "checks": checks})
        return
    for check in checks:
        out.check(check.status, check.name, check.detail, check.fix)
    out.line()
    out.line("config check: " + (f"{failed} check(s) failed" if failed else "all checks passed"))


async def _guarded(name: str, probe: Callable[[], Awaitable[Check]], fix_on_timeout: str) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await probe()
    except TimeoutError:
        return Check(name, "fail", f"no answer within {CHECK_TIMEOUT_S:.0f}s", fix_on_timeout)


# -- storage ------------------------------------------------------------------------------------


async def _queues(ctx: Context) -> Check:
    async def probe() -> Check:
        depths: dict[str, int] = {}
        missing: list[str] = []
        for name in (SYNC_JOBS_QUEUE, POISON_QUEUE):
            try:
                async with queue_client(ctx.settings, name) as client:
                    properties = await client.get_queue_properties()
                depths[name] = int(properties.approximate_message_count or 0)
            except ResourceNotFoundError:
                missing.append(name)
            except AzureError as exc:
                detail = f"{name}: no answer ({type(exc).__name__})"
                return Check("storage queues", "fail", detail, _STORAGE_FIX)
        detail = ", ".join(f"{n}: {d} waiting" for n, d in depths.items())
        if missing:
            return Check(
                "storage queues",
                "warn",
                f"not created yet: {', '.join(missing)}" + (f" ({detail})" if detail else ""),
                "the Functions host creates them when it starts (Bicep in Azure)",
            )
        return Check("storage queues", "pass", detail)

    return await _guarded("storage queues", probe, _STORAGE_FIX)


async def _tables(ctx: Context) -> Check:
    async def probe() -> Check:
        try:
            found = {t.name async for t in ctx.tables().list_tables()}
        except AzureError as exc:
            return Check(
                "storage tables", "fail", f"no answer ({type(exc).__name__})", _STORAGE_FIX
            )
        missing = [name for name in TABLE_NAMES if name not in found]
        if missing:
            return Check(
                "storage tables",
                "warn",
                f"not created yet: {', '.join(missing)}",
                "they are created on first use (Bicep creates them in Azure)",
            )
        return Check("storage tables", "pass", ", ".join(TABLE_NAMES))

    return await _guarded("storage tables", probe, _STORAGE_FIX)


# -- Partner Center -----------------------------------------------------------------------------


async def _partner_center(settings: Settings) -> list[Check]:
    try:
        # A check stores nothing: a rotated refresh token is kept in memory only (the stored
        # one stays valid, Entra does not revoke it on redemption; the app persists rotations).
        tokens = wiring.partner_center_tokens(settings)
    except PartnerCenterAuthError as exc:
        fix = "set the PARTNER_CENTER_* settings"
        return [Check("Partner Center token", "fail", str(exc), fix)]
    sign_in_fix = (
        "a Referrals admin signs in again and the new refresh token goes to "
        "PARTNER_CENTER_REFRESH_TOKEN; check PARTNER_CENTER_TENANT_ID, PARTNER_CENTER_CLIENT_ID "
        "and PARTNER_CENTER_CLIENT_SECRET"
    )
    checks: list[Check] = []
    for resource, label in ((REFERRALS_RESOURCE, "referrals"), (WEBHOOKS_RESOURCE, "webhooks")):

        async def token(resource: str = resource, label: str = label) -> Check:
            name = f"Partner Center token ({label})"
            if isinstance(tokens, StaticTokenProvider):
                return Check(name, "pass", "sandbox token (emulator)")
            try:
                await tokens.get_token(resource)
            except RefreshTokenRejected as exc:
                return Check(name, "fail", str(exc), sign_in_fix)
            except PartnerCenterAuthError as exc:
                return Check(name, "fail", str(exc), sign_in_fix)
            return Check(name, "pass", f"acquired for {resource}")

        checks.append(await _guarded(f"Partner Center token ({label})", token, sign_in_fix))
    if any(c.status == "fail" for c in checks):
        return checks

    async with wiring.partner_center_client(
        settings, token_provider=tokens, retry_policy=_QUICK, timeout=10.0
    ) as pc:

        async def referrals() -> Check:
            name = "Partner Center referrals API"
            try:
                found = [r async for r in pc.list_referrals(top=1)]
            except PartnerCenterError as exc:
                return Check(name, "fail", str(exc), _pc_fix(exc, "PARTNER_CENTER_API_URL"))
            return Check(name, "pass", f"listed {len(found)} referral(s) with $top=1")

        async def webhooks() -> Check:
            name = "Partner Center webhook API"
            try:
                registration = await pc.get_webhook_registration()
            except PartnerCenterError as exc:
                return Check(name, "fail", str(exc), _pc_fix(exc, "PARTNER_CENTER_WEBHOOK_API_URL"))
            if registration is None or not registration.webhook_url:
                return Check(name, "warn", "no webhook registered", "run `cosell webhook register`")
            return Check(
                name, "pass", f"webhook registered to {mask_url(registration.webhook_url)}"
            )

        checks.append(
            await _guarded(
                "Partner Center referrals API", referrals, "check PARTNER_CENTER_API_URL"
            )
        )
        checks.append(
            await _guarded(
                "Partner Center webhook API", webhooks, "check PARTNER_CENTER_WEBHOOK_API_URL"
            )
        )
    return checks


def _pc_fix(exc: PartnerCenterError, setting: str) -> str:
    if isinstance(exc, PartnerCenterAuthError):
        return (
            "the user behind PARTNER_CENTER_REFRESH_TOKEN needs the Referrals admin role "
            "(and, for webhooks, Partner Center admin consent)"
        )
    if isinstance(exc, NotFound | PartnerCenterConnectionFailed) or exc.status == 0:
        return f"check {setting} (no Partner Center API answers there)"
    return f"check {setting} and the service status; the request-id above helps Microsoft support"


# -- Dataverse ----------------------------------------------------------------------------------


def _dataverse_fix(exc: DataverseError, url_fix: str) -> str:
    """The fix the answer points to: a 5xx or a throttle is Dataverse's side, not the URL."""
    if isinstance(exc, DataverseThrottled):
        return "Dataverse's service protection limits were hit: wait the Retry-After and run again"
    if exc.status is not None and exc.status >= 500:
        return (
            f"Dataverse failed on its side (HTTP {exc.status}): run it again in a few minutes and "
            "check the environment's health in the Power Platform admin center"
        )
    return url_fix


async def _dataverse(settings: Settings) -> list[Check]:
    url_fix = f"check DATAVERSE_URL ({settings.dataverse_url}): it must be the environment URL"
    role_fix = (
        "add the app's identity as an application user of the environment, with a security "
        "role that can read and write opportunities, accounts, contacts and the cosell tables"
    )
    checks: list[Check] = []
    credential: Any = None
    if wiring.is_emulator(settings.dataverse_url):
        checks.append(Check("Dataverse token", "pass", "sandbox token (emulator)"))
    else:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
        scope = f"{settings.dataverse_url}/.default"

        async def token() -> Check:
            try:
                await credential.get_token(scope)
            except ClientAuthenticationError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                return Check(
                    "Dataverse token",
                    "fail",
                    f"no token for {scope} ({type(exc).__name__}: {first})",
                    "sign in (`az login`) or, in Azure, give the app its managed identity",
                )
            return Check("Dataverse token", "pass", f"acquired for {scope}")

        checks.append(await _guarded("Dataverse token", token, "check the network to Entra ID"))
    try:
        if checks[-1].status == "fail":
            return checks
        client = wiring.dataverse_client(
            settings, credential=credential, retry_policy=_QUICK, timeout=10.0
        )
        async with client as dataverse:

            async def who_am_i() -> Check:
                name = "Dataverse API (WhoAmI)"
                try:
                    me = await dataverse.who_am_i()
                except ConnectionFailed as exc:
                    return Check(name, "fail", f"no answer from DATAVERSE_URL: {exc}", url_fix)
                except DataverseNotFound as exc:
                    return Check(name, "fail", f"DATAVERSE_URL answered 404: {exc}", url_fix)
                except (AuthenticationFailed, AccessDenied) as exc:
                    return Check(name, "fail", str(exc), role_fix)
                except DataverseError as exc:
                    return Check(name, "fail", str(exc), _dataverse_fix(exc, url_fix))
                except ValueError as exc:  # an answer that is not WhoAmI: not a Dataverse URL
                    return Check(name, "fail", f"unexpected answer ({type(exc).__name__})", url_fix)
                return Check(name, "pass", f"application user {me.user_id}")

            checks.append(await _guarded("Dataverse API (WhoAmI)", who_am_i, url_fix))
    finally:
        if credential is not None:
            await credential.close()
    return checks


__all__ = ["add_parser", "run", "settings_failed"]
