"""The settings one command runs with: only those it needs must be complete.

The app needs every service's settings; a command needs those of the services it talks to
(``NEEDS``, by the command's handler): ``cosell poison list`` runs with ``AzureWebJobsStorage``
alone, and ``cosell sync referral`` without ``PARTNER_CENTER_*`` names each missing setting.
A command not listed needs all of them, as the app does.

Values come from the environment and ``--settings-file`` (a ``local.settings.json``'s
``Values``; the environment wins). A setting whose value is a Key Vault reference is read from
Key Vault with the operator's identity (``shared.cli._keyvault``) when the command needs it,
and left out otherwise (no sign-in for a secret the command does not use).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from shared.cli import (
    backfill,
    drift,
    history,
    mapping,
    poison,
    schema,
    solution,
    status,
    sync,
    webhook,
)
from shared.cli._keyvault import is_reference, resolve_references
from shared.cli._settings_file import read_values
from shared.settings import SERVICES, Service, Settings, load_settings, service_of

STORAGE: tuple[Service, ...] = ("storage",)
PARTNER_CENTER: tuple[Service, ...] = ("partner_center",)
DATAVERSE: tuple[Service, ...] = ("dataverse",)

# The services each command talks to; config check, drift, sync, backfill and selftest (with
# --live, its emulators' data in storage otherwise) use all three.
NEEDS: dict[Callable[..., Awaitable[int]], tuple[Service, ...]] = {
    poison.list_poison: STORAGE,
    poison.replay_poison: STORAGE,
    poison.delete_poison: STORAGE,
    history.run: STORAGE,
    # The health report: storage; a service without settings is reported, not required.
    status.run: STORAGE,
    webhook.register_webhook: PARTNER_CENTER + DATAVERSE,
    webhook.show_webhook: PARTNER_CENTER + DATAVERSE,
    webhook.test_webhook: PARTNER_CENTER + DATAVERSE,
    webhook.unregister_webhook: PARTNER_CENTER + DATAVERSE,
    schema.check: DATAVERSE,
    schema.apply: DATAVERSE,
    solution.export_solution: DATAVERSE,
    solution.import_solution: DATAVERSE,
    mapping.check: DATAVERSE,
    drift.run: SERVICES,
    sync.run: SERVICES,
    backfill.run: SERVICES,
}


def needs_of(args: argparse.Namespace) -> tuple[Service, ...]:
    """The services the parsed command needs (all of them unless ``NEEDS`` says less)."""
    declared = getattr(args, "needs", None)  # a command may set_defaults(needs=...) itself
    if declared is not None:
        return tuple(declared)
    return NEEDS.get(getattr(args, "handler", None), SERVICES)  # type: ignore[arg-type]


def command_settings(args: argparse.Namespace) -> Settings:
    """Load the settings for the parsed command: SettingsError names what is missing or wrong
    (OSError / ValueError: the settings file cannot be read)."""
    needs = needs_of(args)
    values = read_values(getattr(args, "settings_file", None))
    wanted: dict[str, str] = {}
    for name, value in values.items():
        service = service_of(name)
        if is_reference(value) and service is not None and service not in needs:
            continue  # a secret of a service this command does not use: not read
        wanted[name] = value
    if any(is_reference(value) for value in wanted.values()):
        wanted = asyncio.run(resolve_references(wanted))
    return load_settings(wanted, needs=needs)
