"""host.json: the parts the local host honours, with the Azure host's defaults (reference §2)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONNECTION = "AzureWebJobsStorage"
# The host keeps a dequeued message invisible while the function runs and renews the lease at
# half-time, so a crashed host lets the message come back (§2.1 "visibility timeout").
DEFAULT_LEASE_S = 600.0
MIN_POLLING_INTERVAL_S = 0.1  # QueuePollingIntervals.Minimum (§2.1)
MAX_QUEUE_NAME = 63
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def parse_timespan(text: str) -> float:
    """``[d.]hh:mm:ss[.fff]`` (the .NET TimeSpan form host.json uses) → seconds."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise ValueError(f"expected a time span like '00:00:30', got {text!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the Storage extension's defaults (§2.1)."""

    batch_size: int = 16
    new_batch_threshold: int | None = None  # None: the host's (batchSize / 2) * processors
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def threshold(self) -> int:
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return (self.batch_size // 2) * (os.cpu_count() or 1)


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json this host honours."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostConfig:
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        queues = extensions.get("queues") or {}
        defaults = QueueOptions()
        options = QueueOptions(
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=(
                int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None
            ),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=max(
                MIN_POLLING_INTERVAL_S,
                parse_timespan(queues.get("maxPollingInterval", "00:01:00")),
            ),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )
        if not 1 <= options.batch_size <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be 1-32")
        if options.max_dequeue_count < 1:
            raise ValueError("host.json extensions.queues.maxDequeueCount must be at least 1")
        if options.message_encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        timeout = data.get("functionTimeout")
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            queues=options,
            function_timeout=parse_timespan(timeout) if timeout and timeout != "-1" else None,
        )

    @classmethod
    def load(cls, path: Path | None) -> HostConfig:
        if path is None or not path.exists():
            return cls()
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
