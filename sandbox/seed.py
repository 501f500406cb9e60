"""``python -m sandbox seed``: sample data for a running sandbox, to click through and to try
``cosell`` on — referrals Microsoft sends the partner (which the app turns into opportunities)
and opportunities a seller flags for sync (which the app shares with Partner Center).

It finds the sandbox through the settings ``python -m sandbox up`` wrote
(``.sandbox/local.settings.json``) and talks to the emulators the way Microsoft and a seller
would: Partner Center's ``/_emulator/microsoft/referrals`` and Dataverse's Web API. All names are
fictitious (example.com).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.crm_schema import crm_schema

CUSTOMERS = (
    ("Contoso Ltd", "Berlin", "10115", "DE"),
    ("Fabrikam Inc", "Seattle", "98101", "US"),
    ("Northwind Traders", "Lyon", "69001", "FR"),
    ("Tailspin Toys", "Madrid", "28001", "ES"),
    ("Wide World Importers", "Amsterdam", "1011", "NL"),
)


@dataclass
class Seeded:
    referrals: list[str] = field(default_factory=list)
    opportunities: list[str] = field(default_factory=list)


def read_settings(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: start the sandbox first (`make up` or `python -m sandbox up`)"
        )
    values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    return {str(k): str(v) for k, v in values.items()}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def seed(settings: dict[str, str], *, referrals: int = 3, opportunities: int = 2) -> Seeded:
    pc = _origin(settings["PARTNER_CENTER_API_URL"])
    dataverse = settings["DATAVERSE_URL"].rstrip("/") + "/api/data/v9.2/"
    schema = crm_schema(settings.get("CRM_COLUMN_PREFIX") or "cosell_")
    done = Seeded()
    token = {"Authorization": "Bearer sandbox"}  # the emulators' well-known test token
    with httpx.Client(timeout=15) as http:
        for index in range(referrals):
            name, city, postal, country = CUSTOMERS[index % len(CUSTOMERS)]
            body = cosell_referral_from_microsoft(name=f"{name} - Azure migration {index + 1}")
            body["customerProfile"]["name"] = name
            body["customerProfile"]["address"].update(
                {"city": city, "postalCode": postal, "country": country}
            )
            answer = http.post(f"{pc}/_emulator/microsoft/referrals", json=body)
            answer.raise_for_status()
            done.referrals.append(str(answer.json()["id"]))
        for index in range(opportunities):
            name, city, postal, country = CUSTOMERS[(referrals + index) % len(CUSTOMERS)]
            account, contact, opportunity = (str(uuid.uuid4()) for _ in range(3))
            rows = (
                (
                    "accounts",
                    {
                        "accountid": account,
                        "name": name,
                        "address1_city": city,
                        "address1_postalcode": postal,
                        "address1_country": country,
                    },
                ),
                (
                    "contacts",
                    {
                        "contactid": contact,
                        "firstname": "Sam",
                        "lastname": f"Example{index + 1}",
                        "emailaddress1": f"sam{index + 1}@example.com",
                    },
                ),
                (
                    "opportunities",
                    {
                        "opportunityid": opportunity,
                        "name": f"{name} - analytics platform",
                        "estimatedvalue": 50000 + 10000 * index,
                        "estimatedclosedate": "2027-06-30",
                        "parentaccountid@odata.bind": f"/accounts({account})",
                        "parentcontactid@odata.bind": f"/contacts({contact})",
                        schema.help_needed.logical_name: 100000001,
                        schema.sync_with_partner_center.logical_name: True,
                    },
                ),
                (
                    schema.solution.entity_set,
                    {
                        schema.solution.primary_name.logical_name: "Analytics accelerator",
                        schema.solution_identifier.logical_name: "SOL-12345-ABC",
                        schema.solution_opportunity.bind_name: f"/opportunities({opportunity})",
                    },
                ),
            )
            for entity_set, row in rows:
                http.post(f"{dataverse}{entity_set}", json=row, headers=token).raise_for_status()
            done.opportunities.append(opportunity)
    return done
