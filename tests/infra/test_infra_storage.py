"""The queues and tables in Bicep are exactly the ones the code uses."""

from __future__ import annotations

from typing import Any

from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.state import TABLE_NAMES
from tests.infra.infra_model import (
    MAIN,
    body,
    module_path,
    names_of,
    parse,
    property_path,
    resources_of_type,
)

QUEUES = "Microsoft.Storage/storageAccounts/queueServices/queues"
TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"


def _storage() -> dict[str, Any]:
    return parse(module_path("storage"))


def test_queues_in_bicep_are_the_sync_jobs_queue_and_its_poison_queue() -> None:
    assert names_of(_storage(), QUEUES) == {SYNC_JOBS_QUEUE, POISON_QUEUE}


def test_poison_queue_follows_the_hosts_naming() -> None:
    # The host moves failed messages to `<queue>-poison`; a different name would never fill.
    assert f"{SYNC_JOBS_QUEUE}-poison" == POISON_QUEUE


def test_tables_in_bicep_are_the_state_tables() -> None:
    assert names_of(_storage(), TABLES) == set(TABLE_NAMES)


def test_every_queue_a_binding_uses_is_declared(
    declared_functions: dict[str, list[dict[str, Any]]],
) -> None:
    declared = names_of(_storage(), QUEUES)
    for function, bindings in declared_functions.items():
        for binding in bindings:
            if "queueName" in binding:
                assert binding["queueName"] in declared, f"{function}: {binding['queueName']}"


def test_storage_account_refuses_shared_keys() -> None:
    [(_, account)] = resources_of_type(_storage(), "Microsoft.Storage/storageAccounts")
    properties = body(account)["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False


def test_deployment_container_is_the_one_the_function_app_deploys_to() -> None:
    [(_, container)] = resources_of_type(_storage(), CONTAINERS)
    assert body(container)["name"] == "deploymentContainerName"
    passed = body(parse(MAIN)["modules"]["functionApp"])["params"]
    assert property_path(passed["deploymentContainerName"]) == [
        "storage",
        "outputs",
        "deploymentContainerName",
    ]
