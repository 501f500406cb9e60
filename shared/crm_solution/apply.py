"""Run the steps ``plan.py`` decided, in order, stopping at the first failure so that what was
applied and what was not can be said exactly (``Applied``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.crm_solution.plan import (
    AddComponent,
    CreatePublisher,
    CreateRole,
    CreateSolution,
    CreateView,
    EditForm,
    GrantPrivileges,
    Publish,
    Step,
)
from shared.crm_solution.survey import Survey
from shared.dataverse import AccessDenied, AlreadyExists, DataverseClient, DataverseError

_MISSING_PRIVILEGE = re.compile(r"missing (prv\w+) privilege", re.IGNORECASE)


@dataclass
class Applied:
    done: list[str] = field(default_factory=list)
    failed: str | None = None  # the step that failed, with the reason
    not_done: list[str] = field(default_factory=list)
    missing_privilege: str | None = None  # when Dataverse said the operator lacks one

    @property
    def ok(self) -> bool:
        return self.failed is None


def missing_privilege(error: DataverseError) -> str | None:
    """The privilege a 403 names ("… is missing prvCreateRole privilege …", reference 7.3)."""
    match = _MISSING_PRIVILEGE.search(error.message or str(error))
    return match.group(1) if match else None


async def run(
    dataverse: DataverseClient, found: Survey, steps: list[Step], *, result: Applied | None = None
) -> Applied:
    applied = result or Applied()
    role_ids = {name: role.role.id for name, role in found.roles.items()}
    for index, step in enumerate(steps):
        try:
            await _run_one(dataverse, found, step, role_ids)
        except AlreadyExists:
            pass  # made meanwhile by someone else: the outcome is the same
        except DataverseError as exc:
            applied.failed = f"{step.describe()}: {exc}"
            if isinstance(exc, AccessDenied):
                applied.missing_privilege = missing_privilege(exc)
            applied.not_done = [s.describe() for s in steps[index + 1 :]]
            return applied
        applied.done.append(step.describe())
    return applied


async def _run_one(
    dataverse: DataverseClient, found: Survey, step: Step, role_ids: dict[str, str]
) -> None:
    api = dataverse.customizations
    solution = found.solution_name
    match step:
        case CreatePublisher(spec):
            await api.create_publisher(
                unique_name=spec.unique_name,
                friendly_name=spec.friendly_name,
                prefix=spec.prefix,
                option_value_prefix=spec.option_value_prefix,
            )
        case CreateSolution(name):
            publisher = await api.find_publisher(prefix=found.prefix.rstrip("_"))
            if publisher is None:
                raise DataverseError(f"the publisher with prefix {found.prefix} is gone")
            await api.create_solution(
                unique_name=name, friendly_name=name, publisher_id=publisher.id, version="1.0.0.0"
            )
        case EditForm(form_id, _, formxml):
            await api.update_form(form_id, formxml, solution=solution)
        case CreateView(spec):
            await api.create_view(
                table=spec.table,
                name=spec.name,
                description=spec.description,
                fetchxml=spec.fetchxml,
                layoutxml=spec.layoutxml,
                solution=solution,
            )
        case CreateRole(spec):
            role_ids[spec.name] = await api.create_role(
                name=spec.name,
                description=spec.description,
                business_unit=found.business_unit,
                solution=solution,
            )
        case GrantPrivileges(role, privileges):
            await api.add_privileges(
                role_ids[role],
                [(privilege_id, depth) for _, privilege_id, depth in privileges],
                business_unit=found.business_unit,
            )
        case AddComponent(component_type, object_id, _, subcomponents):
            assert solution is not None  # planned only with --solution
            await api.add_solution_component(
                solution, component_type, object_id, subcomponents=subcomponents
            )
        case Publish(tables):
            await api.publish(tables)
