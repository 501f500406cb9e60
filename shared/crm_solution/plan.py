"""Decide, from a ``Survey``, what the environment lacks and the steps that add it (pure).

``findings`` is what ``cosell schema check`` prints; ``steps`` is what ``apply`` runs and
``--what-if`` prints. Nothing here changes what an administrator made: a form section or view
of ours that differs, or a role with more privileges than it needs, is reported, never
rewritten (they may have adjusted it on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import ParseError, canonicalize

from shared.crm_schema import crm_schema
from shared.crm_solution import components as wanted
from shared.crm_solution.form_xml import FormXmlError, add_section, inspect_form
from shared.crm_solution.survey import ComponentKey, Survey
from shared.dataverse import ComponentType, depth_covers

Status = Literal["ok", "missing", "differs"]
Kind = Literal["publisher", "solution", "form", "view", "role", "component"]


@dataclass(frozen=True)
class SolutionFinding:
    kind: Kind
    name: str
    status: Status
    detail: str = ""

    def row(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class CreatePublisher:
    spec: wanted.PublisherSpec

    def describe(self) -> str:
        return f"publisher {self.spec.unique_name} (prefix {self.spec.prefix})"


@dataclass(frozen=True)
class CreateSolution:
    name: str

    def describe(self) -> str:
        return f"unmanaged solution {self.name}"


@dataclass(frozen=True)
class EditForm:
    form_id: str
    form_name: str
    formxml: str

    def describe(self) -> str:
        return f"form section 'Microsoft Partner Center' and subgrid on form {self.form_name!r}"


@dataclass(frozen=True)
class CreateView:
    spec: wanted.ViewSpec

    def describe(self) -> str:
        return f"view {self.spec.name!r} on {self.spec.table}"


@dataclass(frozen=True)
class CreateRole:
    spec: wanted.RoleSpec

    def describe(self) -> str:
        return f"security role {self.spec.name!r}"


@dataclass(frozen=True)
class GrantPrivileges:
    role: str
    privileges: tuple[tuple[str, str, wanted.Depth], ...]  # name, privilege id, depth

    def describe(self) -> str:
        return f"{len(self.privileges)} privilege(s) on role {self.role!r}"


@dataclass(frozen=True)
class AddComponent:
    component_type: int
    object_id: str
    label: str
    subcomponents: bool

    def describe(self) -> str:
        return f"add {self.label} to the solution"


@dataclass(frozen=True)
class Publish:
    tables: tuple[str, ...]

    def describe(self) -> str:
        return f"publish customisations of {', '.join(self.tables)}"


Step = (
    CreatePublisher
    | CreateSolution
    | EditForm
    | CreateView
    | CreateRole
    | GrantPrivileges
    | AddComponent
    | Publish
)


@dataclass
class Plan:
    findings: list[SolutionFinding]
    steps: list[Step]
    problems: list[str]  # what apply cannot fix (a form it cannot read, a managed solution…)

    @property
    def ok(self) -> bool:
        return all(f.status == "ok" for f in self.findings)


def plan_container(found: Survey) -> Plan:
    """The publisher and the solution (with ``--solution``): created before any column, so the
    columns can be created inside it."""
    result = Plan([], [], [])
    name = found.solution_name
    if not name:
        return result
    spec = wanted.publisher(found.prefix)
    if found.solution is not None:
        result.findings.append(
            SolutionFinding("solution", name, "ok", f"version {found.solution.version}")
        )
        return result
    if found.publisher is None:
        result.findings.append(SolutionFinding("publisher", spec.unique_name, "missing"))
        result.steps.append(CreatePublisher(spec))
    else:
        result.findings.append(SolutionFinding("publisher", found.publisher.unique_name, "ok"))
    result.findings.append(SolutionFinding("solution", name, "missing"))
    result.steps.append(CreateSolution(name))
    return result


def plan_customizations(found: Survey) -> Plan:
    """Form section and subgrid, views, roles and privileges, solution components, publish."""
    result = Plan([], [], [])
    _forms(found, result)
    _views(found, result)
    _roles(found, result)
    _components(found, result)
    if any(isinstance(s, EditForm | CreateView) for s in result.steps):
        result.steps.append(Publish(("opportunity", *wanted.custom_tables(found.prefix))))
    return result


def _forms(found: Survey, result: Plan) -> None:
    section = wanted.form_section(found.prefix, solutions_view_id=found.solutions_view_id)
    if not found.forms:
        result.findings.append(
            SolutionFinding("form", "opportunity main form", "missing", "none found")
        )
        result.problems.append("Dataverse lists no main form for opportunity")
        return
    for form in found.forms:
        label = form.name or form.id
        try:
            state = inspect_form(form.formxml or "", section)
            edited = add_section(form.formxml or "", section)
        except FormXmlError as exc:
            detail = f"left untouched: its form XML could not be read ({exc})"
            result.findings.append(SolutionFinding("form", label, "differs", detail))
            result.problems.append(f"form {label!r} {detail}; add the section by hand")
            continue
        missing = [*state.missing_fields, *([] if state.subgrid_present else ["subgrid"])]
        if not missing:
            result.findings.append(
                SolutionFinding("form", label, "ok", "section fields and subgrid")
            )
            continue
        detail = "lacks " + ", ".join(missing)
        if edited == form.formxml:
            # Our section is there but someone changed it: theirs to finish.
            detail += " (the section exists and was edited by hand: left as it is)"
            result.findings.append(SolutionFinding("form", label, "differs", detail))
            continue
        result.findings.append(SolutionFinding("form", label, "missing", detail))
        result.steps.append(EditForm(form.id, label, edited))


def _views(found: Survey, result: Plan) -> None:
    for spec in wanted.views(found.prefix):
        view = found.views.get(spec.name)
        if view is None:
            result.findings.append(SolutionFinding("view", spec.name, "missing"))
            result.steps.append(CreateView(spec))
        elif not _same_query(view.fetchxml, spec.fetchxml):
            detail = "its query differs from the app's (left as it is)"
            result.findings.append(SolutionFinding("view", spec.name, "differs", detail))
        else:
            result.findings.append(SolutionFinding("view", spec.name, "ok"))


def _same_query(found: str | None, wanted_xml: str) -> bool:
    """Equal as XML (C14N: attribute order, quoting and whitespace between tags do not count)."""
    try:
        return canonicalize(found or "", strip_text=True) == canonicalize(
            wanted_xml, strip_text=True
        )
    except ParseError:
        return False


def _roles(found: Survey, result: Plan) -> None:
    for spec in wanted.roles(found.prefix):
        role = found.roles.get(spec.name)
        held = role.privileges if role is not None else {}
        grant: list[tuple[str, str, wanted.Depth]] = []
        unknown: list[str] = []
        for name, depth in spec.privileges:
            have = held.get(name.lower())
            if depth_covers(have, depth):
                continue
            privilege = found.privileges.get(name.lower())
            if privilege is None:
                unknown.append(name)
            else:
                grant.append((name, privilege.id, depth))
        needed = {n.lower() for n in spec.names}
        extra = sorted(n for n in held if n not in needed)
        if role is None:
            result.findings.append(SolutionFinding("role", spec.name, "missing"))
            result.steps.append(CreateRole(spec))
        if grant:
            if role is not None:
                result.findings.append(
                    SolutionFinding(
                        "role", spec.name, "missing", "lacks " + ", ".join(n for n, _, _ in grant)
                    )
                )
            result.steps.append(GrantPrivileges(spec.name, tuple(grant)))
        if unknown:
            # Privileges of a table that does not exist yet appear when the table is created.
            result.findings.append(
                SolutionFinding(
                    "role", spec.name, "missing", "no such privilege yet: " + ", ".join(unknown)
                )
            )
        if role is not None and not grant and not unknown:
            detail = f"also holds {', '.join(extra)} (more than it needs)" if extra else ""
            result.findings.append(
                SolutionFinding("role", spec.name, "differs" if extra else "ok", detail)
            )


def _components(found: Survey, result: Plan) -> None:
    """Everything the solution should carry, added when it exists but is not in it yet; what is
    created in this run joins through the ``MSCRM.SolutionUniqueName`` header instead."""
    if not found.solution_name or found.solution is None:
        return
    schema = crm_schema(found.prefix)
    kind = ComponentType
    keys: list[tuple[ComponentKey, str, bool]] = [
        (
            (kind.ENTITY, "opportunity"),
            "table opportunity (without its other columns)",
            False,
        ),
        ((kind.ENTITY, "lead"), "table lead (without its other columns)", False),
    ]
    for table, columns in (
        ("opportunity", schema.opportunity_columns),
        ("lead", schema.lead_columns),
    ):
        keys += [
            (
                (kind.ATTRIBUTE, f"{table}.{c.logical_name}"),
                f"column {table}.{c.logical_name}",
                True,
            )
            for c in columns
        ]
    keys += [
        ((kind.ENTITY, t.logical_name), f"table {t.logical_name}", True) for t in schema.tables
    ]
    relationship = schema.solution_opportunity.relationship_schema_name
    keys.append(((kind.RELATIONSHIP, relationship), f"relationship {relationship}", True))
    # (componenttype, object id, label, with subcomponents) of what exists now
    present = [
        (key[0], found.metadata_ids[key], label, sub)
        for key, label, sub in keys
        if key in found.metadata_ids  # the rest is created inside the solution
    ]
    present += [(kind.SYSTEM_FORM, f.id, f"form {f.name or f.id}", True) for f in found.forms]
    for view_spec in wanted.views(found.prefix):
        view = found.views.get(view_spec.name)
        if view is not None:
            present.append((kind.SAVED_QUERY, view.id, f"view {view_spec.name}", True))
    for role_spec in wanted.roles(found.prefix):
        role = found.roles.get(role_spec.name)
        if role is not None:
            present.append((kind.ROLE, role.role.id, f"role {role_spec.name}", True))
    missing: list[str] = []
    for component_type, object_id, label, subcomponents in present:
        if object_id.lower() not in found.in_solution:
            missing.append(label)
            result.steps.append(AddComponent(component_type, object_id, label, subcomponents))
    status: Status = "missing" if missing else "ok"
    detail = ("lacks " + ", ".join(missing)) if missing else "holds every component"
    result.findings.append(SolutionFinding("component", found.solution_name, status, detail))
