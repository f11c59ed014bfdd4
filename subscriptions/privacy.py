"""A reader's rights: download everything we hold about them, and erasure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import NotFound
from subscriptions.ledger_archive import archived_emails, forget_reader
from subscriptions.models import (
    Consent,
    Delivery,
    Digest,
    DigestKind,
    Subscriber,
    Subscription,
    Topic,
)
from subscriptions.readers import suppress


def export_reader(*, session: Session, subscriber_id: int) -> dict[str, Any]:
    """Everything held about one reader, as JSON-ready data."""
    reader = session.get(Subscriber, subscriber_id)
    if reader is None:
        raise NotFound("no such reader")
    subscriptions = session.execute(
        select(Topic.slug, Topic.name, Subscription.frequency, Subscription.created_at)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(Topic.slug)
    ).all()
    slugs = dict(session.execute(select(Topic.id, Topic.slug)).all())
    consents = session.scalars(
        select(Consent).where(Consent.subscriber_id == subscriber_id).order_by(Consent.id)
    )
    ledger = session.execute(
        select(Digest.kind, Digest.subject, Delivery.status, Delivery.sent_at, Delivery.created_at)
        .join(Digest, Digest.id == Delivery.digest_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.id)
    ).all()
    archived = archived_emails(session=session, subscriber_id=subscriber_id)
    digests = {
        d.id: d
        for d in session.scalars(
            select(Digest).where(Digest.id.in_({a.digest_id for a in archived}))
        )
    }
    sent: list[tuple[DigestKind, str, str, datetime | None, datetime]] = sorted(
        [
            *(
                (kind, subject, status.value, sent_at, at)
                for kind, subject, status, sent_at, at in ledger
            ),
            *(
                (
                    digests[a.digest_id].kind,
                    digests[a.digest_id].subject,
                    a.status,
                    a.sent_at,
                    a.planned_at,
                )
                for a in archived
                if a.digest_id in digests
            ),
        ],
        key=lambda row: row[4],
    )
    return {
        "reader": {
            "email": reader.email,
            "status": reader.status.value,
            "timezone": reader.timezone,
            "language": reader.language,
            "paused_until": _iso(reader.paused_until),
            "created_at": _iso(reader.created_at),
            "confirmed_at": _iso(reader.confirmed_at),
            "unsubscribed_at": _iso(reader.unsubscribed_at),
            # Kept for the 30-day undo of the last unsubscribe.
            "left_subscriptions": [
                {"topic": slugs.get(int(topic_id), str(topic_id)), "frequency": frequency}
                for topic_id, frequency in reader.left_subscriptions or []
            ],
        },
        "subscriptions": [
            {"topic": slug, "name": name, "frequency": freq.value, "since": _iso(since)}
            for slug, name, freq, since in subscriptions
        ],
        "consents": [
            {
                "at": _iso(c.created_at),
                "ip": c.ip,
                "source": c.source,
                "user_agent": c.user_agent,
                "topics": c.topics,
                "frequency": c.frequency.value,
                "wording": c.wording,
                "confirmed_at": _iso(c.confirmed_at),
            }
            for c in consents
        ],
        "emails": [
            {
                "kind": kind.value,
                "subject": subject,
                "status": status,
                "planned_at": _iso(created),
                "sent_at": _iso(sent_at),
            }
            for kind, subject, status, sent_at, created in sent
        ],
    }


def erase_reader(*, session: Session, subscriber_id: int) -> None:
    """Delete the reader and everything tied to them; only a hashed suppression entry stays
    (reason `erased`: no email by mistake, e.g. from an import; the person's own new sign-up lifts it)."""
    reader = session.get(Subscriber, subscriber_id)
    if reader is None:
        raise NotFound("no such reader")
    email = reader.email
    forget_reader(session=session, subscriber_id=subscriber_id)
    session.delete(reader)
    session.flush()
    suppress(session=session, email=email, reason="erased", detail="erased at the reader's request")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
