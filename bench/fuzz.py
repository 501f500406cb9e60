"""Fuzzed webhook bodies through ``shared.triggers.webhook.handle_webhook`` (SPEC 11, 8).

The handler runs on a real runtime (Azurite queue), as the HTTP function calls it. Bodies come
in families whose right answer is known by construction: valid referral events (each for a new
referral id, so none is a duplicate), ``test-created`` events, valid events with one thing
broken (event name, resource name, id, a field's type, a missing field, an oversized body), and
random bytes or random JSON. Checked: every answer is 2xx or 4xx; ``enqueued`` only for valid
events; the queue grew by exactly the number of valid events.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from azure.storage.queue.aio import QueueClient

from shared.jobs import SYNC_JOBS_QUEUE
from shared.runtime import Runtime
from shared.settings import load_settings
from shared.triggers.webhook import handle_webhook

EVENTS = ("referral-created", "referral-updated", "related-referral-created",
          "related-referral-updated")  # fmt: skip


@dataclass
class Fuzz:
    bodies: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    valid: int = 0
    wrong_class: int = 0  # answers neither 2xx nor 4xx
    enqueued_invalid: int = 0
    enqueued_invalid_kinds: Counter[str] = field(default_factory=Counter)
    valid_not_enqueued: int = 0
    queue_growth: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.wrong_class == 0
            and self.enqueued_invalid == 0
            and self.valid_not_enqueued == 0
            and self.queue_growth == self.valid
        )


def _valid(rng: random.Random) -> dict[str, Any]:
    referral_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if rng.random() < 0.3:
        referral_id = referral_id.upper()
    body: dict[str, Any] = {
        "EventName": rng.choice(EVENTS),
        "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}",
        "ResourceName": rng.choice(["referral", "Referral"]),
    }
    if rng.random() < 0.5:
        body["AuditUri"] = None
    if rng.random() < 0.5:
        body["ResourceChangeUtcDate"] = (
            f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z"
        )
    return body


BROKEN = ("event name", "resource name", "resource uri", "missing field", "change date",
          "oversized", "not an object")  # fmt: skip


def _broken(rng: random.Random) -> tuple[str, bytes]:
    body = _valid(rng)
    how = rng.randrange(len(BROKEN))
    return BROKEN[how], _break(rng, body, how)


def _break(rng: random.Random, body: dict[str, Any], how: int) -> bytes:
    if how == 0:
        body["EventName"] = rng.choice(["referral-deleted", "", "x" * 300, 7])
    elif how == 1:
        body["ResourceName"] = rng.choice(["lead", "", None, ["referral"]])
    elif how == 2:
        body["ResourceUri"] = rng.choice([
            "https://x/referrals/not-a-guid", "", "http://169.254.169.254/latest/meta-data",
            "https://x/referrals/" + "1" * 40, None, 12,
        ])  # fmt: skip
    elif how == 3:
        del body[rng.choice(["EventName", "ResourceUri"])]
    elif how == 4:
        body["ResourceChangeUtcDate"] = rng.choice(["yesterday", 5, {"a": 1}, "2026-13-45"])
    elif how == 5:
        body["padding"] = "x" * (64 * 1024)
    else:
        return json.dumps([body]).encode()
    return json.dumps(body).encode()


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.randint(-(10**12), 10**12)
    if kind == 1:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 20)))
    if kind == 2:
        return rng.choice([None, True, False, 1.5e300])
    if kind == 3:
        return rng.choice((*EVENTS, "referral", "test-created"))
    if kind in (4, 5):
        keys = ["EventName", "ResourceUri", "ResourceName", "eventName", "x", ""]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _random(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    return json.dumps(_random_json(rng)).encode()


async def measure(connection_string: str, bodies: int = 10_000, seed: int = 9) -> Fuzz:
    rng = random.Random(seed)
    settings = load_settings(
        {
            "AzureWebJobsStorage": connection_string,
            "DATAVERSE_URL": "http://127.0.0.1:9",
            "PARTNER_CENTER_API_URL": "http://127.0.0.1:9/v1.0/engagements",
            "PARTNER_CENTER_WEBHOOK_API_URL": "http://127.0.0.1:9/webhooks/v1",
            "WEBHOOK_SIGNATURE_MODE": "off",
        }
    )
    runtime = Runtime.from_settings(settings)
    result = Fuzz(bodies=bodies)
    loop = asyncio.get_running_loop()
    try:
        await runtime.ensure_storage()
        async with QueueClient.from_connection_string(connection_string, SYNC_JOBS_QUEUE) as queue:
            await queue.clear_messages()
            started = loop.time()
            for _ in range(bodies):
                roll = rng.random()
                if roll < 0.25:
                    family, body, valid = "valid", json.dumps(_valid(rng)).encode(), True
                elif roll < 0.30:
                    test = {"EventName": "test-created", "ResourceName": "test",
                            "ResourceUri": "https://x/test/1"}  # fmt: skip
                    family, body, valid = "test-created", json.dumps(test).encode(), False
                elif roll < 0.65:
                    kind, body = _broken(rng)
                    family, valid = f"broken: {kind}", False
                else:
                    family, body, valid = "random", _random(rng), False
                headers = {"content-type": rng.choice(["application/json", "text/plain", ""])}
                answer = await handle_webhook(body, headers, runtime=runtime)
                result.families[family] += 1
                result.statuses[answer.status] += 1
                result.valid += valid
                if not (200 <= answer.status < 300 or 400 <= answer.status < 500):
                    result.wrong_class += 1
                if answer.enqueued and not valid:
                    result.enqueued_invalid += 1
                    result.enqueued_invalid_kinds[_describe(family, body)] += 1
                if valid and not answer.enqueued:
                    result.valid_not_enqueued += 1
            result.seconds = loop.time() - started
            properties = await queue.get_queue_properties()
            result.queue_growth = int(properties.approximate_message_count or 0)
            await queue.clear_messages()
    finally:
        await runtime.close()
    return result


def _describe(family: str, body: bytes) -> str:
    """A short label for an invalid body that was enqueued (for the report)."""
    if family == "broken: change date":
        try:
            value = json.loads(body).get("ResourceChangeUtcDate")
        except (ValueError, AttributeError):
            return family
        return f"{family} = {json.dumps(value)}"
    return family
