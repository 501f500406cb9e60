"""The ``MSCRM.SolutionUniqueName`` header of metadata writes: the new table, column or
relationship is added to that unmanaged solution (learn.microsoft.com, power-apps/developer/
data-platform/webapi/create-update-column-definitions-using-web-api: the examples send
``MSCRM.SolutionUniqueName: examplesolution``; shared/reference
dataverse-push-and-webhook-trust.md §4).

The emulator only records which component went into which solution, for tests of
``cosell schema apply --solution`` (``Schema.solution_components``, also in ``/_emulator/stats``).
UNCERTAIN: Dataverse refuses a solution name that does not exist; the emulator has no solution
table, so every name is taken.
"""

from __future__ import annotations

from starlette.requests import Request

from sandbox.dataverse.schema import Schema, Table

HEADER = "MSCRM.SolutionUniqueName"


def record(request: Request, schema: Schema, kind: str, table: Table, name: str = "") -> None:
    """Note that a component of ``kind`` (Entity, Attribute, Relationship) joined the solution
    the request names, if it names one."""
    solution = request.headers.get(HEADER)
    if not solution:
        return
    component = {"type": kind, "table": table.logical_name}
    if name:
        component["name"] = name
    schema.solution_components.setdefault(solution, []).append(component)
