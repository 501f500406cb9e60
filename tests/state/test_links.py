"""The link store against Azurite: round trips, both lookups, and races settled by ETags."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from shared.errors import AlreadyExistsError, ConcurrencyError, EntityTooLargeError, InvalidKeyError
from shared.state import LinkResult, LinkStore, PendingCreate, SyncLink

NOW = datetime(2026, 11, 27, 12, 30, 15, 123000, tzinfo=UTC)


def a_link(**changes: object) -> SyncLink:
    values: dict[str, object] = {
        "referral_id": str(uuid.uuid4()),
        "opportunity_id": str(uuid.uuid4()),
        "base": {
            "name": "Contoso – Azure migration",
            "deal_value": 125000.5,
            "solutions": ["SOL-1"],
        },
        "referral_etag": '"0x8DD1"',
        "referral_updated_at": NOW,
        "opportunity_etag": 'W/"123456"',
        "opportunity_modified_on": NOW,
        "last_result": LinkResult(status="synced", at=NOW),
    }
    values.update(changes)
    return SyncLink.model_validate(values)


async def test_link_round_trips_with_every_field(links: LinkStore) -> None:
    link = a_link(pending_create=PendingCreate(side="crm", target_id="x", started_at=NOW))
    saved = await links.create_link(link)

    loaded = await links.get_link(link.referral_id)

    assert loaded is not None
    assert loaded.model_dump(exclude={"etag"}) == link.model_dump(exclude={"etag"})
    assert loaded.etag == saved.etag is not None


async def test_link_is_found_by_opportunity_id_in_any_case(links: LinkStore) -> None:
    link = await links.create_link(a_link())
    assert link.opportunity_id is not None

    found = await links.get_link_by_opportunity("{" + link.opportunity_id.upper() + "}")

    assert found is not None
    assert found.referral_id == link.referral_id


async def test_unknown_ids_have_no_link(links: LinkStore) -> None:
    assert await links.get_link(str(uuid.uuid4())) is None
    assert await links.get_link_by_opportunity(str(uuid.uuid4())) is None


async def test_creating_a_link_twice_is_refused(links: LinkStore) -> None:
    link = a_link()
    await links.create_link(link)

    with pytest.raises(AlreadyExistsError):
        await links.create_link(link)


async def test_update_with_current_etag_saves_and_returns_new_etag(links: LinkStore) -> None:
    created = await links.create_link(a_link())
    changed = created.model_copy(update={"base": {"name": "renamed"}, "referral_etag": '"0x8DD2"'})

    updated = await links.update_link(changed)

    loaded = await links.get_link(created.referral_id)
    assert loaded is not None and loaded.base == {"name": "renamed"}
    assert loaded.referral_etag == '"0x8DD2"'
    assert updated.etag == loaded.etag != created.etag


async def test_concurrent_updates_of_one_link_exactly_one_wins(links: LinkStore) -> None:
    created = await links.create_link(a_link())
    first = created.model_copy(update={"base": {"name": "first"}})
    second = created.model_copy(update={"base": {"name": "second"}})

    results = await asyncio.gather(
        links.update_link(first), links.update_link(second), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, SyncLink)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 1 and isinstance(losers[0], ConcurrencyError)
    stored = await links.get_link(created.referral_id)
    assert stored is not None and stored.base == winners[0].base


async def test_update_of_a_stale_copy_raises_and_keeps_the_newer_data(links: LinkStore) -> None:
    created = await links.create_link(a_link())
    await links.update_link(created.model_copy(update={"base": {"name": "newer"}}))

    with pytest.raises(ConcurrencyError, match="changed by someone else"):
        await links.update_link(created.model_copy(update={"base": {"name": "stale"}}))

    stored = await links.get_link(created.referral_id)
    assert stored is not None and stored.base == {"name": "newer"}


async def test_update_of_a_deleted_link_raises_concurrency_error(links: LinkStore) -> None:
    created = await links.create_link(a_link())
    await links.delete_link(created)

    with pytest.raises(ConcurrencyError, match="deleted"):
        await links.update_link(created)
    assert created.opportunity_id is not None
    assert await links.get_opportunity_index(created.opportunity_id) is None


async def test_pending_referral_intent_is_recorded_once_then_resolved(links: LinkStore) -> None:
    opportunity_id = str(uuid.uuid4())
    intent = PendingCreate(side="partner_center", started_at=NOW)
    index = await links.create_pending_referral(opportunity_id, intent)

    with pytest.raises(AlreadyExistsError):
        await links.create_pending_referral(opportunity_id, intent)
    pending = await links.get_opportunity_index(opportunity_id)
    assert pending is not None and pending.pending_create == intent and pending.referral_id is None
    assert await links.get_link_by_opportunity(opportunity_id) is None

    link = await links.create_link(a_link(opportunity_id=opportunity_id))

    resolved = await links.get_opportunity_index(opportunity_id)
    assert resolved is not None and resolved.pending_create is None
    assert resolved.referral_id == link.referral_id
    assert index.etag is not None and resolved.etag != index.etag


async def test_linking_an_opportunity_later_updates_the_index(links: LinkStore) -> None:
    created = await links.create_link(a_link(opportunity_id=None))
    opportunity_id = str(uuid.uuid4())

    await links.update_link(created.model_copy(update={"opportunity_id": opportunity_id}))

    found = await links.get_link_by_opportunity(opportunity_id)
    assert found is not None and found.referral_id == created.referral_id


@pytest.mark.parametrize("bad_id", ["a/b", "a\\b", "a#b", "a?b", "a\tb", "a\x7fb", ""])
async def test_ids_that_table_storage_refuses_fail_with_a_clear_error(
    links: LinkStore, bad_id: str
) -> None:
    with pytest.raises(InvalidKeyError, match="referral id"):
        await links.create_link(a_link(referral_id=bad_id))
    with pytest.raises(InvalidKeyError, match="opportunity id"):
        await links.get_link_by_opportunity(bad_id)


async def test_large_base_is_split_across_properties_and_read_back(links: LinkStore) -> None:
    notes = "é" * 100_000  # ~200 KB in UTF-16: more than one 64 KiB property
    link = await links.create_link(a_link(base={"notes": notes}))

    loaded = await links.get_link(link.referral_id)

    assert loaded is not None and loaded.base == {"notes": notes}


async def test_entity_over_one_mebibyte_is_refused_before_it_is_sent(links: LinkStore) -> None:
    link = a_link(base={"notes": "x" * 600_000})  # 1.2 MB in UTF-16

    with pytest.raises(EntityTooLargeError, match="more than Table Storage's 1048576 bytes"):
        await links.create_link(link)
    assert await links.get_link(link.referral_id) is None
