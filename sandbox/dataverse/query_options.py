"""Which system query options a data request may carry; any other is a 400, not ignored.

OData answers a system query option it does not support with an error rather than a result
that silently ignores it (OData v4.01 URL Conventions, "System Query Options"; shared/reference
dataverse-push-and-webhook-trust.md §4: "An unknown system query option is an error"). Dataverse
itself refuses ``$skip`` (learn.microsoft.com, power-apps/developer/data-platform/webapi/query/
page-results: "Don't use $skip"). Options Dataverse has but the emulator does not
(``$apply``, ``$deltatoken``, ``$search``) are refused too, naming the gap, so a test never passes
on rows a real query would not have returned. ``?sql=`` (the SQL query option Microsoft's Python
SDK sends for ``query.sql``) is refused the same way: answering it with every row, as the
emulator did, is what a real service never does.
"""

from __future__ import annotations

from collections.abc import Iterable

from sandbox.dataverse.errors import query_error

# Resource kind -> the system query options the emulator evaluates there (reference 2).
COLLECTION = frozenset(
    {"$select", "$filter", "$orderby", "$top", "$expand", "$count", "$skiptoken"}
)
ROW = frozenset({"$select", "$expand"})
NOT_EMULATED = frozenset({"$apply", "$deltatoken", "$search", "$levels", "$compute", "sql"})
NOT_SUPPORTED_BY_DATAVERSE = frozenset({"$skip"})


def check(names: Iterable[str], allowed: frozenset[str]) -> None:
    """400 for the first option in ``names`` the resource does not take."""
    for name in names:
        if name in allowed:
            continue
        if name in NOT_SUPPORTED_BY_DATAVERSE:
            raise query_error(f"The query parameter {name} is not supported.")
        if name in NOT_EMULATED:
            raise query_error(
                f"The query parameter {name} is not supported by the Dataverse emulator."
            )
        if name.startswith("$"):
            raise query_error(f"The query parameter {name} is not supported.")
