"""Dataverse's rules for state and status (reference 8): which ``statuscode`` belongs to which
``statecode``, what a PATCH may change, and the ``WinOpportunity`` / ``LoseOpportunity``
parameters. Pure: the store applies what these allow (``store.py``), as Partner Center's
emulator keeps its rules in ``sandbox/partner_center/rules.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sandbox.dataverse.errors import INVALID_ARGUMENT, DataverseFault, payload_error
from sandbox.dataverse.schema import LEAD_STATES, OPPORTUNITY_STATES, Table

Row = dict[str, Any]

# An @odata.bind value: an entity set and a row id, with or without the service root.
BIND = re.compile(
    r"^(?:https?://[^/]+)?/?(?:api/data/v9\.\d/)?(?P<set>[A-Za-z_][A-Za-z0-9_]*)"
    r"\((?P<id>[0-9a-fA-F-]{36})\)$"
)
WON, LOST = 1, 2  # the opportunity's closed statecodes


def states(table: Table) -> dict[int, tuple[int, ...]]:
    """Each statecode with its status reasons, the first being the default."""
    if table.entity_set == "opportunities":
        return OPPORTUNITY_STATES
    if table.entity_set == "leads":
        return LEAD_STATES
    # Other tables: each status reason under its state, the first being the default.
    found: dict[int, tuple[int, ...]] = {}
    for status, state in table.status_states.items():
        found[state] = (*found.get(state, ()), status)
    return found or {0: (1,), 1: (2,)}


def initial_state(table: Table, changes: Row) -> tuple[int, int]:
    """The statecode and statuscode a new row starts with; an opportunity starts open."""
    allowed = states(table)
    state = changes.get("statecode", 0)
    if table.entity_set == "opportunities" and state != 0:
        raise _closing_refused(state)
    if state not in allowed:
        raise payload_error(table.entity_set, f"statecode {state} is not valid.")
    status = changes.get("statuscode") or allowed[state][0]
    if status not in allowed[state]:
        raise bad_status(table, state, status)
    return state, status


def check_state_change(table: Table, current: int, changes: Row) -> None:
    """Refuse a PATCH's state change Dataverse refuses (``current`` is the row's statecode);
    a new statecode without a statuscode gets that state's default status."""
    allowed = states(table)
    state = changes.get("statecode", current)
    status = changes.get("statuscode")
    if table.entity_set == "opportunities":
        closing = state in (WON, LOST) and "statecode" in changes
        if closing or (status is not None and status not in OPPORTUNITY_STATES[0]):
            raise _closing_refused(int(state or 0) if closing else _state_of(int(status or 0)))
        if current != 0 and state != 0:
            # Won/Lost rows are read-only until reopened by PATCH statecode 0 (8.1, 8.2).
            raise DataverseFault(
                400,
                INVALID_ARGUMENT,
                "The opportunity is closed and cannot be edited; reopen it first "
                '({"statecode": 0, "statuscode": 1}).',
            )
    elif table.entity_set == "leads" and current != 0 and state not in (0, current):
        raise DataverseFault(
            400, INVALID_ARGUMENT, "A closed lead must be reactivated before it changes state."
        )
    if state not in allowed:
        raise payload_error(table.entity_set, f"statecode {state} is not valid.")
    if "statecode" in changes and status is None:
        changes["statuscode"] = allowed[state][0]
    elif status is not None and status not in allowed[state]:
        raise bad_status(table, state, status)


@dataclass(frozen=True)
class Close:
    """A ``WinOpportunity`` / ``LoseOpportunity`` request, read (reference 8.2)."""

    action: str  # WinOpportunity | LoseOpportunity
    won: bool
    state: int
    status: int
    opportunity_id: str  # as the bind spells it
    close: Row  # the OpportunityClose object


def read_close(won: bool, body: Row, opportunities: Table) -> Close:
    """The parameters of a Win/Lose action, or the 400 Dataverse answers."""
    action = "WinOpportunity" if won else "LoseOpportunity"
    status = body.get("Status")
    close = body.get("OpportunityClose")
    if isinstance(status, bool) or not isinstance(status, int) or not isinstance(close, dict):
        raise DataverseFault(
            400,
            "0x80048d19",
            f"{action} needs the parameters OpportunityClose (an object) and Status (an integer).",
        )
    state = WON if won else LOST
    if status not in OPPORTUNITY_STATES[state]:
        raise bad_status(opportunities, state, status)
    bind = close.get("opportunityid@odata.bind")
    match = BIND.match(bind) if isinstance(bind, str) else None
    if match is None or match.group("set") != "opportunities":
        raise DataverseFault(
            400,
            "0x80048d19",
            'OpportunityClose needs "opportunityid@odata.bind": "/opportunities(<id>)".',
        )
    return Close(action, won, state, status, match.group("id"), close)


def check_closable(current: int) -> None:
    if current != 0:
        # Won must be reopened before it can be lost, and vice versa (reference 8.2).
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            "The opportunity is already closed; reopen it before closing it again.",
        )


def bad_status(table: Table, state: int, status: Any) -> DataverseFault:
    return DataverseFault(
        400,
        "0x8004431A",
        f"{status} is not a valid status code for state code {table.logical_name}State {state}.",
    )


def _state_of(status: int) -> int:
    return next((s for s, v in OPPORTUNITY_STATES.items() if status in v), 0)


def _closing_refused(state: int) -> DataverseFault:
    # Reference 8.2: Won/Lost only through WinOpportunity/LoseOpportunity. UNCERTAIN: the exact
    # Web API wording; this is the SDK-era message.
    target, message = (
        ("Won", "WinOpportunityRequest")
        if state == WON
        else (
            "Lost",
            "LoseOpportunityRequest",
        )
    )
    return DataverseFault(
        400,
        INVALID_ARGUMENT,
        f"This message can not be used to set the state of opportunity to {target}. In order to "
        f"set the state of opportunity to {target}, use the {message} message instead.",
    )
