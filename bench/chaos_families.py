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
* **Oversize values** (class 6): some of Microsoft's referrals carry a name over the
  opportunity name's 300 characters or notes over the description's 2,000, as sent or through
  a Partner Center edit in the first round. Check: Partner Center keeps its long value, the
  opportunity holds it cut to fit (creation) or the value before the edit (update), shows sync
  status Error with the reason in the audit, and every other field converges (the run's own
  check, which leaves the oversize field to this one).
* **Reopened deals** (class 6): once most of Microsoft's pairs are linked (still in the
  creation phase, faults and kills on), the seller closes some linked opportunities as Won; at
  once a Partner Center edit of the notes arrives while the opportunity is closed (when it
  beats the sync that closes the referral: Partner Center refuses it after); once the referral
  is Closed/Won and the pair said why it could not take the edit (the link's last result: a
  closed row cannot be written, so not the opportunity), the seller reopens the opportunity
  (PATCH statecode 0 / statuscode 1) and edits its deal value. These pairs get no round edits.
  Check:
  the Closed referral never changes again (Partner Center refuses it), the opportunity is open
  with the seller's value and the notes Partner Center sent while it was closed, the audit
  gives the reason, and no job of these pairs went to the poison queue.
* **Lead races** (class 3, ``SYNC_COSELL_ONLY=false`` for the whole run): Microsoft sends
  marketplace leads with its co-sell referrals, which become Dataverse leads; as soon as its
  lead exists, the seller qualifies each (an opportunity with ``originatingleadid``, valid for
  a referral of its own, the lead Qualified) and flags that opportunity for sync within the
  same poll interval (when creating it, or right after qualifying), and 2-3 extra ``poll``
  jobs for the opportunity and one for the referral race.
  Check: no partner-made referral for the opportunity, the opportunity linked to Microsoft's
  referral, which is accepted.

The sizes grow with the number of referrals (``FamilySizes.of``), so the reduced run in
``make test`` tries every family too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import job, without_mark
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.dataverse import DataverseClient
from shared.errors import AlreadyExistsError, CosellError, NotFoundError
from shared.jobs import JobQueue, SyncJob
from shared.partner_center import PartnerCenterClient, Referral
from shared.state import LinkStore
from shared.sync.crm_limits import OPPORTUNITY_TEXT, fit
from shared.sync.mapping import record_id

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
SYNC_STATUS_SYNCED = 1
# Class 6, oversize values: how each oversize pair gets its long value, in turn.
OVERSIZE_KINDS = (("name", True), ("notes", True), ("name", False), ("notes", False))
OVERSIZE_NAME_CHARS = 340  # the opportunity name holds 300, with the ✔/✖ mark
OVERSIZE_NOTES_CHARS = 2400  # the description holds 2,000
OVERSIZE_REASON = "characters; the opportunity"  # crm_limits.refusals: "... holds N"
# Class 6, reopened deals.
CLOSED_REASON = "the opportunity is closed in Dynamics 365 and cannot be edited"
WAIT_CLOSED_S = 120.0  # for the Won to reach Partner Center (kills, faults, a 6 s lease)
WAIT_ERROR_S = 60.0  # for the pair to say why it could not take the edit
REOPEN_EVERY_S = 0.5  # the seller closes one deal after another, not all in one second
# Class 3, lead races: a marketplace lead as Microsoft sends it (tests/sync/test_leads.py).
LEAD_FIELDS: dict[str, Any] = {
    "type": "Independent",
    "qualification": "SalesQualified",
    "inviteContext": {"invitedBy": {"organizationId": "msft"}},
}
WAIT_LEAD_S = 120.0  # for the Dataverse lead the product makes from Microsoft's lead


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
    oversize: int  # Microsoft's referrals with a value over a column's limit
    reopened: int  # linked pairs won, edited in Partner Center while closed, reopened
    leads: int  # marketplace leads qualified and flagged within one poll interval

    @classmethod
    def of(cls, referrals: int) -> FamilySizes:
        crm_created = max(4, referrals // 10)
        return cls(
            crm_created=crm_created,
            shared_contact_groups=max(1, (crm_created * 6 // 10) // CONTACT_GROUP),
            unknown_currency_every=20 if referrals >= 40 else 2,
            oversize=min(referrals // 4, max(len(OVERSIZE_KINDS) * 2, referrals // 25)),
            reopened=min(referrals // 4, max(4, referrals // 40)),
            leads=max(3, referrals // 40),
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
class Oversize:
    """One of Microsoft's pairs with a Partner Center value no opportunity column can hold."""

    number: int
    field: str  # "name" or "notes"
    value: str  # the long value Partner Center keeps
    on_create: bool  # in the referral as Microsoft sent it; else a Partner Center edit
    crm_value: str  # what the opportunity must hold: cut to fit, or the value before the edit


@dataclass
class Reopened:
    """A linked pair the seller closes as Won, Partner Center edits meanwhile, and the seller
    reopens and edits."""

    number: int
    referral_id: str = ""
    opportunity_id: str = ""
    closed_edit: str | None = None  # the notes Partner Center took while the row was closed
    closed: dict[str, Any] | None = None  # the referral as first seen Closed
    error_seen: bool = False  # the link said why it could not take the edit, while closed
    reopened: bool = False
    seller_value: int | None = None  # the deal value the seller set once it was reopened
    problems: list[str] = field(default_factory=list)


@dataclass
class LeadRace:
    """A marketplace lead from Microsoft that the seller qualifies and flags at once."""

    number: int
    referral_id: str
    opportunity_id: str = ""
    flagged_first: bool = False  # flagged when created, before the lead is qualified
    jobs: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Families:
    sizes: FamilySizes
    seller: list[SellerOpportunity] = field(default_factory=list)
    shared_contacts: list[SharedContact] = field(default_factory=list)
    unknown_currency: set[int] = field(default_factory=set)  # pair numbers
    oversize: dict[int, Oversize] = field(default_factory=dict)  # pair number → its value
    reopened: dict[int, Reopened] = field(default_factory=dict)
    leads: list[LeadRace] = field(default_factory=list)
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

    def not_compared(self, number: int) -> set[str]:
        """Fields of a pair the run's field-by-field check leaves to the family's own check:
        the oversize value (the sides rightly differ), the deal value the seller set on a
        reopened deal (the Closed referral cannot take it)."""
        if number in self.oversize:
            return {self.oversize[number].field}
        if number in self.reopened:
            return {"deal_value"}
        return set()

    def status_of(self, number: int) -> set[tuple[str, int, int]] | None:
        """The (referral status, statecode, statuscode) a pair may end in, if not the usual:
        a reopened deal is open in Dynamics 365 and stays Closed in Partner Center."""
        if number in self.reopened and self.reopened[number].reopened:
            return {("Closed", 0, 1)}
        return None

    def excluded_from_edits(self, number: int) -> bool:
        """The reopened deals get their own edits (a Closed referral refuses the run's)."""
        return number in self.reopened

    def edit_fields(self, number: int, fields: tuple[str, ...]) -> tuple[str, ...]:
        """The fields the run's random edits may change (never an oversize one)."""
        skip = self.not_compared(number)
        return tuple(f for f in fields if f not in skip)

    def refusing_ids(self, ids_of: Mapping[int, tuple[str | None, ...]]) -> set[str]:
        """Record ids whose syncs end in "error" by design (currency, oversize value)."""
        numbers = self.unknown_currency | set(self.oversize)
        return {i.lower() for n in numbers for i in ids_of.get(n, ()) if i}

    def lead_referrals(self) -> set[str]:
        return {lead.referral_id for lead in self.leads}

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
            "oversize_on_create": sum(o.on_create for o in self.oversize.values()),
            "oversize_edits": sum(not o.on_create for o in self.oversize.values()),
            "reopened": sum(r.reopened for r in self.reopened.values()),
            "closed_edits": sum(r.closed_edit is not None for r in self.reopened.values()),
            "closed_errors_seen": sum(r.error_seen for r in self.reopened.values()),
            "leads": len(self.leads),
            "leads_qualified": sum(bool(lead.opportunity_id) for lead in self.leads),
            "lead_race_jobs": sum(lead.jobs for lead in self.leads),
        }

    def summary(self) -> str:
        counts = self.counts()
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
            f"{len(self.shared_contacts)} shared contacts ({edits} contact edits), "
            f"{len(self.oversize)} oversize values ({counts['oversize_on_create']} as sent, "
            f"{counts['oversize_edits']} by edit), {counts['reopened']} reopened deals "
            f"({counts['closed_edits']} edited in Partner Center while closed, "
            f"{counts['closed_errors_seen']} said so), {len(self.leads)} leads qualified and "
            f"flagged at once ({counts['lead_race_jobs']} racing poll jobs)"
        )


def pick_microsoft_pairs(
    families: Families, referrals: int, original: Callable[[int, str], str]
) -> None:
    """Which of Microsoft's pairs (numbers 0 … referrals-1) each family gets, none in two
    (the reopened deals come later, ``pick_reopened``). ``original``: the value a pair's field
    has before any edit."""
    every = families.sizes.unknown_currency_every
    families.unknown_currency = {n for n in range(referrals) if n % every == every // 2}
    taken = set(families.unknown_currency)
    for index, number in enumerate(_spread(referrals, families.sizes.oversize, 2, taken)):
        name, on_create = OVERSIZE_KINDS[index % len(OVERSIZE_KINDS)]
        value = long_value(number, name)
        cut = fit(value, OPPORTUNITY_TEXT[name]) or ""
        families.oversize[number] = Oversize(
            number, name, value, on_create, cut if on_create else original(number, name)
        )


def drop_unlinked_oversize_edits(families: Families, linked: set[int]) -> None:
    """The run edits only pairs linked when the edits begin: an oversize pair whose long value
    was to come by edit and is not linked then leaves the family."""
    families.oversize = {n: o for n, o in families.oversize.items() if o.on_create or n in linked}


def pick_reopened(families: Families, referrals: int, linked: set[int]) -> None:
    """The reopened deals, among Microsoft's pairs linked by now (only a linked opportunity
    can be won) and in no other family."""
    taken = {n for n in range(referrals) if n not in linked}
    taken |= families.unknown_currency | set(families.oversize)
    count = min(families.sizes.reopened, referrals - len(taken))
    for number in _spread(referrals, count, 6, taken):
        families.reopened[number] = Reopened(number)


def refused_by_design(problems: Sequence[str]) -> str | None:
    """How the backfill counts a failed sync that a family causes on purpose, or None: the
    unknown currency named, or nothing but oversize values (another problem is a real one)."""
    if UNKNOWN_CURRENCY in " ".join(problems):
        return "currency refused"
    if problems and all(OVERSIZE_REASON in p for p in problems):
        return "oversize refused"
    return None


def _spread(referrals: int, count: int, offset: int, taken: set[int]) -> list[int]:
    """``count`` pair numbers spread over the run, none in ``taken`` (which they join)."""
    chosen: list[int] = []
    for index in range(count):
        number = (index * referrals // max(count, 1) + offset) % referrals
        while number in taken:
            number = (number + 1) % referrals
        taken.add(number)
        chosen.append(number)
    return chosen


def long_value(number: int, name: str) -> str:
    """A Partner Center value over its opportunity column's limit (no trailing blank)."""
    if name == "name":
        head = f"Chaos deal {number} with a name far too long for Dynamics 365 "
        size = OVERSIZE_NAME_CHARS
    else:
        head, size = f"notes {number} far too long for the description: ", OVERSIZE_NOTES_CHARS
    filler = "0123456789" * (size // 10 + 1)
    return (head + filler)[:size]


def with_oversize(families: Families, number: int, body: dict[str, Any]) -> dict[str, Any]:
    """Microsoft's referral body with the long value of an oversize pair sent that way."""
    oversize = families.oversize.get(number)
    if oversize is None or not oversize.on_create:
        return body
    if oversize.field == "name":
        return {**body, "name": oversize.value}
    return {**body, "details": {**body["details"], "notes": oversize.value}}


def oversize_edit(families: Families, number: int) -> tuple[str, str] | None:
    """The first round's Partner Center edit of an oversize pair: (field, long value)."""
    oversize = families.oversize.get(number)
    if oversize is None or oversize.on_create:
        return None
    return oversize.field, oversize.value


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


# ``chaos._edit``'s record of an edit the families make themselves: pair number, side, field,
# value (the run's traces show it, and its field-by-field check expects it).
Edited = Callable[[int, str, str, Any], None]


async def _wait_for(probe: Callable[[], Awaitable[Any]], within_s: float) -> Any:
    """``probe()``'s first truthy answer, tried every half second (faults: tried again)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            found = await probe()
        except (CosellError, httpx.HTTPError):
            found = None
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def _edit_unless_closed(pc: PartnerCenterClient, referral_id: str, notes: str) -> bool:
    """A Partner Center edit of the notes, given up once the referral is Closed (Partner Center
    refuses every change then). True if it was taken."""
    for attempt in range(10):
        try:
            current = await pc.get_referral(referral_id)
            if current.details is not None and current.details.notes == notes:
                return True  # an earlier attempt landed after all
            if str(current.status) == "Closed":
                return False
            operation = [{"op": "replace", "path": "/details/notes", "value": notes}]
            await pc.patch_referral(referral_id, operation, etag=current.e_tag)
            return True
        except (CosellError, httpx.HTTPError):
            await asyncio.sleep(0.1 * (attempt + 1))
    return False


def _closed_view(referral: Referral) -> dict[str, Any]:
    """What must not change on a Closed referral."""
    details = referral.details
    return {
        "status": f"{referral.status}/{referral.substatus}",
        "eTag": referral.e_tag,
        "updatedDateTime": referral.updated_date_time,
        "name": referral.name,
        "dealValue": details.deal_value if details else None,
        "notes": details.notes if details else None,
    }


async def reopen_deals(
    pc: PartnerCenterClient,
    crm: DataverseClient,
    links: LinkStore,
    families: Families,
    ids: Mapping[int, tuple[str, str | None]],
    edited: Edited,
    retried: Retried,
) -> None:
    """Class 6, reopened deals (``ids``: pair number → referral and opportunity ids). One deal
    after another: the seller wins the opportunity; a Partner Center edit of the notes follows
    at once (taken only while the referral is not yet Closed); once the referral is Closed/Won
    and the pair said why the closed row could not take the edit, the seller reopens the
    opportunity and changes its deal value."""

    async def one(deal: Reopened, delay: float) -> None:
        await asyncio.sleep(delay)
        referral_id, opportunity_id = ids[deal.number]
        if not opportunity_id:
            deal.problems.append("never linked, so never closed")
            return
        deal.referral_id, deal.opportunity_id = referral_id.lower(), opportunity_id.lower()

        async def win() -> None:
            row = await crm.get("opportunities", opportunity_id, select=["statecode"])
            if row.get("statecode") == 0:  # not an earlier attempt that landed
                await crm.win_opportunity(opportunity_id)

        await retried(win)
        notes = f"notes {deal.number} edited in Partner Center while the deal is closed"
        if await _edit_unless_closed(pc, referral_id, notes):
            deal.closed_edit = notes
            edited(deal.number, "pc", "notes", notes)

        async def closed() -> Referral | None:
            referral = await pc.get_referral(referral_id)
            return referral if str(referral.status) == "Closed" else None

        referral = await _wait_for(closed, WAIT_CLOSED_S)
        if referral is None:
            deal.problems.append(
                f"the Won opportunity's referral not Closed after {WAIT_CLOSED_S:.0f} s"
            )
            return
        deal.closed = _closed_view(referral)
        if deal.closed_edit is not None:

            async def said() -> bool:
                link = await links.get_link(referral_id)
                result = link.last_result if link is not None else None
                return bool(result and result.status == "error" and CLOSED_REASON in result.message)

            deal.error_seen = bool(await _wait_for(said, WAIT_ERROR_S))
            if not deal.error_seen:
                deal.problems.append(
                    f"the pair did not say why within {WAIT_ERROR_S:.0f} s of the closed edit "
                    f"(link: {await _last_result(links, referral_id)})"
                )

        async def reopen() -> Any:
            return await crm.update(
                "opportunities", opportunity_id, {"statecode": 0, "statuscode": 1}
            )

        await retried(reopen)
        deal.reopened = True
        value = 300000 + deal.number

        async def seller_edit() -> Any:
            return await crm.update("opportunities", opportunity_id, {"estimatedvalue": value})

        await retried(seller_edit)
        deal.seller_value = value
        edited(deal.number, "crm", "deal_value", value)

    deals = sorted(families.reopened.values(), key=lambda d: d.number)
    await asyncio.gather(*(one(d, i * REOPEN_EVERY_S) for i, d in enumerate(deals)))


async def _last_result(links: LinkStore, referral_id: str) -> str:
    link = await links.get_link(referral_id)
    result = link.last_result if link is not None else None
    return f"{result.status}: {result.message}" if result is not None else "none"


def marketplace_lead(number: int) -> dict[str, Any]:
    """A marketplace lead Microsoft sends (program "Marketplace lead"), a customer of its own."""
    body = cosell_referral_from_microsoft(name=f"Chaos lead {number}", **LEAD_FIELDS)
    profile = body["customerProfile"]
    body["customerProfile"] = {
        **profile,
        "name": f"Chaos lead customer {number} Ltd",
        "address": {**profile["address"], "postalCode": f"{30000 + number}"},
        "team": [{**profile["team"][0], "email": f"lead{number}@example.com"}],
    }
    return body


async def send_leads(control: httpx.AsyncClient, families: Families, first_number: int) -> None:
    """Microsoft sends the marketplace leads (``SYNC_COSELL_ONLY=false``: each becomes a lead)."""

    async def one(index: int) -> None:
        number = first_number + index
        answer = await control.post("/_emulator/microsoft/referrals", json=marketplace_lead(number))
        answer.raise_for_status()
        flagged_first = index % 2 == 0
        referral_id = str(answer.json()["id"]).lower()
        families.leads.append(LeadRace(number, referral_id, flagged_first=flagged_first))

    await asyncio.gather(*(one(i) for i in range(families.sizes.leads)))
    families.leads.sort(key=lambda lead: lead.number)


async def _create(crm: DataverseClient, entity_set: str, row: dict[str, Any], row_id: str,
                  retried: Retried) -> None:  # fmt: skip
    """The harness's own create, retried on faults; one that landed already is done."""

    async def create() -> None:
        with contextlib.suppress(AlreadyExistsError):
            await crm.create(entity_set, row, row_id=row_id)

    await retried(create)


async def qualify_leads(
    crm: DataverseClient,
    queue: JobQueue,
    families: Families,
    rng: random.Random,
    retried: Retried,
) -> None:
    """Class 3, lead races: once the product made the Dataverse lead, the seller qualifies it
    (an opportunity with ``originatingleadid``, the lead Qualified) and flags the opportunity
    within the same poll interval — flagged when created (before the lead is qualified) or
    right after qualifying — and 2-3 poll jobs for the opportunity plus one for the referral
    arrive at once."""

    # Picked before any wait, so the run's random stream does not depend on timing.
    runs_of = {lead.number: rng.choice(RACE_JOBS) for lead in families.leads}

    async def one(lead: LeadRace) -> None:
        lead_id = record_id("lead", lead.referral_id)

        async def made() -> bool:
            try:
                await crm.get("leads", lead_id, select=["leadid"])
            except NotFoundError:
                return False
            return True

        if not await _wait_for(made, WAIT_LEAD_S):
            lead.problems.append(f"no Dataverse lead {lead_id} after {WAIT_LEAD_S:.0f} s")
            return
        number = lead.number
        account_id, contact_id, opportunity_id = (str(uuid.uuid4()) for _ in range(3))
        await _create(crm, "accounts",
                      {"name": f"Chaos lead customer {number} Ltd",
                       "address1_postalcode": f"{30000 + number}", "address1_country": "DE"},
                      account_id, retried)  # fmt: skip
        await _create(crm, "contacts",
                      {"firstname": "Lee", "lastname": f"Lead{number}",
                       "emailaddress1": f"lead-qualified{number}@example.com"},
                      contact_id, retried)  # fmt: skip
        # Valid for a referral of its own (account country, contact, value, close date, a
        # solution row): if the product took it for the seller's own deal, it would POST one.
        opportunity = {
            "name": f"Chaos lead {number} qualified",
            "estimatedvalue": 45000,
            "estimatedclosedate": "2027-06-30",
            "description": "Qualified from a marketplace lead.",
            "parentaccountid@odata.bind": f"/accounts({account_id})",
            "customerid_account@odata.bind": f"/accounts({account_id})",
            "parentcontactid@odata.bind": f"/contacts({contact_id})",
            "originatingleadid@odata.bind": f"/leads({lead_id})",
            "cosell_visibletomicrosoft": True,
            "cosell_syncwithpartnercenter": lead.flagged_first,
        }
        await _create(crm, "opportunities", opportunity, opportunity_id, retried)
        lead.opportunity_id = opportunity_id
        await _create(crm, "cosell_solutions",
                      {"cosell_name": "SOL-12345-ABC", "cosell_solutionidentifier": "SOL-12345-ABC",
                       "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
                      str(uuid.uuid4()), retried)  # fmt: skip

        async def qualify() -> Any:
            return await crm.update(
                "leads", lead_id,
                {"statecode": 1, "statuscode": 3,
                 "qualifyingopportunityid@odata.bind": f"/opportunities({opportunity_id})"},
            )  # fmt: skip

        async def flag() -> Any:
            return await crm.update(
                "opportunities", opportunity_id, {"cosell_syncwithpartnercenter": True},
                select=["modifiedon"],
            )  # fmt: skip

        await retried(qualify)
        row = None if lead.flagged_first else await retried(flag)
        observed = row.get("modifiedon") if isinstance(row, Mapping) else None
        runs = runs_of[lead.number]
        racing = [job("opportunity", opportunity_id, "poll", observed)] * runs
        racing.append(job("referral", lead.referral_id, "poll", None))
        await _send_all(queue, racing, retried)
        lead.jobs = runs + 1

    await asyncio.gather(*(one(lead) for lead in families.leads))


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
    poison: Sequence[str] = (),
) -> FamilyProblems:
    """The families' own checks (the run's field-by-field check covers their pairs too, but
    the fields ``Families.not_compared`` names). ``opportunities``: the opportunity rows (with
    ``cosell_audit`` and ``cosell_syncstatus``) by lower-case ``cosell_referralid``;
    ``poison``: the text of every message in the poison queue."""
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

    await _check_oversize(found, families, referral_of, opportunities, pc)
    await _check_reopened(found, families, opportunities, pc, poison)
    await _check_leads(found, families, opportunities, pc, links)
    return found


def _short(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 50 else text[:47] + "...") + f" ({len(text)} characters)"


async def _check_oversize(
    found: FamilyProblems,
    families: Families,
    referral_of: Mapping[int, str],
    opportunities: Mapping[str, list[dict[str, Any]]],
    pc: PartnerCenterClient,
) -> None:
    """Class 6: Partner Center keeps its long value, the opportunity holds it cut to fit (as
    sent) or the value before the edit, and says Error with the reason."""
    for number, oversize in sorted(families.oversize.items()):
        referral_id = referral_of.get(number, "")
        how = "as sent" if oversize.on_create else "by a Partner Center edit"
        label = f"pair {number} (referral {referral_id}, oversize {oversize.field} {how})"
        rows = opportunities.get(referral_id, []) if referral_id else []
        if not rows:
            continue  # the run's check reports it missing
        referral = await pc.get_referral(referral_id)
        details = referral.details
        pc_value = referral.name if oversize.field == "name" else (details and details.notes)
        if pc_value != oversize.value:
            found.lost.append(f"{label}: Partner Center's value {_short(oversize.value)} became "
                              f"{_short(pc_value)}")  # fmt: skip
        row = rows[0]
        crm_value = (
            without_mark(row.get("name")) if oversize.field == "name" else row.get("description")
        )
        if crm_value != oversize.crm_value:
            found.lost.append(f"{label}: the opportunity holds {_short(crm_value)}, expected "
                              f"{_short(oversize.crm_value)}")  # fmt: skip
        if row.get("cosell_syncstatus") != SYNC_STATUS_ERROR:
            found.unequal.append(f"{label}: sync status {row.get('cosell_syncstatus')!r}, "
                                 f"expected Error ({SYNC_STATUS_ERROR})")  # fmt: skip
        audit = str(row.get("cosell_audit") or "")
        if f"has {len(oversize.value)} {OVERSIZE_REASON}" not in audit:
            found.unequal.append(f"{label}: the audit does not give the reason (ends "
                                 f"{audit[-160:]!r})")  # fmt: skip


async def _check_reopened(
    found: FamilyProblems,
    families: Families,
    opportunities: Mapping[str, list[dict[str, Any]]],
    pc: PartnerCenterClient,
    poison: Sequence[str],
) -> None:
    """Class 6: the Closed referral never changes; the reopened opportunity holds the seller's
    deal value and the notes Partner Center sent while it was closed, with the reason in the
    audit; no job of the pair in the poison queue."""
    for number, deal in sorted(families.reopened.items()):
        label = f"pair {number} (referral {deal.referral_id or 'none'}, reopened deal)"
        found.unequal += [f"{label}: {p}" for p in deal.problems]
        ids = [i for i in (deal.referral_id, deal.opportunity_id) if i]
        poisoned = [text for text in poison if any(i in text.lower() for i in ids)]
        if poisoned:
            found.lost.append(f"{label}: {len(poisoned)} job(s) in the poison queue: "
                              f"{poisoned[0][:200]!r}")  # fmt: skip
        if deal.closed is None:
            continue
        now = _closed_view(await pc.get_referral(deal.referral_id))
        if now != deal.closed:
            changed = {k: (deal.closed[k], now[k]) for k in now if now[k] != deal.closed[k]}
            found.lost.append(f"{label}: the Closed referral changed: {changed}")
        if now["status"] != "Closed/Won":
            found.unequal.append(f"{label}: referral {now['status']}, expected Closed/Won")
        rows = opportunities.get(deal.referral_id, [])
        if not rows:
            continue
        row = rows[0]
        if deal.reopened and (row.get("statecode"), row.get("statuscode")) != (0, 1):
            found.unequal.append(f"{label}: opportunity state {row.get('statecode')}/"
                                 f"{row.get('statuscode')}, reopened as 0/1")  # fmt: skip
        value = row.get("estimatedvalue")
        if deal.seller_value is not None and (
            value is None or float(value) != float(deal.seller_value)
        ):
            found.lost.append(f"{label}: the seller's deal value {deal.seller_value} after "
                              f"reopening became {value!r}")  # fmt: skip
        if deal.closed_edit is not None:
            if row.get("description") != deal.closed_edit:
                found.lost.append(f"{label}: notes {deal.closed_edit!r}, taken by Partner Center "
                                  f"while closed, are {row.get('description')!r} in the "
                                  "reopened opportunity")  # fmt: skip
            if CLOSED_REASON not in str(row.get("cosell_audit") or ""):
                found.unequal.append(f"{label}: the audit never says the closed opportunity "
                                     "could not take Partner Center's edit")  # fmt: skip


async def _check_leads(
    found: FamilyProblems,
    families: Families,
    opportunities: Mapping[str, list[dict[str, Any]]],
    pc: PartnerCenterClient,
    links: LinkStore,
) -> None:
    """Class 3: one referral per qualified lead's deal (Microsoft's), linked both ways to the
    opportunity, and accepted."""
    for lead in families.leads:
        opportunity_id = lead.opportunity_id.lower()
        label = (f"lead {lead.number} (referral {lead.referral_id}, opportunity "
                 f"{opportunity_id or 'none'})")  # fmt: skip
        found.unequal += [f"{label}: {p}" for p in lead.problems]
        if not opportunity_id:
            continue
        made = [
            r.id.lower()
            async for r in pc.list_referrals(filter=f"externalReferenceId eq '{opportunity_id}'")
            if r.id and r.id.lower() != lead.referral_id
        ]
        if made:
            found.duplicates.append(f"{label}: partner referral(s) {made} for the lead's deal")
        rows = opportunities.get(lead.referral_id, [])
        named = [str(r.get("opportunityid")).lower() for r in rows]
        if named != [opportunity_id]:
            found.duplicates.append(f"{label}: Microsoft's referral names opportunities {named}")
        link = await links.get_link(lead.referral_id)
        if link is None or (link.opportunity_id or "").lower() != opportunity_id:
            found.unequal.append(f"{label}: link of the referral names "
                                 f"{link and link.opportunity_id!r}")  # fmt: skip
        by_opportunity = await links.get_link_by_opportunity(opportunity_id)
        if by_opportunity is None or by_opportunity.referral_id.lower() != lead.referral_id:
            found.unequal.append(f"{label}: link of the opportunity names "
                                 f"{by_opportunity and by_opportunity.referral_id!r}")  # fmt: skip
        referral = await pc.get_referral(lead.referral_id)
        if (str(referral.status), str(referral.substatus)) != ("Active", "Accepted"):
            found.unequal.append(f"{label}: referral {referral.status}/{referral.substatus}, "
                                 "expected Active/Accepted")  # fmt: skip


async def currency_codes(crm: DataverseClient) -> dict[str, str]:
    """ISO code by ``transactioncurrencyid`` (lower case)."""
    codes = {}
    async for row in crm.list_rows(
        "transactioncurrencies", select=["transactioncurrencyid", "isocurrencycode"]
    ):
        codes[str(row["transactioncurrencyid"]).lower()] = str(row["isocurrencycode"])
    return codes
