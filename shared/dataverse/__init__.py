"""The Dataverse Web API client: ``DataverseClient`` and the few things its callers need.

async with DataverseClient(url, credential=DefaultAzureCredential()) as dataverse:
    async for row in dataverse.list_rows("opportunities", select=["name"],
                                         filter=eq("cosell_syncwithpartnercenter", True)):
        ...

Read an opportunity with its solutions in one request (reference 2.4):

    solutions = crm_schema().solution_opportunity.collection  # the navigation property
    row = await dataverse.get("opportunities", opportunity_id, select=["name"], expand=[
        Expand(solutions, ["cosell_solutionidentifier"], top=100)])
    row[solutions]  # a list of rows, [] when none

A new account and an opportunity bound to it (``customerid`` and ``parentaccountid``) in one
atomic ``$batch`` change set (reference 5), the later row referring to the earlier as ``$1``:

    account, opportunity = await dataverse.create_in_change_set([
        Create("accounts", {"name": "Contoso"}, row_id=account_id),
        Create("opportunities", {"name": "Deal",
                                 "customerid_account@odata.bind": content_id(0)}),
    ])

A choice column's options (value → label), for ``cosell schema check``:

    await dataverse.get_choice_options("opportunity", "cosell_syncstatus")
    # {1: "Synced", 2: "Error", 3: "Pending"}
"""

from shared.dataverse._auth import CredentialTokenProvider, StaticTokenProvider, TokenProvider
from shared.dataverse._batch import Create, content_id
from shared.dataverse._client import VERSION_COLUMNS, DataverseClient
from shared.dataverse._customizations import (
    AsyncOperation,
    ComponentType,
    Customizations,
    ImportJob,
    Privilege,
    Publisher,
    Role,
    RolePrivilege,
    SavedQuery,
    Solution,
    SolutionComponent,
    SystemForm,
    depth_covers,
)
from shared.dataverse._exceptions import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    ConnectionFailed,
    DataverseError,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    ServiceError,
    Throttled,
)
from shared.dataverse._models import (
    ChoiceColumnMetadata,
    ColumnDefinition,
    ColumnMetadata,
    Currency,
    LookupDefinition,
    OpportunityState,
    OpportunityStatus,
    OptionMetadata,
    OptionSetMetadata,
    RelationshipMetadata,
    Row,
    TableDefinition,
    TableMetadata,
    WhoAmI,
    etag_of,
)
from shared.dataverse._odata import (
    Expand,
    Filter,
    all_of,
    any_of,
    bind,
    contains,
    endswith,
    eq,
    ge,
    gt,
    le,
    literal,
    lookup,
    lt,
    ne,
    startswith,
)
from shared.dataverse._remote_context import (
    MAX_CONTEXT_BYTES,
    PushedEntity,
    PushedReference,
    RemoteContextError,
    RemoteExecutionContext,
    parse_remote_context,
)
from shared.dataverse._throttle import AdaptiveThrottle, RequestBudget

__all__ = [
    "MAX_CONTEXT_BYTES",
    "VERSION_COLUMNS",
    "AccessDenied",
    "AdaptiveThrottle",
    "AlreadyExists",
    "AsyncOperation",
    "AuthenticationFailed",
    "ChoiceColumnMetadata",
    "ColumnDefinition",
    "ColumnMetadata",
    "ComponentType",
    "ConnectionFailed",
    "Create",
    "CredentialTokenProvider",
    "Currency",
    "Customizations",
    "DataverseClient",
    "DataverseError",
    "Expand",
    "Filter",
    "ImportJob",
    "InvalidRequest",
    "LookupDefinition",
    "NotFound",
    "OpportunityState",
    "OpportunityStatus",
    "OptionMetadata",
    "OptionSetMetadata",
    "PreconditionFailed",
    "Privilege",
    "Publisher",
    "PushedEntity",
    "PushedReference",
    "RelationshipMetadata",
    "RemoteContextError",
    "RemoteExecutionContext",
    "RequestBudget",
    "Role",
    "RolePrivilege",
    "Row",
    "SavedQuery",
    "ServiceError",
    "Solution",
    "SolutionComponent",
    "StaticTokenProvider",
    "SystemForm",
    "TableDefinition",
    "TableMetadata",
    "Throttled",
    "TokenProvider",
    "WhoAmI",
    "all_of",
    "any_of",
    "bind",
    "contains",
    "content_id",
    "depth_covers",
    "endswith",
    "eq",
    "etag_of",
    "ge",
    "gt",
    "le",
    "literal",
    "lookup",
    "lt",
    "ne",
    "parse_remote_context",
    "startswith",
]
