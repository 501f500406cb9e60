"""The poison queue ``sync-jobs-poison`` read, replayed and emptied (SPEC 7), for ``cosell
poison`` and the dashboard page.

A poison message is either a job as the host moved it (its base64 body, after the last retry)
or an envelope ``{"reason": ..., "body": ...}`` written by the app for a message it could not
decode. The host's copy carries no reason, so ``recorded`` looks up the one the engine recorded
at the job's last failed attempt (``shared.failures``: the history row of its deal, by the job's
ids) — e.g. "Dataverse 500 on GET opportunities(…)". ``replay`` sends a job back to
``sync-jobs`` and only then deletes it from poison, so a crash in between leaves a duplicate
job (harmless: the engine reads current state), never a lost one. ``delete`` removes messages
for good.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from shared.errors import CosellError, JobDecodeError
from shared.failures import last_failure
from shared.jobs import JobQueue, SyncJob, decode_job
from shared.state import HistoryEntry, HistoryStore, LinkResult, LinkStore

PEEK_MAX = 32  # the Queue service's limit for one peek
REPLAY_LEASE_S = 120  # messages being replayed stay hidden from other readers meanwhile
NO_REASON = "failed on every retry (maxDequeueCount); no failure recorded"


@dataclass
class PoisonMessage:
    message_id: str
    inserted_on: datetime | None
    job: SyncJob | None
    reason: str
    body_excerpt: str
    text: str  # the message as the host reads it (after base64)
    enveloped: bool = False  # written by the app with its reason (a message that is not a job)

    def keys(self) -> set[str]:
        """What an operator may name it by: the message id, and its job's record id."""
        keys = {self.message_id.lower()}
        if self.job is not None:
            keys.add(str(self.job.id))
        return keys

    def matches(self, wanted: Collection[str]) -> bool:
        return bool(self.keys() & set(wanted))


def decode_message(message: QueueMessage) -> PoisonMessage:
    """Read a poison message whatever its shape; never raises."""
    raw = str(message.content or "")
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = raw  # written without the host's base64 encoding
    reason: str | None = None
    body: str = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "body" in data and "reason" in data:
        reason = str(data["reason"])
        inner = data["body"]
        body = inner if isinstance(inner, str) else json.dumps(inner)
    job: SyncJob | None
    try:
        job = decode_job(body)
    except JobDecodeError as exc:
        job = None
        reason = reason or f"not a valid job: {exc.reason}"
    return PoisonMessage(
        message_id=str(message.id),
        inserted_on=message.inserted_on,
        job=job,
        reason=reason or NO_REASON,
        # The decoded body can name a referral id at most; bodies are capped for display.
        body_excerpt=body[:200],
        text=text,
        enveloped=isinstance(data, dict) and "body" in data and "reason" in data,
    )


async def peek(client: QueueClient) -> tuple[list[PoisonMessage], int]:
    """The first ``PEEK_MAX`` messages (a peek: nothing is hidden or changed) and the depth."""
    try:
        peeked = await client.peek_messages(max_messages=PEEK_MAX)
        depth = (await client.get_queue_properties()).approximate_message_count or 0
    except ResourceNotFoundError:
        return [], 0
    return [decode_message(m) for m in peeked], depth


@dataclass
class Recorded:
    failure: HistoryEntry | None  # the newest failed attempt in the history
    link_error: str | None  # the link's last result, when it is an error (a refusal)


async def recorded(
    links: LinkStore, history: HistoryStore, jobs: list[SyncJob]
) -> dict[str, Recorded]:
    """What the app recorded about each job (best effort, a few point reads each): its newest
    failed attempt from the history (``shared.failures.last_failure``) and the error its link
    or opportunity index row holds. Keyed by the job's id."""
    found: dict[str, Recorded] = {}
    try:
        for job in jobs:
            result: LinkResult | None = None
            if job.kind == "referral":
                link = await links.get_link(str(job.id))
                result = link.last_result if link else None
            else:
                index = await links.get_opportunity_index(str(job.id))
                result = index.last_result if index else None
                if index is not None and index.referral_id and result is None:
                    link = await links.get_link(index.referral_id)
                    result = link.last_result if link else None
            error = result.message if result and result.status == "error" else None
            found[str(job.id)] = Recorded(await last_failure(links, history, job), error or None)
    except (AzureError, CosellError):
        pass  # reasons are extra information; the listing stands without them
    return found


def reason_of(message: PoisonMessage, found: Recorded | None) -> str:
    """Why the message is in the poison queue: the failure recorded at the job's last attempt
    for the host's copy of a job, else the message's own reason."""
    failure = found.failure.failure if found and found.failure else None
    return failure.summary if failure and not message.enveloped else message.reason


@dataclass
class Outcome:
    """What ``replay`` or ``delete`` did, by message."""

    done: list[PoisonMessage] = field(default_factory=list)
    skipped: list[PoisonMessage] = field(default_factory=list)  # not a job: cannot be replayed
    not_found: list[str] = field(default_factory=list)  # wanted ids no message matched


def _wanted(ids: Collection[str]) -> set[str]:
    return {i.strip().strip("{}").lower() for i in ids}


async def replay(
    client: QueueClient, jobs: JobQueue, *, ids: Collection[str] = (), every: bool = False
) -> Outcome:
    """Move the messages named by ``ids`` (message or job ids), or ``every`` message, back to
    ``sync-jobs``: enqueued first, then deleted from poison."""
    wanted, outcome, matched = _wanted(ids), Outcome(), set[str]()
    await jobs.create_queue()

    async def act(message: QueueMessage, decoded: PoisonMessage) -> bool:
        if not (every or decoded.matches(wanted)):
            return False
        matched.update(decoded.keys())
        if decoded.job is None:
            outcome.skipped.append(decoded)
            return False
        await jobs.enqueue(decoded.job)
        await client.delete_message(message)
        outcome.done.append(decoded)
        return True

    await each_message(client, act)
    outcome.not_found = sorted(wanted - matched)
    return outcome


async def delete(
    client: QueueClient,
    *,
    ids: Collection[str] = (),
    malformed: bool = False,
    every: bool = False,
) -> Outcome:
    """Delete for good the messages named by ``ids``, the ``malformed`` ones, or ``every`` one."""
    wanted, outcome, matched = _wanted(ids), Outcome(), set[str]()

    async def act(message: QueueMessage, decoded: PoisonMessage) -> bool:
        chosen = every or (malformed and decoded.job is None) or decoded.matches(wanted)
        if not chosen:
            return False
        matched.update(decoded.keys())
        await client.delete_message(message)
        outcome.done.append(decoded)
        return True

    await each_message(client, act)
    outcome.not_found = sorted(wanted - matched)
    return outcome


async def each_message(
    client: QueueClient, act: Callable[[QueueMessage, PoisonMessage], Awaitable[bool]]
) -> None:
    """Hand every poison message to ``act`` once; True means it took the message away, else
    the message is made visible again at once (not after the lease)."""
    untouched: list[tuple[QueueMessage, str]] = []
    try:
        # Received (not peeked) so each message can be deleted with its pop receipt; each stays
        # hidden for the lease, so this loop sees every message once and then ends.
        async for message in client.receive_messages(
            messages_per_page=PEEK_MAX, visibility_timeout=REPLAY_LEASE_S
        ):
            decoded = decode_message(message)
            if not await act(message, decoded):
                untouched.append((message, decoded.text))
    except ResourceNotFoundError:
        pass  # no poison queue: nothing was ever poisoned
    for message, text in untouched:
        # The SDK re-sends the content through the client's base64 encoder, so it gets the
        # decoded text; given nothing, it would encode the raw base64 a second time.
        await client.update_message(message, content=text, visibility_timeout=0)
