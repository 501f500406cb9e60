"""The customer's country table for the lookup-based country (SPEC 13 ``country``), made
through the Dataverse emulator's metadata API as an administrator's tooling would: ``POST
EntityDefinitions``, ``.../Attributes`` and a ``POST RelationshipDefinitions`` that names no
``ReferencingEntityNavigationPropertyName``, so the account's navigation property is the
lookup's SchemaName, ``cr1a2_CountryId`` (learn.microsoft.com/power-apps/developer/
data-platform/webapi/web-api-navigation-properties). Used by the engine tests and the e2e story.
"""

from __future__ import annotations

import httpx

from shared.dataverse import ColumnDefinition, DataverseClient, TableDefinition

LOOKUP = {"column": "cr1a2_countryid", "table": "cr1a2_countries", "code_column": "cr1a2_isocode"}
NAVIGATION = "cr1a2_CountryId"  # the lookup's SchemaName: Dataverse's default navigation name
# The customer's countries: Germany by its ISO code, and a row whose "code" is a name.
GERMANY_ID = "0c5d7a10-0000-4000-8000-0000000000de"
BY_NAME_ID = "0c5d7a10-0000-4000-8000-00000000000a"
COUNTRY_ROWS = {GERMANY_ID: ("Germany", "DE"), BY_NAME_ID: ("Germany (old)", "Germany")}


async def add_country_table(dataverse: DataverseClient, http: httpx.AsyncClient) -> None:
    """The customer's country table with an ISO code column and rows, and the account's lookup
    to it, created the way the maker portal does (the navigation property is not chosen)."""
    await dataverse.create_table(
        TableDefinition(
            schema_name="cr1a2_Country",
            display_name="Country",
            display_collection_name="Countries",
            entity_set_name="cr1a2_countries",
            primary_name=ColumnDefinition(
                schema_name="cr1a2_Name", display_name="Name", kind="string"
            ),
        )
    )
    await dataverse.create_column(
        "cr1a2_country",
        ColumnDefinition(schema_name="cr1a2_IsoCode", display_name="ISO code", kind="string"),
    )
    response = await http.post(
        "/api/data/v9.2/RelationshipDefinitions",
        headers={"Authorization": "Bearer sandbox"},
        json={
            "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
            "SchemaName": "cr1a2_country_account_cr1a2_countryid",
            "ReferencedEntity": "cr1a2_country",
            "ReferencedAttribute": "cr1a2_countryid",
            "ReferencingEntity": "account",
            "Lookup": {
                "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
                "SchemaName": NAVIGATION,
                "DisplayName": {"LocalizedLabels": [{"Label": "Country", "LanguageCode": 1033}]},
            },
        },
    )
    assert response.status_code == 204, response.text
    for row_id, (name, code) in COUNTRY_ROWS.items():
        await dataverse.create(
            "cr1a2_countries", {"cr1a2_name": name, "cr1a2_isocode": code}, row_id=row_id
        )
