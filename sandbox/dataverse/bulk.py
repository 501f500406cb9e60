"""The bound bulk actions ``CreateMultiple`` and ``UpdateMultiple`` (reference 4.8):
``POST <entity set>/Microsoft.Dynamics.CRM.CreateMultiple`` with ``{"Targets": [...]}``.

On standard tables a bulk call is all or nothing (learn.microsoft.com, power-apps/developer/
data-platform/bulk-operations); ``CreateMultiple`` answers ``CreateMultipleResponse`` with the
new rows' ``Ids`` (.../webapi/reference/createmultipleresponse), ``UpdateMultiple`` answers 204.
Each target may carry ``@odata.type`` naming the table's type (Microsoft's Python SDK always
adds it); another type is refused. ``UpsertMultiple`` needs alternate keys, which the emulator
does not have, so it is not emulated (404 as an unknown segment).
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.dataverse.errors import payload_error
from sandbox.dataverse.schema import Table
from sandbox.dataverse.store import Store

BOUND_ACTION = re.compile(
    r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)/Microsoft\.Dynamics\.CRM\.(?P<action>CreateMultiple|UpdateMultiple)$"
)


def _targets(table: Table, body: dict[str, Any], action: str) -> list[dict[str, Any]]:
    targets = body.get("Targets")
    if not isinstance(targets, list) or not targets:
        raise payload_error(table.entity_set, f"{action} needs Targets: a non-empty array.")
    expected = f"Microsoft.Dynamics.CRM.{table.logical_name}"
    for target in targets:
        if not isinstance(target, dict):
            raise payload_error(table.entity_set, f"Each of the {action} Targets is an object.")
        declared = target.get("@odata.type")
        if declared is not None and str(declared).removeprefix("#") != expected:
            raise payload_error(
                table.entity_set,
                f"A {action} target of type '{declared}' was sent to {table.entity_set}, whose "
                f"type is '{expected}'.",
            )
    return targets


def run(store: Store, table: Table, action: str, body: dict[str, Any]) -> list[Any] | None:
    """One bulk action, all or nothing: the new rows' ids for ``CreateMultiple``, ``None`` for
    ``UpdateMultiple`` (``api.py`` answers with them)."""
    targets = _targets(table, body, action)
    if action == "CreateMultiple":
        with store.atomic():
            return [
                store.create(table.entity_set, target).values[table.primary_key]
                for target in targets
            ]
    with store.atomic():
        for target in targets:
            row_id = target.get(table.primary_key)
            if not isinstance(row_id, str):
                raise payload_error(
                    table.entity_set,
                    f"Each UpdateMultiple target needs its primary key '{table.primary_key}'.",
                )
            # An update, never a create: a missing row fails the whole request (404).
            store.update(table.entity_set, row_id, target, if_match="*")
    return None
