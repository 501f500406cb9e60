"""``cosell``: the operator command line (SPEC section 10).

Each command group lives in its own module and is a thin call into the app's modules (settings,
health, clients, state, engine); the CLI holds no sync logic. Every command prints a readable
table, or one JSON document with ``--json``, and exits 0 on success, 1 on failure (the reason on
stderr) and 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from azure.core.exceptions import AzureError

from shared import __version__
from shared.cli import (
    backfill,
    config,
    drift,
    history,
    mapping,
    poison,
    schema,
    selftest,
    solution,
    status,
    sync,
    webhook,
)
from shared.cli._context import Context, EngineUnavailable
from shared.cli._output import Output
from shared.cli._parser import Handler, new_parser
from shared.cli._settings import command_settings
from shared.errors import CosellError, SettingsError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_GROUPS = (
    config,
    status,
    drift,
    webhook,
    sync,
    backfill,
    poison,
    history,
    schema,
    solution,
    mapping,
    selftest,
)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "cosell",
        description="Operate Co-sell Sync: check configuration and health, register the "
        "Partner Center webhook, sync or backfill deals, replay failed jobs, read history, "
        "create the Dataverse schema and check the declarative mapping against it.",
        examples=(
            "cosell config check",
            "cosell status --json",
            "cosell sync referral 6f1f8a5e-3d4c-4b2a-9e8f-000000000001 --dry-run",
            "cosell --settings-file local.settings.json schema check",
            "cosell mapping check --json",
        ),
        top_level=True,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--settings-file",
        metavar="PATH",
        help="read app settings from a local.settings.json ('Values') as well as from the "
        "environment (the environment wins)",
    )
    parser.add_argument(
        "--wide", action="store_true", help="print table cells in full instead of cutting them"
    )
    parser.add_argument(
        "--debug", action="store_true", help="log client calls to stderr and show tracebacks"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(json_mode=bool(getattr(args, "json", False)), wide=bool(args.wide))
    if args.debug:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    handler: Handler = args.handler
    try:
        settings = command_settings(args)
    except SettingsError as exc:
        on_error = getattr(args, "settings_error", None)
        if on_error is not None:  # `config check` reports it as its first check
            return int(on_error(out, exc))
        out.error(str(exc))
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        out.error(f"--settings-file: {exc}")
        return EXIT_FAILED
    try:
        return asyncio.run(_run(handler, Context(args, settings, out)))
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except (CosellError, EngineUnavailable) as exc:
        if args.debug:
            raise
        out.error(str(exc))
        return EXIT_FAILED
    except AzureError as exc:
        if args.debug:
            raise
        out.error(
            f"storage: {type(exc).__name__}: {_first_line(str(exc))} (check AzureWebJobsStorage)"
        )
        return EXIT_FAILED
    except Exception as exc:  # one line for the operator; --debug shows the traceback
        if args.debug:
            raise
        out.error(f"unexpected {type(exc).__name__}: {_first_line(str(exc))} (rerun with --debug)")
        return EXIT_FAILED


async def _run(handler: Handler, ctx: Context) -> int:
    async with ctx:
        return await handler(ctx)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
