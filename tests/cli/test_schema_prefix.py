"""``CRM_COLUMN_PREFIX`` drives ``cosell schema`` and the emulator seed alike (``crm_schema``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox import dataverse as dataverse_emulator
from shared.crm_schema import crm_schema
from shared.settings import get_settings
from tests.cli.conftest import AUTH, BareDataverse, Sandbox, ServerThread


@pytest.fixture(scope="module")
def acme_dataverse() -> Iterator[str]:
    """An emulator seeded with the app's schema under the ``acme_`` prefix."""
    server = ServerThread(dataverse_emulator.create_app(seed=17, column_prefix="acme_"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def test_an_org_seeded_with_the_prefix_passes_the_check_with_nothing_to_apply(
    cli_env: Sandbox, acme_dataverse: str, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAVERSE_URL", acme_dataverse)
    monkeypatch.setenv("CRM_COLUMN_PREFIX", "acme_")
    get_settings.cache_clear()

    check = cosell("schema", "check", "--json")
    apply = cosell("schema", "apply", "--yes", "--json")

    assert check.code == 0, check.out + check.err
    names = {item["name"] for item in check.json()["items"]}
    assert names == {c.logical_name for c in crm_schema("acme_").columns} | {
        "acme_solution",
        "acme_solutiondetail",
    }
    assert apply.code == 0 and apply.json()["planned"] == []


def test_the_default_prefix_finds_nothing_in_an_org_seeded_with_another(
    cli_env: Sandbox, acme_dataverse: str, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAVERSE_URL", acme_dataverse)
    get_settings.cache_clear()

    check = cosell("schema", "check", "--json")

    assert check.code == 1
    assert {i["status"] for i in check.json()["items"]} == {"missing"}


def test_apply_on_a_bare_org_with_the_prefix_then_check_passes(
    bare_env: BareDataverse, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_COLUMN_PREFIX", "acme_")
    get_settings.cache_clear()

    apply = cosell("schema", "apply", "--yes")
    check = cosell("schema", "check")

    assert apply.code == 0, apply.out + apply.err
    assert "+ table acme_solution" in apply.out
    # The sync writes the referral on the leads it creates, so apply makes those columns too.
    assert "+ column lead.acme_referralid (String)" in apply.out
    assert "cosell_" not in apply.out
    assert check.code == 0, check.out
    row = httpx.get(
        f"{bare_env.url}/api/data/v9.2/leads",
        params={"$select": "acme_referralid,acme_referrallink"},
        headers=AUTH,
        timeout=10,
    )
    assert row.status_code == 200, row.text
