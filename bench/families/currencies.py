"""**Unknown currencies** (class 4): some of Microsoft's referrals are in a currency the
Dataverse emulator lacks (``model.UNKNOWN_CURRENCY``, picked by ``pairs.pick_microsoft_pairs``).
Check (in ``bench/chaos.py``'s ``_check``): Partner Center keeps that currency (no chaos edit
changes a currency), the opportunity shows sync status Error.
"""

from __future__ import annotations

from shared.dataverse import DataverseClient


async def currency_codes(crm: DataverseClient) -> dict[str, str]:
    """ISO code by ``transactioncurrencyid`` (lower case)."""
    codes = {}
    async for row in crm.list_rows(
        "transactioncurrencies", select=["transactioncurrencyid", "isocurrencycode"]
    ):
        codes[str(row["transactioncurrencyid"]).lower()] = str(row["isocurrencycode"])
    return codes
