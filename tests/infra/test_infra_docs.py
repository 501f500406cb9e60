"""The deployment docs name what the code and the Bicep actually use."""

from __future__ import annotations

from shared.jobs import POISON_QUEUE
from shared.settings import setting_names
from tests.infra.infra_model import MAIN, REPO, app_settings, parse

DEPLOY = REPO / "docs" / "deploy.md"
OPERATE = REPO / "docs" / "operate.md"


def test_deploy_guide_lists_every_app_setting() -> None:
    text = DEPLOY.read_text()
    missing = [n for n in [*setting_names(), *app_settings()] if f"`{n}`" not in text]
    assert not missing, f"docs/deploy.md does not mention {missing}"


def test_deploy_guide_lists_the_outputs_it_tells_operators_to_use() -> None:
    outputs = parse(MAIN)["outputs"]
    text = DEPLOY.read_text() + OPERATE.read_text()
    for name in ("AZURE_FUNCTION_NAME", "WEBHOOK_URL", "AZURE_MANAGED_IDENTITY_CLIENT_ID"):
        assert name in outputs, f"main.bicep lost output {name}"
        assert f"`{name}`" in text


def test_operations_guide_names_the_real_poison_queue() -> None:
    text = OPERATE.read_text()
    assert f"`{POISON_QUEUE}`" in text
    assert "cosell poison list" in text
    assert "cosell poison replay" in text
