"""``cosell schema check|apply``: the custom columns and tables of SPEC 4.1 in Dataverse.

What the sync needs is ``shared.crm_schema`` for ``CRM_COLUMN_PREFIX``. ``check`` reads the
metadata (``EntityDefinitions`` with their attributes, and the options of the two choice
columns) and compares it with that; ``apply`` prints the same plan, then
creates only what is missing: tables, then columns (choices with their options), then the lookup.
It never changes or drops an existing column, so a column with the right name and the wrong type,
or a choice whose options are missing or mean something else, is reported for an administrator to
settle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import crm_schema as crm
from shared.cli._context import Context
from shared.cli._output import confirm
from shared.cli._parser import add_command, add_group
from shared.crm_mapping import CrmMapping
from shared.crm_solution.apply import Applied, missing_privilege
from shared.crm_solution.apply import run as run_steps
from shared.crm_solution.plan import SolutionFinding, plan_container, plan_customizations
from shared.crm_solution.survey import survey
from shared.dataverse import (
    AccessDenied,
    AlreadyExists,
    ColumnDefinition,
    ColumnMetadata,
    DataverseClient,
    DataverseError,
    LookupDefinition,
    TableDefinition,
    TableMetadata,
)

# The client's definition kind of each schema kind (lookups are created as relationships).
DEFINITION_KINDS: dict[crm.Kind, Literal["string", "memo", "boolean", "choice"]] = {
    "text": "string",
    "memo": "memo",
    "bool": "boolean",
    "choice": "choice",
}

Status = Literal["ok", "missing", "differs"]


@dataclass(frozen=True)
class Wanted:
    """One thing the sync needs: a table, a column of a table, or a lookup."""

    table: str  # logical name
    # "extra": a column the declarative mapping names (SPEC 13), the customer's own: checked,
    # never created
    kind: Literal["table", "column", "lookup", "extra"]
    name: str  # logical name of the column (the table's for kind "table")
    attribute_type: str | None = None
    definition: TableDefinition | ColumnDefinition | LookupDefinition | None = None


@dataclass(frozen=True)
class OptionDiff:
    """How a choice column's options differ from the ones the sync needs (value → label)."""

    missing: dict[int, str] = field(default_factory=dict)  # needed, not in Dataverse
    relabelled: dict[int, tuple[str, str]] = field(default_factory=dict)  # value: (found, needed)
    extra: dict[int, str] = field(default_factory=dict)  # in Dataverse, not needed

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.relabelled)

    def describe(self) -> str:
        parts = [f"missing option {v} {text}" for v, text in sorted(self.missing.items())]
        parts += [
            f"option {v} is labelled {found!r}, the sync needs {needed!r}"
            for v, (found, needed) in sorted(self.relabelled.items())
        ]
        parts += [
            f"extra option {v} {text!r} (not used by the sync)"
            for v, text in sorted(self.extra.items())
        ]
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "missing": {str(v): t for v, t in sorted(self.missing.items())},
            "different": {
                str(v): {"found": f, "needed": n} for v, (f, n) in sorted(self.relabelled.items())
            },
            "extra": {str(v): t for v, t in sorted(self.extra.items())},
        }


def _comparable(label: str) -> str:
    # "Proof of concept or demo" and "ProofOfConceptOrDemo" name the same option: an
    # administrator may have made the SPEC 4.2 names readable, which changes no value's meaning.
    return re.sub(r"[^0-9a-z]", "", label.lower())


def diff_options(found: dict[int, str], needed: dict[int, str]) -> OptionDiff:
    """Compare by value, then by label: the sync writes and reads only the integers (reference
    4.6), but a value whose label names another option would be picked by users meaning that
    one, so a different label counts as a difference too."""
    return OptionDiff(
        missing={v: t for v, t in needed.items() if v not in found},
        relabelled={
            v: (found[v], t)
            for v, t in needed.items()
            if v in found and _comparable(found[v]) != _comparable(t)
        },
        extra={v: t for v, t in found.items() if v not in needed},
    )


@dataclass
class Finding:
    wanted: Wanted
    status: Status
    detail: str = ""
    options: OptionDiff | None = None  # choice columns whose options were compared

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "table": self.wanted.table,
            "kind": self.wanted.kind,
            "name": self.wanted.name,
            "type": self.wanted.attribute_type,
            "status": self.status,
            "detail": self.detail,
        }
        if self.options is not None:
            row["options"] = self.options.to_json()
        return row


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "missing"]

    @property
    def differs(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "differs"]


def _definition(column: crm.Column) -> ColumnDefinition:
    return ColumnDefinition(
        schema_name=column.schema_name,
        display_name=column.display_name,
        kind=DEFINITION_KINDS[column.kind],
        max_length=column.max_length,
        options=column.labels if column.kind == "choice" else None,
    )


def wanted_schema(prefix: str) -> list[Wanted]:
    """``shared.crm_schema`` with the configured publisher prefix, in creation order."""
    schema = crm.crm_schema(prefix)
    items = [_wanted_column(c) for c in (*schema.opportunity_columns, *schema.lead_columns)]
    for table in schema.tables:
        created = TableDefinition(
            schema_name=table.schema_name,
            display_name=table.display_name,
            display_collection_name=table.display_collection_name,
            entity_set_name=table.entity_set,
            description=table.description,
            primary_name=_definition(table.primary_name),
        )
        items.append(Wanted(table.logical_name, "table", table.logical_name, definition=created))
        items.append(_wanted_column(table.primary_name, created=True))
        items += [_wanted_column(c) for c in table.columns]
    for lookup in schema.lookups:
        column = lookup.column
        relationship = LookupDefinition(
            schema_name=column.schema_name,
            display_name=column.display_name,
            referenced_table=lookup.referenced_table,
            referenced_key=lookup.referenced_key,
            referencing_table=column.table,
            relationship_schema_name=lookup.relationship_schema_name,
            # The engine reads an opportunity's solutions through this collection in one
            # request (Columns.solutions_relationship).
            referenced_navigation_property_name=lookup.collection,
        )
        items.append(
            Wanted(column.table, "lookup", column.logical_name, "Lookup", definition=relationship)
        )
    return items


def _wanted_column(column: crm.Column, *, created: bool = False) -> Wanted:
    return Wanted(
        column.table,
        "column",
        column.logical_name,
        column.attribute_type,
        # The primary name column comes with its table; it is never created on its own.
        None if created else _definition(column),
    )


async def compare(dataverse: DataverseClient, prefix: str) -> Comparison:
    """What exists, what is missing, what differs (read-only)."""
    tables: dict[str, TableMetadata | None] = {}
    result = Comparison()
    for item in wanted_schema(prefix):
        if item.table not in tables:
            tables[item.table] = await dataverse.find_table(item.table)
        table = tables[item.table]
        if item.kind == "table":
            result.findings.append(
                Finding(item, "ok" if table else "missing", "" if table else "table not found")
            )
            continue
        if table is None:
            result.findings.append(Finding(item, "missing", "its table is missing"))
            continue
        column = table.column(item.name)
        if column is None:
            result.findings.append(Finding(item, "missing", "column not found"))
            continue
        finding = _compare_column(item, column)
        definition = item.definition
        if finding.status == "ok" and isinstance(definition, LookupDefinition):
            finding = await _compare_navigation(dataverse, item, definition)
        if (
            finding.status == "ok"
            and isinstance(definition, ColumnDefinition)
            and definition.options is not None
        ):
            # Attribute listings carry no options (OptionSet is a navigation property of the
            # choice types), so each choice is read on its own: two requests in all.
            found = await dataverse.get_choice_options(item.table, item.name)
            finding = _compare_options(item, found, dict(definition.options))
        result.findings.append(finding)
    return result


def _compare_column(item: Wanted, column: ColumnMetadata) -> Finding:
    found = column.attribute_type or "?"
    if item.attribute_type and found.lower() != item.attribute_type.lower():
        return Finding(item, "differs", f"is {found}, the sync needs {item.attribute_type}")
    if item.kind == "lookup":
        targets = set(column.targets or [])
        # Dataverse lists target logical names (so does the emulator); an entity set name is
        # accepted too, as earlier emulator versions listed those.
        if targets and not targets & {"opportunity", "opportunities"}:
            return Finding(item, "differs", f"targets {sorted(targets)}, not opportunity")
    return Finding(item, "ok")


async def _compare_navigation(
    dataverse: DataverseClient, item: Wanted, lookup: LookupDefinition
) -> Finding:
    """The lookup's navigation properties, read from its relationship (reference 4.5: read them
    from metadata, never guess): the engine binds rows through the lower-case lookup name and
    expands an opportunity's solutions by the collection's name in one request, so a lookup
    made by hand under another relationship name breaks both."""
    relations = await dataverse.list_one_to_many(lookup.referenced_table)
    relation = next(
        (
            r
            for r in relations
            if r.referencing_entity == lookup.referencing_table
            and r.referencing_attribute == lookup.logical_name
        ),
        None,
    )
    if relation is None:  # not listed: nothing to compare, the column itself is there
        return Finding(item, "ok")
    problems = []
    wanted_collection = lookup.referenced_navigation_property_name
    if wanted_collection and relation.referenced_navigation_property_name != wanted_collection:
        problems.append(
            f"{lookup.referenced_table} reaches its rows as "
            f"{relation.referenced_navigation_property_name!r}, the sync expands "
            f"{wanted_collection!r}"
        )
    found_nav = relation.referencing_navigation_property_name
    if found_nav is not None and found_nav != lookup.logical_name:
        problems.append(f"rows bind it as {found_nav!r}, the sync writes {lookup.logical_name!r}")
    return Finding(item, "differs" if problems else "ok", "; ".join(problems))


def _compare_options(item: Wanted, found: dict[int, str], needed: dict[int, str]) -> Finding:
    diff = diff_options(found, needed)
    # Extra options alone do not fail the check: the sync never writes them and reads them as
    # empty (no help requested / no status), but they are listed so nobody is surprised.
    return Finding(item, "differs" if diff.differs else "ok", diff.describe(), options=diff)


def add_parser(commands: Any) -> None:
    group = add_group(commands, "schema", help="check or create the Dataverse columns and tables")
    check_cmd = add_command(
        group,
        "check",
        help="compare Dataverse with what the sync needs: the columns and tables of SPEC 4.1 "
        "(and CRM_MAPPING's extra columns), the opportunity form section and subgrid, the "
        "views and the security roles",
        examples=(
            "cosell schema check",
            "cosell schema check --solution CoSellSync --json",
        ),
        notes="Names carry CRM_COLUMN_PREFIX. With --solution it also checks that the solution "
        "holds every component. Exit status 1 when anything is missing or differs.",
        handler=check,
    )
    _solution_option(check_cmd)
    apply_cmd = add_command(
        group,
        "apply",
        help="create what is missing: columns and tables, the form section and subgrid, views "
        "and security roles (inside a solution with --solution); says what it will do first",
        examples=(
            "cosell schema apply --solution CoSellSync --what-if",
            "cosell schema apply --solution CoSellSync --yes",
            "cosell schema apply --yes --json",
        ),
        notes="Idempotent: a second run has nothing to do. Existing columns, form sections, "
        "views and roles are never changed or dropped; one that differs is reported and makes "
        "the exit status 1. --solution creates the publisher (prefix CRM_COLUMN_PREFIX) and "
        "the unmanaged solution if missing and puts every component in it. Asks before "
        "changing anything unless --yes.",
        handler=apply,
    )
    _solution_option(apply_cmd)
    apply_cmd.add_argument(
        "--what-if", action="store_true", help="print what would change and change nothing"
    )
    apply_cmd.add_argument("--yes", action="store_true", help="do not ask first")


def _solution_option(parser: Any) -> None:
    parser.add_argument(
        "--solution",
        metavar="NAME",
        default=None,
        help="the unmanaged solution (unique name) that holds the customisations",
    )


def _print_findings(ctx: Context, comparison: Comparison, *, title: str) -> None:
    ctx.out.table(
        [
            (
                f.wanted.table,
                f.wanted.kind,
                f.wanted.name,
                f.wanted.attribute_type,
                f.status,
                f.detail,
            )
            for f in comparison.findings
        ],
        ("table", "kind", "name", "type", "status", "detail"),
        title=title,
    )


async def compare_extra(dataverse: DataverseClient, mapping: CrmMapping) -> list[Finding]:
    """The ``extra`` columns of the declarative mapping (SPEC 13): they are the customer's own,
    so ``apply`` creates none of them, but the sync cannot run without them. Only whether each
    exists; ``cosell mapping check`` compares types and choice values."""
    if not mapping.extra:
        return []
    opportunity = await dataverse.find_table("opportunity")
    findings = []
    for index, extra in enumerate(mapping.extra):
        column = opportunity.column(extra.crm) if opportunity is not None else None
        wanted = Wanted("opportunity", "extra", extra.crm)
        if column is None:
            detail = f"column not found (the mapping's $.extra[{index}], {extra.referral})"
            findings.append(Finding(wanted, "missing", detail))
        else:
            detail = f"{column.attribute_type or '?'}, mapped from {extra.referral}"
            findings.append(Finding(wanted, "ok", detail))
    return findings


async def check(ctx: Context) -> int:
    prefix = ctx.settings.crm_column_prefix
    dataverse = await ctx.dataverse()
    comparison = await compare(dataverse, prefix)
    comparison.findings += await compare_extra(dataverse, ctx.settings.mapping)
    found = await survey(dataverse, prefix, ctx.args.solution)
    container, custom = plan_container(found), plan_customizations(found)
    extras = [*container.findings, *custom.findings]
    columns_ok = not comparison.missing and not comparison.differs
    ok = columns_ok and all(f.status == "ok" for f in extras)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "prefix": prefix,
                "solution": ctx.args.solution,
                "ok": ok,
                "items": [f.row() for f in comparison.findings],
                "customizations": [f.row() for f in extras],
            }
        )
        return 0 if ok else 1
    _print_findings(ctx, comparison, title=f"Dataverse schema (prefix {prefix}):")
    # The table cuts long details; option differences are spelled out in full below it.
    for finding in comparison.findings:
        if finding.options is not None and finding.detail:
            mark = "!" if finding.status == "differs" else "note:"
            ctx.out.line(f"  {mark} {finding.wanted.table}.{finding.wanted.name} {finding.detail}")
        if finding.wanted.kind == "extra" and finding.status == "missing":
            ctx.out.line(
                f"  ! {finding.wanted.table}.{finding.wanted.name}: {finding.detail}; it is your "
                "own column, so `cosell schema apply` does not create it: add it in the maker "
                "portal or correct the mapping"
            )
    ctx.out.line()
    _print_customizations(ctx, extras)
    for problem in [*container.problems, *custom.problems]:
        ctx.out.line(f"  ! {problem}")
    ctx.out.line()
    if ok:
        ctx.out.line("schema check: everything the sync needs is there")
    else:
        ours = [f for f in comparison.missing if f.wanted.kind != "extra"]
        theirs = [f.wanted.name for f in comparison.missing if f.wanted.kind == "extra"]
        lacking = [f for f in extras if f.status != "ok"]
        solution = f" --solution {ctx.args.solution}" if ctx.args.solution else ""
        ctx.out.line(
            f"schema check: {len(comparison.missing)} column(s) or table(s) missing, "
            f"{len(comparison.differs)} differ, {len(lacking)} customisation(s) to settle"
            + (f"; run `cosell schema apply{solution}`" if ours or lacking else "")
            + (
                f"; create the mapping's extra column(s) {', '.join(theirs)} yourself"
                if theirs
                else ""
            )
        )
    return 0 if ok else 1


def _print_customizations(ctx: Context, findings: list[SolutionFinding]) -> None:
    ctx.out.table(
        [(f.kind, f.name, f.status, f.detail) for f in findings],
        ("kind", "name", "status", "detail"),
        title="Solution, form, views and roles:",
    )


async def apply(ctx: Context) -> int:
    out, prefix, args = ctx.out, ctx.settings.crm_column_prefix, ctx.args
    solution: str | None = args.solution
    dataverse = await ctx.dataverse()
    comparison = await compare(dataverse, prefix)
    # Columns of a missing table are created after it; the primary name comes with the table.
    todo = [f for f in comparison.missing if f.wanted.definition is not None]
    found = await survey(dataverse, prefix, solution)
    container = plan_container(found)
    preview = plan_customizations(found)
    plan = [_describe(f.wanted) for f in todo]
    steps = [s.describe() for s in (*container.steps, *preview.steps)]
    problems = [*container.problems, *preview.problems]
    if not out.json_mode:
        _print_plan(ctx, plan, steps, solution)
    if found.solution is not None and found.solution.is_managed and (plan or steps):
        # A managed solution's components are changed by importing a new version of it.
        out.error(
            f"solution {solution} is managed here: make the change in the staging environment "
            "(`cosell schema apply --solution` there), export it again and import it "
            "(docs/deploy.md, step 8)"
        )
        return 1
    if args.what_if:
        if out.json_mode:
            out.json(
                {
                    "prefix": prefix,
                    "solution": solution,
                    "planned": plan,
                    "steps": steps,
                    "problems": problems,
                    "what_if": True,
                }
            )
        else:
            for problem in problems:
                out.line(f"  ! {problem}")
            out.line("what-if: nothing was changed")
        return 0
    if (plan or steps) and not args.yes and not confirm("Apply these changes to Dataverse?"):
        out.error("nothing was changed (pass --yes to apply without a question)")
        return 1
    applied = await run_steps(dataverse, found, container.steps)
    created, existed = await _create_columns(ctx, dataverse, todo, solution, applied)
    if applied.ok:
        # Read again: new tables brought their default view (the subgrid's) and privileges.
        found = await survey(dataverse, prefix, solution)
        custom = plan_customizations(found)
        problems = [*container.problems, *custom.problems]
        await run_steps(dataverse, found, custom.steps, result=applied)
    after = await compare(dataverse, prefix) if todo else comparison
    still_missing = [f.row() for f in after.missing]
    differs = [f.row() for f in after.differs]
    ok = applied.ok and not still_missing and not differs and not problems
    if out.json_mode:
        out.json(
            {
                "prefix": prefix,
                "solution": solution,
                "planned": plan,
                "created": created,
                "already_existed": existed,
                "missing": still_missing,
                "differs": differs,
                "steps_done": applied.done,
                "failed": applied.failed,
                "not_done": applied.not_done,
                "missing_privilege": applied.missing_privilege,
                "problems": problems,
                "ok": ok,
            }
        )
        return 0 if ok else 1
    if created or applied.done:
        out.line()
        out.line(
            f"Created {len(created)} column(s) or table(s); {len(applied.done)} other step(s) done."
        )
    for row in differs:
        out.line(
            f"  ! {row['table']}.{row['name']} {row['detail']}: left unchanged (apply never "
            "changes existing columns); fix it in the maker portal"
        )
    for row in still_missing:
        out.line(f"  ! {row['table']}.{row['name']} is still missing: {row['detail']}")
    for problem in problems:
        out.line(f"  ! {problem}")
    if applied.failed:
        _report_failure(ctx, applied)
    return 0 if ok else 1


def _print_plan(ctx: Context, plan: list[str], steps: list[str], solution: str | None) -> None:
    out = ctx.out
    if not plan and not steps:
        out.line("Nothing to do: everything the sync needs exists.")
        return
    where = f" in solution {solution}" if solution else ""
    out.line(f"Will create{where} ({len(plan) + len(steps)}):")
    for line in (*plan, *steps):
        out.line(f"  + {line}")


def _report_failure(ctx: Context, applied: Applied) -> None:
    out = ctx.out
    out.error(f"stopped at: {applied.failed}")
    if applied.missing_privilege:
        out.error(
            f"your identity lacks the Dataverse privilege {applied.missing_privilege}: ask an "
            "administrator for it (the System Customizer role has it) and run apply again"
        )
    if applied.done:
        out.error("already applied: " + "; ".join(applied.done))
    if applied.not_done:
        out.error("not applied: " + "; ".join(applied.not_done))
    out.error("apply is idempotent: run it again once the cause is fixed to finish")


async def _create_columns(
    ctx: Context,
    dataverse: DataverseClient,
    todo: list[Finding],
    solution: str | None,
    applied: Applied,
) -> tuple[list[str], list[str]]:
    created: list[str] = []
    existed: list[str] = []
    if not todo or not applied.ok:
        return created, existed
    progress = ctx.out.progress("schema apply", len(todo))
    for index, finding in enumerate(todo):
        wanted = finding.wanted
        try:
            await _create(dataverse, wanted, solution)
            created.append(_describe(wanted))
        except AlreadyExists:  # created meanwhile by someone else: that is fine
            existed.append(_describe(wanted))
        except DataverseError as exc:
            applied.failed = f"{_describe(wanted)}: {exc}"
            if isinstance(exc, AccessDenied):
                applied.missing_privilege = missing_privilege(exc)
            applied.done += created
            applied.not_done = [_describe(f.wanted) for f in todo[index + 1 :]]
            progress.finish()
            return created, existed
        progress.advance()
    progress.finish()
    return created, existed


def _describe(wanted: Wanted) -> str:
    if wanted.kind == "table":
        return f"table {wanted.name}"
    if wanted.kind == "lookup":
        return f"lookup {wanted.table}.{wanted.name} → opportunity"
    return f"column {wanted.table}.{wanted.name} ({wanted.attribute_type})"


async def _create(dataverse: DataverseClient, wanted: Wanted, solution: str | None) -> None:
    definition = wanted.definition
    if isinstance(definition, TableDefinition):
        await dataverse.create_table(definition, solution=solution)
    elif isinstance(definition, LookupDefinition):
        await dataverse.create_lookup(definition, solution=solution)
    elif isinstance(definition, ColumnDefinition):
        await dataverse.create_column(wanted.table, definition, solution=solution)
