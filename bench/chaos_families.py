"""The families of issue 13 in the chaos run (``bench/chaos.py``): records the plain chaos run
never makes, set up so that the run's faults and kills meet them, and their own checks.

* **Creation races under throttling** (class 1): opportunities a seller made in Dataverse
  (account with an ISO country, contact, a solution row, help needed, so the referral is
  Shared) get the sync flag while Partner Center answers ``BURST`` (more 429/503 with
  Retry-After than the run's own fault model), and 2-3 ``poll`` jobs for each are enqueued at
  once, on top of the one the Dataverse poll makes. Check: one referral per opportunity
  (``externalReferenceId``), linked both ways.
* **Related referrals by reconcile/backfill/manual** (class 2): a Shared referral makes
  Partner Center create Microsoft's referral of the same engagement; jobs for that referral
  are enqueued with reasons ``reconcile``, ``backfill``, ``manual`` (one per edit round). Check:
  no opportunity and no link for Microsoft's referral.
* **Unknown currencies** (class 4): some of Microsoft's referrals are in a currency the
  Dataverse emulator lacks. Check: Partner Center keeps that currency (no chaos edit changes a
  currency), the opportunity shows sync status Error.
* **Shared contacts** (class 5): groups of the seller's opportunities share one contact record;
  Partner Center edits change the contact (``/customerProfile/team``) of some referrals of each
  group. Check: the shared record's name and e-mail never change; each opportunity's contact
  is its referral's.

The sizes grow with the number of referrals (``FamilySizes.of``), so the reduced run in
``make test`` tries every family too.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.common import job
from shared.dataverse import DataverseClient
from shared.errors import CosellError
from shared.jobs import JobQueue, SyncJob
from shared.partner_center import PartnerCenterClient
from shared.state import LinkStore

UNKNOWN_CURRENCY = "ZWG"  # not among the emulator's currencies (sandbox/dataverse/store.py)
# Partner Center while the seller's opportunities are created: a third of its answers 429/503
# with Retry-After, so a creating sync often waits in its POST while another job for the same
# opportunity runs (issue 13: 3 of 10 trials made two referrals at 50 % 503).
BURST = {"error_rate": 0.3, "statuses": [429, 503], "retry_after_s": 1,
         "drop_webhook_rate": 0.1}  # fmt: skip
RACE_JOBS = (2, 3)  # poll jobs enqueued at once per new flagged opportunity
RELATED_REASONS = ("reconcile", "backfill", "manual")  # one per edit round, in turn
CONTACT_GROUP = 3  # opportunities sharing one seller contact
CONTACT_EDITS_PER_GROUP = 2  # of which this many get a new contact from Partner Center
HELP_NEEDED = 100000001  # CustomerTechnicalArchitecture: the referral is Shared
SYNC_STATUS_ERROR = 2
SLOW_LINK_S = 60.0  # a seller's referral linked later than this waited on a creation's lease


# ``chaos._with_retries``: runs an action again on faults that outlasted the client's retries.
Retried = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _send_all(queue: JobQueue, jobs: list[SyncJob], retried: Retried) -> None:
    # The host creates sync-jobs on its first start; a fresh stack may not have it yet.
    await queue.create_queue()

    def sender(one: SyncJob) -> Callable[[], Awaitable[None]]:
        return lambda: queue.enqueue(one)

    await asyncio.gather(*(retried(sender(j)) for j in jobs))


@dataclass(frozen=True)
class FamilySizes:
    crm_created: int  # seller's opportunities flagged for sync, each with a creation race
    shared_contact_groups: int  # groups of CONTACT_GROUP of them sharing one contact
    unknown_currency_every: int  # every n-th of Microsoft's referrals is in UNKNOWN_CURRENCY

    @classmethod
    def of(cls, referrals: int) -> FamilySizes:
        crm_created = max(4, referrals // 10)
        return cls(
            crm_created=crm_created,
            shared_contact_groups=max(1, (crm_created * 6 // 10) // CONTACT_GROUP),
            unknown_currency_every=20 if referrals >= 40 else 2,
        )


@dataclass
class SharedContact:
    contact_id: str
    firstname: str
    lastname: str
    email: str
    numbers: list[int] = field(default_factory=list)  # the pairs whose opportunity uses it


@dataclass
class SellerOpportunity:
    number: int  # the pair number in the chaos run
    opportunity_id: str
    contact_email: str
    contact_edit: bool = False  # Partner Center changes its referral's contact


@dataclass
class Families:
    sizes: FamilySizes
    seller: list[SellerOpportunity] = field(default_factory=list)
    shared_contacts: list[SharedContact] = field(default_factory=list)
    unknown_currency: set[int] = field(default_factory=set)  # pair numbers
    microsoft: dict[int, str] = field(default_factory=dict)  # pair number → Microsoft's referral
    race_jobs: int = 0
    related_jobs: int = 0
    flagged_at: dict[int, float] = field(default_factory=dict)  # pair number → monotonic time
    linked_after: dict[int, float] = field(default_factory=dict)  # seconds from flag to link

    def linked(self, number: int) -> None:
        """The harness saw the referral id in the seller's opportunity now."""
        if number in self.flagged_at:
            self.linked_after.setdefault(number, time.monotonic() - self.flagged_at[number])

    def slow_links(self, over_s: float = SLOW_LINK_S) -> set[int]:
        return {n for n, s in self.linked_after.items() if s > over_s}

    def is_unknown_currency(self, number: int) -> bool:
        return number in self.unknown_currency

    def counts(self) -> dict[str, int]:
        return {
            "seller_opportunities": len(self.seller),
            "race_jobs": self.race_jobs,
            "microsoft_referrals": len(self.microsoft),
            "related_jobs": self.related_jobs,
            "unknown_currency": len(self.unknown_currency),
            "shared_contacts": len(self.shared_contacts),
            "contact_edits": sum(s.contact_edit for s in self.seller),
            "slow_links": len(self.slow_links()),
        }

    def summary(self) -> str:
        edits = sum(s.contact_edit for s in self.seller)
        waits = sorted(self.linked_after.values())
        slowest = (
            f"linked {waits[len(waits) // 2]:.0f} s (median) / {waits[-1]:.0f} s (max) "
            f"after the flag, {len(self.slow_links())} over {SLOW_LINK_S:.0f} s"
            if waits
            else ""
        )
        return (
            f"{len(self.seller)} seller opportunities ({self.race_jobs} racing poll jobs; "
            f"{slowest}), "
            f"{len(self.microsoft)} Microsoft referrals of linked engagements "
            f"({self.related_jobs} jobs), {len(self.unknown_currency)} in {UNKNOWN_CURRENCY}, "
            f"{len(self.shared_contacts)} shared contacts ({edits} contact edits)"
        )


def pick_unknown_currency(families: Families, referrals: int) -> None:
    every = families.sizes.unknown_currency_every
    families.unknown_currency = {n for n in range(referrals) if n % every == every // 2}


async def seed_seller_opportunities(
    crm: DataverseClient, families: Families, first_number: int
) -> None:
    """The seller's records, made before faults are on and with the sync flag off (the flag is
    the seller's click that starts the race, ``flag_and_race``)."""
    sizes = families.sizes
    shared_slots = sizes.shared_contact_groups * CONTACT_GROUP
    for group in range(sizes.shared_contact_groups):
        contact = SharedContact(
            str(uuid.uuid4()), "Sam", f"Seller{group}", f"seller{group}@partner.example.com"
        )
        await crm.create(
            "contacts",
            {"firstname": contact.firstname, "lastname": contact.lastname,
             "emailaddress1": contact.email},
            row_id=contact.contact_id,
        )  # fmt: skip
        families.shared_contacts.append(contact)

    async def one(index: int) -> None:
        number = first_number + index
        account_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
        await crm.create(
            "accounts",
            {"name": f"Chaos seller customer {index} Ltd",
             "address1_postalcode": f"{20000 + index}", "address1_country": "DE"},
            row_id=account_id,
        )  # fmt: skip
        if index < shared_slots:
            contact = families.shared_contacts[index // CONTACT_GROUP]
            contact.numbers.append(number)
            contact_id, email = contact.contact_id, contact.email
            edit = index % CONTACT_GROUP < CONTACT_EDITS_PER_GROUP
        else:
            contact_id, email, edit = str(uuid.uuid4()), f"seller-own{index}@example.com", False
            await crm.create(
                "contacts",
                {"firstname": "Own", "lastname": f"Contact{index}", "emailaddress1": email},
                row_id=contact_id,
            )
        await crm.create(
            "opportunities",
            {
                "name": f"Chaos deal {number}",
                "estimatedvalue": 120000,
                "estimatedclosedate": "2027-06-30",
                "description": "Customer wants to move 40 VMs.",
                "parentaccountid@odata.bind": f"/accounts({account_id})",
                "customerid_account@odata.bind": f"/accounts({account_id})",
                "parentcontactid@odata.bind": f"/contacts({contact_id})",
                "cosell_helpneeded": HELP_NEEDED,
                "cosell_visibletomicrosoft": True,
                "cosell_syncwithpartnercenter": False,
            },
            row_id=opportunity_id,
        )
        await crm.create(
            "cosell_solutions",
            {"cosell_name": "SOL-12345-ABC", "cosell_solutionidentifier": "SOL-12345-ABC",
             "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
        )  # fmt: skip
        families.seller.append(SellerOpportunity(number, opportunity_id, email, edit))

    await asyncio.gather(*(one(i) for i in range(sizes.crm_created)))
    families.seller.sort(key=lambda s: s.number)


async def flag_and_race(
    crm: DataverseClient,
    queue: JobQueue,
    families: Families,
    rng: random.Random,
    retried: Retried,
) -> None:
    """The seller switches sync on, and 2-3 poll jobs for the opportunity arrive at once."""

    async def one(seller: SellerOpportunity) -> None:
        async def flag() -> Any:
            return await crm.update(
                "opportunities", seller.opportunity_id, {"cosell_syncwithpartnercenter": True},
                select=["modifiedon"],
            )  # fmt: skip

        row = await retried(flag)
        families.flagged_at[seller.number] = time.monotonic()
        observed = row.get("modifiedon") if isinstance(row, Mapping) else None
        runs = rng.choice(RACE_JOBS)
        racing = [job("opportunity", seller.opportunity_id, "poll", observed)] * runs
        await _send_all(queue, racing, retried)
        families.race_jobs += runs

    await asyncio.gather(*(one(s) for s in families.seller))


async def find_microsoft_referrals(
    pc: PartnerCenterClient,
    families: Families,
    referral_of: Mapping[int, str],
    retried: Retried,
) -> None:
    """Microsoft's referral of each seller opportunity's engagement (the one that is not ours)."""

    async def one(number: int, ours: str) -> None:
        async def find() -> str | None:
            referral = await pc.get_referral(ours)
            if not referral.engagement_id:
                return None
            async for other in pc.list_related_referrals(referral.engagement_id):
                if other.id and other.id.lower() != ours.lower():
                    return other.id.lower()
            return None

        found = await retried(find)
        if found:
            families.microsoft[number] = str(found)

    await asyncio.gather(*(one(n, r) for n, r in referral_of.items() if r))


async def enqueue_related(
    queue: JobQueue,
    families: Families,
    round_number: int,
    retried: Retried,
) -> None:
    """A job for each of Microsoft's referrals, as reconcile, backfill or a manual sync sends."""
    reason = RELATED_REASONS[round_number % len(RELATED_REASONS)]
    jobs = [job("referral", ms, reason, None) for ms in families.microsoft.values()]
    await _send_all(queue, jobs, retried)
    families.related_jobs += len(jobs)


def new_contact(number: int) -> list[dict[str, Any]]:
    """The team a Partner Center edit gives a seller referral (a person of its own)."""
    return [{"firstName": "Pat", "lastName": f"Buyer{number}",
             "email": f"pc-contact{number}@example.com"}]  # fmt: skip


@dataclass
class FamilyProblems:
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unequal: list[str] = field(default_factory=list)


async def check_families(
    families: Families,
    referral_of: Mapping[int, str],
    opportunities: Mapping[str, list[dict[str, Any]]],
    pc: PartnerCenterClient,
    crm: DataverseClient,
    links: LinkStore,
) -> FamilyProblems:
    """The families' own checks (the run's field-by-field check covers their pairs too).
    ``opportunities``: the opportunity rows by lower-case ``cosell_referralid``."""
    found = FamilyProblems()

    # Class 1: one referral per seller opportunity, linked both ways.
    for seller in families.seller:
        label = f"pair {seller.number} (opportunity {seller.opportunity_id})"
        made = [
            r.id.lower()
            async for r in pc.list_referrals(
                filter=f"externalReferenceId eq '{seller.opportunity_id}'"
            )
            if r.id
        ]
        if len(made) != 1:
            found.duplicates.append(f"{label}: {len(made)} referrals with its externalReferenceId")
        ours = referral_of.get(seller.number, "")
        if made and ours not in made:
            found.duplicates.append(f"{label}: linked to {ours or 'nothing'}, referrals {made}")
        rows = opportunities.get(ours, []) if ours else []
        if ours and [r.get("opportunityid") for r in rows] != [seller.opportunity_id]:
            found.unequal.append(f"{label}: referral {ours} names opportunities "
                                 f"{[r.get('opportunityid') for r in rows]}")  # fmt: skip
        link = await links.get_link_by_opportunity(seller.opportunity_id)
        if link is None or link.referral_id != ours:
            found.unequal.append(
                f"{label}: link {link and link.referral_id!r}, opportunity names {ours!r}"
            )

    # Class 2: Microsoft's side of an engagement never becomes an opportunity or a link.
    for number, microsoft in sorted(families.microsoft.items()):
        label = f"pair {number} (Microsoft's referral {microsoft})"
        if opportunities.get(microsoft):
            found.duplicates.append(f"{label}: {len(opportunities[microsoft])} opportunities")
        link = await links.get_link(microsoft)
        if link is not None:
            found.duplicates.append(f"{label}: linked to opportunity {link.opportunity_id}")
    missing = {s.number for s in families.seller} - set(families.microsoft)
    found.unequal += [f"pair {n}: no Microsoft referral of its engagement" for n in missing]

    # Class 5: the seller's shared contacts are never rewritten.
    for contact in families.shared_contacts:
        try:
            row = await crm.get(
                "contacts", contact.contact_id,
                select=["firstname", "lastname", "emailaddress1"],
            )  # fmt: skip
        except CosellError as exc:
            found.lost.append(f"shared contact {contact.contact_id}: unreadable ({exc})")
            continue
        now = (row.get("firstname"), row.get("lastname"), row.get("emailaddress1"))
        before = (contact.firstname, contact.lastname, contact.email)
        if now != before:
            found.lost.append(
                f"shared contact {contact.contact_id} of pairs {contact.numbers} rewritten: "
                f"{before} → {now}"
            )
    return found


async def currency_codes(crm: DataverseClient) -> dict[str, str]:
    """ISO code by ``transactioncurrencyid`` (lower case)."""
    codes = {}
    async for row in crm.list_rows(
        "transactioncurrencies", select=["transactioncurrencyid", "isocurrencycode"]
    ):
        codes[str(row["transactioncurrencyid"]).lower()] = str(row["isocurrencycode"])
    return codes
