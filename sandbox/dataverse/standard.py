"""What Microsoft's Web API examples rely on beyond the columns the sync uses: the standard
relationship names and the ``task`` activity table.

The collection-valued navigation property a standard lookup gives its target table is named by
the relationship's SchemaName, not by a rule: ``account.opportunity_customer_accounts`` holds the
opportunities whose ``customerid`` is that account (shared/reference
dataverse-push-and-webhook-trust.md §4 and dataverse-web-api.md §8.3). Microsoft's deep-insert
example (learn.microsoft.com, power-apps/developer/data-platform/webapi/create-entity-web-api,
"Create related table rows in one operation") posts an account with a ``primarycontactid``
object and an ``opportunity_customer_accounts`` array whose opportunity nests
``Opportunity_Tasks``, so tasks exist here too, with their ``regardingobjectid`` lookup.

UNCERTAIN: names not in the reference (the contact-side and currency ones, the task
relationships' single-valued navigation properties) follow the pattern of the documented ones;
lookups to ``systemuser`` (owner, created by, modified by) keep the emulator's rule
(``schema.collection_name``).
"""

from __future__ import annotations

from sandbox.dataverse.schema import Column, Kind, Table, add_system_columns

# (referencing table, single-valued navigation property) -> the relationship's SchemaName, which
# is also the referenced table's collection-valued navigation property.
RELATIONSHIPS: dict[tuple[str, str], str] = {
    ("opportunity", "customerid_account"): "opportunity_customer_accounts",
    ("opportunity", "customerid_contact"): "opportunity_customer_contacts",
    ("opportunity", "parentaccountid"): "opportunity_parent_account",
    ("opportunity", "parentcontactid"): "opportunity_parent_contact",
    ("opportunity", "originatingleadid"): "opportunity_originating_lead",
    ("opportunity", "transactioncurrencyid"): "transactioncurrency_opportunity",
    ("account", "parentaccountid"): "account_parent_account",
    ("account", "primarycontactid"): "account_primary_contact",
    ("account", "transactioncurrencyid"): "transactioncurrency_account",
    ("contact", "parentcustomerid_account"): "contact_customer_accounts",
    ("contact", "parentcustomerid_contact"): "contact_customer_contacts",
    ("lead", "parentaccountid"): "lead_parent_account",
    ("lead", "parentcontactid"): "lead_parent_contact",
    ("lead", "qualifyingopportunityid"): "lead_qualifying_opportunity",
    ("lead", "transactioncurrencyid"): "transactioncurrency_lead",
    ("task", "regardingobjectid_account_task"): "Account_Tasks",
    ("task", "regardingobjectid_opportunity_task"): "Opportunity_Tasks",
    ("task", "regardingobjectid_contact_task"): "Contact_Tasks",
    ("task", "regardingobjectid_lead_task"): "Lead_Tasks",
}


# The task's statecode (Open, Completed, Canceled) and statuscode labels.
TASK_LABELS = (
    {0: "Open", 1: "Completed", 2: "Canceled"},
    {
        2: "Not Started",
        3: "In Progress",
        4: "Waiting on someone else",
        5: "Completed",
        6: "Canceled",
        7: "Deferred",
    },
)


def task_table() -> Table:
    """The ``task`` activity: subject, description, due date and what it is regarding."""
    t = Table("task", "tasks", "activityid", "subject")
    add_system_columns(t, {0: (2, 3, 4, 7), 1: (5,), 2: (6,)}, TASK_LABELS)
    for column in (
        Column("subject", Kind.STRING, max_length=200),
        Column("description", Kind.MEMO, max_length=2000),
        Column("scheduledend", Kind.DATETIME),
        Column(
            "regardingobjectid",
            Kind.LOOKUP,
            targets={
                "regardingobjectid_account_task": "accounts",
                "regardingobjectid_opportunity_task": "opportunities",
                "regardingobjectid_contact_task": "contacts",
                "regardingobjectid_lead_task": "leads",
            },
        ),
    ):
        t.add(column)
    return t


def name_relationships(tables: list[Table]) -> None:
    """Give the standard lookups of ``tables`` their documented relationship names."""
    for table in tables:
        for column in table.columns.values():
            for navigation in column.targets:
                name = RELATIONSHIPS.get((table.logical_name, navigation))
                if name is not None:
                    column.collections.setdefault(navigation, name)
