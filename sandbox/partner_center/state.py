"""Everything one emulator instance holds: referrals, webhook registration, faults and counters."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, deque
from typing import Any

from sandbox.kit.faults import Faults

from .store import Change, ReferralStore
from .webhooks import TestEventRecord, WebhookDispatcher

API_PREFIX = "/v1.0/engagements"
WEBHOOK_PREFIX = "/webhooks/v1"
# The documented ResourceUri of referral events (§4.3) differs from the API path; the emulator
# mirrors that shape on its own host.
EVENT_RESOURCE_PREFIX = "/engagements/v1/referrals"
CERTIFICATE_PATH = "/_emulator/certificates/signing.cer"


class EmulatorState:
    def __init__(
        self,
        *,
        token: str | None,
        store: ReferralStore,
        dispatcher: WebhookDispatcher,
        page_size: int,
        public_url: str | None,
        test_events_per_minute: int,
        create_status: int,
        rng: random.Random,
        strict_patch_paths: bool = False,
    ) -> None:
        self.token = token
        self.store = store
        self.dispatcher = dispatcher
        self.page_size = page_size
        self.public_url = public_url.rstrip("/") if public_url else None
        self.base_url = public_url.rstrip("/") if public_url else "http://127.0.0.1"
        self.test_events_per_minute = test_events_per_minute
        self.create_status = create_status
        self.rng = rng
        # Refuse JSON Patch paths the connector does not list (``rules.PARTNER_PATCH_PATHS``).
        self.strict_patch_paths = strict_patch_paths
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self._test_event_times: deque[float] = deque()
        store.listeners.append(self._on_change)

    def reset(self) -> None:
        self.store.reset()
        self.dispatcher.reset()
        self.requests.clear()
        self._test_event_times.clear()

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self.dispatcher.drop_rate = faults.drop_webhook_rate

    def remember_base_url(self, url: str) -> None:
        if self.public_url is None:
            self.base_url = url.rstrip("/")

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def certificate_url(self) -> str:
        return self.base_url + CERTIFICATE_PATH

    def render(self, referral: dict[str, Any]) -> dict[str, Any]:
        """The referral as the API shows it, with its links (§2.1)."""
        shown = dict(referral)
        shown["links"] = {
            "relatedReferrals": {
                # Real payloads write the GUID unquoted in this filter (§1.1).
                "uri": f"{self.api_url}/referrals"
                f"?$filter=engagementId eq {referral['engagementId']}",
                "method": "GET",
            },
            "self": {"uri": f"{self.api_url}/referrals/{referral['id']}", "method": "GET"},
        }
        return shown

    def allow_test_event(self) -> bool:
        """Partner Center allows 2 test events per minute (§4.1)."""
        now = time.monotonic()
        while self._test_event_times and now - self._test_event_times[0] > 60:
            self._test_event_times.popleft()
        if len(self._test_event_times) >= self.test_events_per_minute:
            return False
        self._test_event_times.append(now)
        return True

    def send_test_event(self) -> TestEventRecord:
        registration = self.dispatcher.current()
        correlation_id = str(uuid.uuid4())
        record = TestEventRecord(correlation_id, registration.webhook_url)
        self.dispatcher.test_events[correlation_id] = record
        self.dispatcher.publish(
            "test-created",
            f"{self.base_url}{WEBHOOK_PREFIX}/registration/validationEvents/{correlation_id}",
            certificate_url=self.certificate_url,
            resource_name="test",
            record=record,
        )
        return record

    def _on_change(self, change: Change) -> None:
        prefix = "related-referral" if change.side == "microsoft" else "referral"
        self.dispatcher.publish(
            f"{prefix}-{change.kind}",
            f"{self.base_url}{EVENT_RESOURCE_PREFIX}/{change.referral['id']}",
            certificate_url=self.certificate_url,
            changed_at=change.referral.get("updatedDateTime"),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "referrals": len(self.store),
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "webhooks": {
                **self.dispatcher.stats.as_dict(),
                "pending": self.dispatcher.pending,
                "registered": self.dispatcher.registration is not None,
            },
            "faults": self.faults.as_dict(),
        }
