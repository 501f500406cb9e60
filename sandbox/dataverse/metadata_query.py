"""``$filter`` and ``$select`` on the metadata collections (``EntityDefinitions``,
``.../Attributes``), and the entity keys a metadata path may use.

``EntityDefinitions(<MetadataId>)`` is the primary key and ``(LogicalName='x')`` an alternate key
(learn.microsoft.com, power-apps/developer/data-platform/webapi/query-metadata-web-api,
"Retrieve metadata items by name or MetadataId"); ``$filter`` takes the definitions'
properties, e.g. ``IsPrivate eq false`` as Microsoft's Python SDK sends on ``tables.list()``
(shared/reference dataverse-push-and-webhook-trust.md §4). Filters are evaluated over the JSON
the emulator renders, so a property it does not model is refused (400) rather than guessed at.
"""

from __future__ import annotations

from typing import Any

from sandbox.dataverse import odata
from sandbox.dataverse.errors import query_error
from sandbox.odata import properties

Definition = dict[str, Any]


def _get(row: Definition, path: str) -> Any:
    return row.get(path)


def filter_definitions(
    items: list[Definition], text: str | None, type_name: str
) -> list[Definition]:
    """The items ``text`` keeps; 400 for a property none of them has."""
    if not text or not items:
        return items
    node = odata.parse_expression(text)
    known = {key for item in items for key in item}
    for path in properties(node):
        if path not in known:
            raise query_error(
                f"Could not find a property named '{path}' on type "
                f"'Microsoft.Dynamics.CRM.{type_name}' (or the emulator does not model it)."
            )
    return [item for item in items if odata.evaluate(node, item, _get)]


def select_properties(item: Definition, text: str | None) -> Definition:
    """``$select`` on a metadata item: the named properties and ``MetadataId``, which Dataverse
    always returns. Names the emulator does not model are left out rather than refused, since
    Dataverse has many more metadata properties than the emulator fills in."""
    if text is None:
        return item
    names = set(odata.split_top_level(text)) | {"MetadataId"}
    return {k: v for k, v in item.items() if k in names or k.startswith("@odata.")}
