"""The ``sync-jobs`` queue: the message model (SPEC section 3), enqueueing and decoding.

Messages are JSON, base64-encoded on the wire because that is what the Functions host's queue
trigger expects by default (host.json ``messageEncoding: base64``); the host decodes the base64
before our function sees the body, so ``decode_job`` takes the decoded text.

A job may carry the W3C ``traceparent`` of the span that enqueued it (SPEC 3, optional): the
webhook's, the poll's or the reconcile's trace then goes on in the worker. ``JobQueue.enqueue``
stamps it; messages without it (older ones, the CLI's outside a trace) decode as before, and a
malformed one is dropped rather than poisoning the job, since it is only for correlation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    field_validator,
)

from shared.errors import JobDecodeError
from shared.telemetry import current_traceparent, valid_traceparent

SYNC_JOBS_QUEUE = "sync-jobs"
POISON_QUEUE = f"{SYNC_JOBS_QUEUE}-poison"  # the host's `<queue>-poison` convention
MAX_MESSAGE_CHARS = 48 * 1024  # Queue messages are capped at 64 KiB; base64 adds a third

JobKind = Literal["referral", "opportunity"]
JobSource = Literal["poll", "reconcile", "manual", "backfill", "webhook"]
_SOURCES: tuple[JobSource, ...] = ("poll", "reconcile", "manual", "backfill", "webhook")
_EVENT = re.compile(r"^[a-z][a-z-]{0,63}$")
# Periodic and operator jobs: nothing tells them what changed, so they look further.
_SWEEPS = frozenset({"reconcile", "manual", "backfill"})


@dataclass(frozen=True, eq=False)
class JobReason:
    """Why a job exists: its source, and for a webhook the event name (SPEC 3).

    On the wire it is one string (``poll``, ``webhook:referral-updated``); in code its parts
    are fields, so nobody parses a prefix. It equals its wire text too (``reason == "poll"``).
    """

    source: JobSource
    event: str | None = None

    @classmethod
    def parse(cls, text: str) -> JobReason:
        source, _, event = text.partition(":")
        if (
            source not in _SOURCES
            or bool(event) != (source == "webhook")
            or (event and not _EVENT.match(event))
        ):
            raise ValueError(
                "expected poll, reconcile, manual, backfill or webhook:<event-name> "
                "(e.g. webhook:referral-updated)"
            )
        return cls(source, event or None)

    @property
    def sweep(self) -> bool:
        """A reconcile, backfill or manual job: it checks everything, not one known change."""
        return self.source in _SWEEPS

    @property
    def related_event(self) -> bool:
        """A Partner Center event about the other referral of an engagement (Microsoft's)."""
        return self.event is not None and self.event.startswith("related-")

    def __str__(self) -> str:
        return f"{self.source}:{self.event}" if self.event else self.source

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JobReason | str):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


def _reason(value: object) -> object:
    return JobReason.parse(value) if isinstance(value, str) else value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone (UTC, e.g. 2026-11-27T10:00:00Z)")
    return value.astimezone(UTC)


class SyncJob(BaseModel):
    """One unit of work: sync the pair that this referral or opportunity belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKind
    id: UUID
    reason: Annotated[JobReason, BeforeValidator(_reason), PlainSerializer(str)]
    observed_at: Annotated[datetime, AfterValidator(_utc)]
    traceparent: Annotated[str | None, BeforeValidator(valid_traceparent)] = None

    @field_validator("id", mode="before")
    @classmethod
    def _guid_text(cls, value: object) -> object:
        # Accept GUIDs in any case and with braces, as Dataverse and Partner Center print them.
        return value.strip("{}") if isinstance(value, str) else value

    @classmethod
    def now(cls, kind: JobKind, id: UUID | str, *, reason: str | JobReason) -> SyncJob:
        """A job observed at this moment."""
        return cls.model_validate(
            {"kind": kind, "id": id, "reason": reason, "observed_at": datetime.now(UTC)}
        )

    def to_json(self) -> str:
        """The wire form: compact JSON with the id in lower case and the time in ISO-8601 Z."""
        return json.dumps(
            {
                "kind": self.kind,
                "id": str(self.id),
                "reason": str(self.reason),
                "observed_at": self.observed_at.isoformat().replace("+00:00", "Z"),
                **({"traceparent": self.traceparent} if self.traceparent else {}),
            },
            separators=(",", ":"),
        )

    def traced(self) -> SyncJob:
        """This job carrying the current span's ``traceparent`` (itself when none is current)."""
        traceparent = current_traceparent()
        if traceparent is None or traceparent == self.traceparent:
            return self
        return self.model_copy(update={"traceparent": traceparent})


def decode_job(body: str | bytes) -> SyncJob:
    """Parse a message body as the host hands it over; raise ``JobDecodeError`` with the reason."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise JobDecodeError("body is not UTF-8 text") from None
    if len(body) > MAX_MESSAGE_CHARS:
        raise JobDecodeError(f"body is {len(body)} characters, more than {MAX_MESSAGE_CHARS}")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise JobDecodeError(f"body is not JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(data, dict):
        raise JobDecodeError(f"body is a JSON {type(data).__name__}, expected an object")
    try:
        return SyncJob.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise JobDecodeError("; ".join(problems)) from None


class JobQueue:
    """Enqueues sync jobs; one instance per queue, an async context manager owning its client."""

    def __init__(self, client: QueueClient, *, max_concurrency: int = 16) -> None:
        self._client = client
        self._limit = asyncio.Semaphore(max_concurrency)

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def create_queue(self) -> None:
        """Create the queue if it does not exist (idempotent)."""
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_queue()

    async def enqueue(self, job: SyncJob, *, visibility_timeout: int | None = None) -> None:
        """Add one job; ``visibility_timeout`` (seconds) delays it. It carries the current
        span's ``traceparent``, so the worker continues the trace that enqueued it."""
        async with self._limit:
            await self._client.send_message(
                job.traced().to_json(), visibility_timeout=visibility_timeout
            )

    async def enqueue_many(self, jobs: Iterable[SyncJob]) -> int:
        """Add many jobs concurrently (the Queue API has no batch send); returns how many.

        The same (kind, id) twice in one call is sent once: the engine reads current state,
        so a second job for the same record would only repeat the first one's work.
        """
        unique: dict[tuple[str, UUID], SyncJob] = {}
        for job in jobs:
            unique.setdefault((job.kind, job.id), job)
        await asyncio.gather(*(self.enqueue(job) for job in unique.values()))
        return len(unique)

    async def peek_first(self) -> str | None:
        """The text of the oldest waiting message without taking it (None if empty)."""
        try:
            messages = await self._client.peek_messages(max_messages=1)
        except ResourceNotFoundError:
            return None
        return str(messages[0].content) if messages else None

    async def get_depth(self) -> int:
        """Approximate number of messages waiting (0 if the queue does not exist yet)."""
        try:
            properties = await self._client.get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(properties.approximate_message_count or 0)
