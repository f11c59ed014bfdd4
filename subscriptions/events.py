"""Provider events: stored once each, linked to their delivery, and applied at once.

Hard bounces, complaints and provider unsubscribes suppress the address across every topic; soft
bounces are counted and suppress it after a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput
from subscriptions.models import Delivery, Event, Subscriber, utcnow
from subscriptions.readers import email_hash, normalize_email, suppress

#: Soft bounces within SOFT_BOUNCE_WINDOW that suppress an address.
SOFT_BOUNCE_THRESHOLD = 3
SOFT_BOUNCE_WINDOW = timedelta(days=30)
SUPPRESSING = {
    "bounced": "hard_bounce",
    "complained": "complaint",
    "unsubscribed": "provider_unsubscribe",
}


@dataclass(frozen=True, slots=True)
class EventOutcome:
    stored: bool  # False: a replay of an event already stored
    suppressed: bool


def record_event(
    *,
    session: Session,
    provider: str,
    event_id: str,
    type: str,
    email: str,
    occurred_at: datetime,
    provider_message_id: str | None = None,
    delivery_id: int | None = None,
    detail: str = "",
    payload: dict[str, Any] | None = None,
) -> EventOutcome:
    """Store one normalized event (once: replays are recognised by provider and event id) and apply it."""
    try:
        address = normalize_email(email)
    except InvalidInput:
        address = email.strip().lower()
    key = email_hash(address)
    if session.scalar(
        select(Event.id).where(Event.provider == provider, Event.provider_event_id == event_id)
    ):
        return EventOutcome(False, False)
    linked = _delivery(session, delivery_id, provider_message_id, address)
    try:
        with session.begin_nested():
            session.add(
                Event(
                    provider=provider,
                    provider_event_id=event_id[:400],
                    type=type,
                    email_hash=key,
                    delivery_id=linked,
                    detail=detail[:2000],
                    occurred_at=occurred_at,
                    payload=payload or {},
                )
            )
    except IntegrityError:  # the same event, stored by a concurrent call a moment ago
        return EventOutcome(False, False)
    suppressed = False
    if type in SUPPRESSING:
        suppressed = suppress(
            session=session, email=address, reason=SUPPRESSING[type], detail=f"{provider}: {detail}"
        )
    elif type == "soft_bounced":
        recent = session.scalar(
            select(func.count(Event.id)).where(
                Event.email_hash == key,
                Event.type == "soft_bounced",
                Event.occurred_at > utcnow() - SOFT_BOUNCE_WINDOW,
            )
        )
        if (recent or 0) >= SOFT_BOUNCE_THRESHOLD:
            suppressed = suppress(
                session=session,
                email=address,
                reason="soft_bounces",
                detail=f"{recent} soft bounces in {SOFT_BOUNCE_WINDOW.days} days",
            )
    return EventOutcome(True, suppressed)


def _delivery(
    session: Session, delivery_id: int | None, provider_message_id: str | None, address: str
) -> int | None:
    if delivery_id is not None and session.get(Delivery, delivery_id) is not None:
        return delivery_id
    if provider_message_id:
        # Some providers give one message id to a whole request: match the reader too.
        return session.scalar(
            select(Delivery.id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.provider_message_id == provider_message_id, Subscriber.email == address)
            .limit(1)
        )
    return None
