"""Property: random interleavings of edits on both sides and syncs converge, and no edit
made on only one side is lost; a second sync in a row writes nothing (emulator stats)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync.conftest import World, open_world

# (field, Partner Center JSON Pointer, Dataverse column) for the fields both sides edit.
FIELDS = {
    "notes": ("/details/notes", "description"),
    "deal_value": ("/details/dealValue", "estimatedvalue"),
    "name": ("/name", "name"),
}
VALUES = {
    "notes": st.sampled_from(["alpha", "beta", "gamma", "delta"]),
    "deal_value": st.sampled_from([1000, 2500, 99999, 123456]),
    "name": st.sampled_from(["Deal A", "Deal B", "Deal C"]),
}
edit = st.one_of(
    *(
        st.tuples(st.sampled_from(["pc", "crm"]), st.just(field), values)
        for field, values in VALUES.items()
    )
)
step = st.one_of(edit, st.tuples(st.just("sync"), st.sampled_from(["referral", "opportunity"])))


async def _pc_value(world: World, referral_id: str, field: str) -> Any:
    referral = await world.referral(referral_id)
    if field == "name":
        return referral.name
    assert referral.details is not None
    return referral.details.notes if field == "notes" else referral.details.deal_value


async def _crm_value(world: World, opportunity_id: str, field: str) -> Any:
    row = await world.opportunity(opportunity_id)
    value = row[FIELDS[field][1]]
    return value.removeprefix("✔ ") if field == "name" else value


async def scenario(connection: str, steps: list[tuple[Any, ...]]) -> None:
    async with open_world(connection, "p" + uuid.uuid4().hex[:16],
                          CONFLICT_POLICY="partner_center") as world:  # fmt: skip
        referral_id = await world.incoming()
        created = await world.sync_referral(referral_id)
        opportunity_id = created.opportunity_id
        assert opportunity_id is not None
        pending: dict[str, dict[str, Any]] = {"pc": {}, "crm": {}}  # edits since the last sync
        # The value both sides held after the last sync: an "edit" back to it is no change (the
        # three-way merge sees none), so it neither wins a conflict nor needs to survive.
        synced = {field: await _pc_value(world, referral_id, field) for field in FIELDS}
        for kind, *rest in steps:
            if kind == "sync":
                job = rest[0]
                await (world.sync_referral(referral_id) if job == "referral"
                       else world.sync_opportunity(opportunity_id))  # fmt: skip
                # Partner Center wins conflicts (policy); a one-sided edit must survive.
                expected = {**pending["crm"], **pending["pc"]}
                for field, value in expected.items():
                    assert await _pc_value(world, referral_id, field) == value, field
                    assert await _crm_value(world, opportunity_id, field) == value, field
                synced |= expected
                pending = {"pc": {}, "crm": {}}
                continue
            field, value = rest
            if kind == "pc":
                await world.edit_referral(
                    referral_id, {"op": "replace", "path": FIELDS[field][0], "value": value}
                )
            else:
                column = FIELDS[field][1]
                await world.edit_opportunity(opportunity_id, **{column: value})
            if value == synced[field]:
                pending[kind].pop(field, None)
            else:
                pending[kind][field] = value
        await world.sync_opportunity(opportunity_id)
        await world.sync_referral(referral_id)
        for field in FIELDS:
            assert await _pc_value(world, referral_id, field) == await _crm_value(
                world, opportunity_id, field
            ), field
        before = await world.writes()
        await world.sync_opportunity(opportunity_id)
        await world.sync_referral(referral_id)
        assert await world.writes() == before


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=8))
def test_random_edits_and_syncs_converge_without_losing_edits(
    storage_connection_string: str, steps: list[tuple[Any, ...]]
) -> None:
    asyncio.run(scenario(storage_connection_string, steps))
