"""``cosell solution export|import``: promote the customisations from staging to production.

Microsoft's connector tells admins to test on a staging CRM and import its solution **as a
managed solution** into production (shared/reference dynamics-cosell-connector.md); this is that
path for ours. ``export`` publishes the solution's tables and calls ``ExportSolution``;
``import`` reads the file's manifest, calls ``ImportSolutionAsync`` and follows the import job's
progress until it ends (learn.microsoft.com power-platform/alm/solution-async).
"""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4
from xml.etree import ElementTree

from shared.cli._context import Context
from shared.cli._output import confirm
from shared.cli._parser import add_command, add_group
from shared.crm_solution import components
from shared.dataverse import AccessDenied, DataverseError

DEFAULT_SOLUTION = "CoSellSync"
MAX_FILE_BYTES = 95 * 1024 * 1024  # Dataverse refuses solution files above 95 MB
POLL_S = 0.5
IMPORT_TIMEOUT_S = 1800.0


def add_parser(commands: Any) -> None:
    group = add_group(commands, "solution", help="export or import the Dataverse solution")
    export = add_command(
        group,
        "export",
        help="publish and export the solution (managed for production) to a file",
        examples=(
            "cosell solution export --managed --out CoSellSync_managed.zip",
            "cosell solution export --solution CoSellSync --out CoSellSync.zip",
        ),
        notes="Run it against the staging environment, where `cosell schema apply --solution` "
        "made the solution; import the file into production with `cosell solution import`.",
        handler=export_solution,
    )
    export.add_argument("--solution", metavar="NAME", default=DEFAULT_SOLUTION)
    export.add_argument("--managed", action="store_true", help="export as a managed solution")
    export.add_argument("--out", metavar="FILE", required=True, help="the zip file to write")
    imported = add_command(
        group,
        "import",
        help="import a solution file and follow the import job to its end",
        examples=("cosell solution import CoSellSync_managed.zip --yes",),
        notes="Shows the file's solution, version and whether it is managed, asks before "
        "importing unless --yes, then shows the import job's progress. Run `cosell schema "
        "check --solution NAME` afterwards.",
        handler=import_solution,
    )
    imported.add_argument("file", metavar="FILE", help="a solution zip (solution export)")
    imported.add_argument("--yes", action="store_true", help="do not ask first")
    imported.add_argument(
        "--overwrite-unmanaged",
        action="store_true",
        help="overwrite unmanaged customisations made over the solution's components",
    )


@dataclass(frozen=True)
class Manifest:
    unique_name: str
    version: str
    managed: bool
    publisher: str


class BadSolutionFile(ValueError):
    """The file is not a solution zip this command can read (the reason says why)."""


def read_manifest(data: bytes) -> Manifest:
    """``solution.xml``'s SolutionManifest: what is about to be imported."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BadSolutionFile("not a zip file") from exc
    with archive:
        names = set(archive.namelist())
        for required in ("solution.xml", "customizations.xml"):
            if required not in names:
                raise BadSolutionFile(f"the zip has no {required}")
        info = archive.getinfo("solution.xml")
        if info.file_size > 5 * 1024 * 1024:
            raise BadSolutionFile("solution.xml is larger than 5 MB")
        text = archive.read("solution.xml")
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 - a file the operator chose, size-capped
    except ElementTree.ParseError as exc:
        raise BadSolutionFile(f"solution.xml is not XML ({exc})") from exc
    manifest = root.find("SolutionManifest")
    if manifest is None:
        raise BadSolutionFile("solution.xml has no SolutionManifest")
    name = (manifest.findtext("UniqueName") or "").strip()
    if not name:
        raise BadSolutionFile("the SolutionManifest has no UniqueName")
    return Manifest(
        unique_name=name,
        version=(manifest.findtext("Version") or "?").strip(),
        managed=(manifest.findtext("Managed") or "0").strip() == "1",
        publisher=(manifest.findtext("Publisher/UniqueName") or "?").strip(),
    )


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BadSolutionFile("larger than the 95 MB Dataverse accepts")
    return data


async def export_solution(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    api = (await ctx.dataverse()).customizations
    solution = await api.find_solution(args.solution)
    if solution is None:
        out.error(
            f"no solution {args.solution} in this environment: run `cosell schema apply "
            f"--solution {args.solution}` there first"
        )
        return 1
    if solution.is_managed:
        out.error(f"{args.solution} is managed here; export it from the environment it was made in")
        return 1
    # Export takes the published customisations; publish ours so nothing is left behind.
    await api.publish(
        ("opportunity", "lead", *components.custom_tables(ctx.settings.crm_column_prefix))
    )
    try:
        data = await api.export_solution(args.solution, managed=args.managed)
    except AccessDenied as exc:
        out.error(f"export refused: {exc} (the operator needs prvExportCustomization)")
        return 1
    manifest = read_manifest(data)
    await asyncio.to_thread(Path(args.out).write_bytes, data)
    document = {
        "solution": manifest.unique_name,
        "version": manifest.version,
        "managed": manifest.managed,
        "file": str(args.out),
        "bytes": len(data),
    }
    if out.json_mode:
        out.json(document)
    else:
        kind = "managed" if manifest.managed else "unmanaged"
        out.line(
            f"Exported {manifest.unique_name} {manifest.version} ({kind}) to {args.out} "
            f"({len(data):,} bytes)"
        )
    return 0


async def import_solution(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    path = Path(args.file)
    try:
        data = await asyncio.to_thread(_read_capped, path)
    except (OSError, BadSolutionFile) as exc:
        out.error(f"cannot read {path}: {exc}")
        return 1
    try:
        manifest = read_manifest(data)
    except BadSolutionFile as exc:
        out.error(f"{path} is not a solution file: {exc}")
        return 1
    kind = "managed" if manifest.managed else "unmanaged"
    out.line(
        f"Importing {manifest.unique_name} {manifest.version} ({kind}, publisher "
        f"{manifest.publisher}) from {path}"
    )
    if not args.yes and not confirm("Import it into this Dataverse environment?"):
        out.error("nothing was imported (pass --yes to import without a question)")
        return 1
    api = (await ctx.dataverse()).customizations
    job_id = uuid4()
    try:
        operation_id = await api.start_import(
            data, import_job_id=job_id, overwrite_unmanaged=args.overwrite_unmanaged
        )
    except DataverseError as exc:
        hint = (
            " (the operator needs prvImportCustomization)" if isinstance(exc, AccessDenied) else ""
        )
        out.error(f"import refused: {exc}{hint}")
        return 1
    progress = out.progress("solution import", 100)
    started = time.monotonic()
    while True:
        job = await api.get_import_job(job_id)
        if job is not None and job.progress is not None:
            progress.advance(int(job.progress) - progress.done)
        operation = await api.get_async_operation(operation_id)
        if operation.finished:
            break
        if time.monotonic() - started > IMPORT_TIMEOUT_S:
            progress.finish()
            out.error(
                f"the import is still running after {IMPORT_TIMEOUT_S:.0f} s: follow import job "
                f"{job_id} in the maker portal (Solutions > History)"
            )
            return 1
        await asyncio.sleep(POLL_S)
    if operation.succeeded:
        progress.advance(100 - progress.done)
    progress.finish()
    document = {
        "solution": manifest.unique_name,
        "version": manifest.version,
        "managed": manifest.managed,
        "import_job": str(job_id),
        "succeeded": operation.succeeded,
        "message": operation.friendly_message or operation.message,
    }
    if out.json_mode:
        out.json(document)
    elif operation.succeeded:
        out.line(
            f"Imported {manifest.unique_name} {manifest.version}. Next: `cosell schema check "
            f"--solution {manifest.unique_name}`."
        )
    if not operation.succeeded:
        reason = operation.friendly_message or operation.message or "no reason given"
        out.error(f"the import failed: {reason} (import job {job_id})")
        return 1
    return 0
