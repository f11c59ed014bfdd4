"""Provider webhooks, normalized: one event vocabulary, one request shape, one rejection.

Verification and parsing are pure and database-free, so the web app's webhook route may use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx


class EventType(StrEnum):
    """What a provider says happened to a message, in the same words for every provider."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"  # hard bounce: the address is bad for good
    SOFT_BOUNCED = "soft_bounced"  # temporary: counted, suppressed after a threshold
    COMPLAINED = "complained"  # marked as spam
    UNSUBSCRIBED = "unsubscribed"  # unsubscribed through the provider
    DEFERRED = "deferred"
    DROPPED = "dropped"  # the provider refused to send (e.g. on its own suppression list)
    OTHER = "other"  # opens, clicks and anything we do not act on


#: Events that put the address on the suppression list at once, across every topic.
SUPPRESSING = frozenset({EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED})


class WebhookRejected(Exception):
    """A webhook call that must change nothing: forged, stale or malformed. `status` is the 4xx to answer."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """The parts of an HTTP request a verifier may look at. Header names are lower-case."""

    headers: Mapping[str, str]
    body: bytes
    url: str = ""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """What verification needs: the provider's secret (its meaning is per provider), the time,
    the allowed clock skew, and for SNS a way to fetch a signing certificate (by default over
    `transport`, the HTTP transport of every call a provider makes while handling a webhook:
    None is the network, tests put an httpx.MockTransport here)."""

    secret: str | None
    now: float
    tolerance_seconds: int = 300
    fetch_certificate: Callable[[str], bytes] | None = None
    transport: httpx.BaseTransport | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One normalized event. `event_id` is stable across the provider's retries (for dedupe)."""

    provider: str
    event_id: str
    type: EventType
    email: str
    occurred_at: datetime
    provider_message_id: str | None = None
    delivery_id: int | None = None
    detail: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)
