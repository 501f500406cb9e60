"""The families of issue 13 in the chaos run (``bench/chaos.py``): records the plain chaos run
never makes, set up so that the run's faults and kills meet them, and their own checks.

One module a family, each with its setup, its check and the description of both:

* ``races``: creation races under throttling (class 1).
* ``related``: related referrals by reconcile/backfill/manual (class 2).
* ``currencies``: unknown currencies (class 4).
* ``contacts``: shared contacts (class 5).
* ``oversize``: oversize values (class 6).
* ``reopened``: reopened deals (class 6).
* ``leads``: lead races (class 3).
* ``collisions``: solution ids that differ only by case (class 7).

What they share: ``model`` (the sizes, each family's records, ``Families``, the constants more
than one uses), ``pairs`` (which of Microsoft's pairs each family gets), ``plumbing`` (the
harness's retry, jobs sent at once, waiting), ``checks`` (``check_families``, every family's
check in turn; ``refused_by_design``).

The sizes grow with the number of referrals (``FamilySizes.of``), so the reduced run in
``make test`` tries every family too.
"""

from bench.families.checks import check_families, refused_by_design
from bench.families.collisions import with_case_twins
from bench.families.contacts import new_contact
from bench.families.currencies import currency_codes
from bench.families.leads import qualify_leads, send_leads
from bench.families.model import SYNC_STATUS_ERROR, UNKNOWN_CURRENCY, Families, FamilySizes
from bench.families.oversize import drop_unlinked_oversize_edits, oversize_edit, with_oversize
from bench.families.pairs import pick_microsoft_pairs, pick_reopened
from bench.families.races import BURST, flag_and_race, seed_seller_opportunities
from bench.families.related import enqueue_related, find_microsoft_referrals
from bench.families.reopened import reopen_deals

__all__ = [
    "BURST",
    "SYNC_STATUS_ERROR",
    "UNKNOWN_CURRENCY",
    "Families",
    "FamilySizes",
    "check_families",
    "currency_codes",
    "drop_unlinked_oversize_edits",
    "enqueue_related",
    "find_microsoft_referrals",
    "flag_and_race",
    "new_contact",
    "oversize_edit",
    "pick_microsoft_pairs",
    "pick_reopened",
    "qualify_leads",
    "refused_by_design",
    "reopen_deals",
    "seed_seller_opportunities",
    "send_leads",
    "with_case_twins",
    "with_oversize",
]
