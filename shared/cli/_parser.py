"""Parser helpers shared by the command modules: ``--json`` on every command, examples in help."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.cli._context import Context

Handler = Callable[["Context"], Awaitable[int]]
WIDTH = 78


def _wrap(text: str) -> str:
    # Raw formatting keeps the examples as written; prose lines are wrapped here instead.
    return "\n".join(
        line if line.startswith(" ") else textwrap.fill(line, WIDTH) for line in text.splitlines()
    )


def _epilog(examples: Sequence[str], notes: str | None) -> str:
    text = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return f"{_wrap(notes.strip())}\n\n{text}" if notes else text


def new_parser(
    prog: str,
    *,
    description: str,
    examples: Sequence[str],
    notes: str | None = None,
    top_level: bool = False,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_wrap(description),
        epilog=_epilog(examples, notes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_json(parser, top_level=top_level)
    return parser


def _add_json(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Accepted before or after the command (`cosell --json status`, `cosell status --json`):
    # below the top level the default is SUPPRESS, so an absent flag keeps the top-level value.
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="print one JSON document (machine output) instead of tables",
    )


def add_command(
    commands: Any,
    name: str,
    *,
    help: str,
    description: str | None = None,
    examples: Sequence[str] = (),
    notes: str | None = None,
    handler: Handler | None = None,
) -> argparse.ArgumentParser:
    """A (sub)command with ``--json`` and its examples; ``handler`` runs it."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=_epilog(examples, notes) if examples else notes and _wrap(notes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_json(parser, top_level=False)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_group(commands: Any, name: str, *, help: str) -> Any:
    """A command group (``webhook``, ``poison``...) whose subcommands are required."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    return parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
