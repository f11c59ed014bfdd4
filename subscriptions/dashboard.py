"""The console's dashboard figures, each one set-based query (no loop over readers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.ledger_archive import archived_counts, archived_events
from subscriptions.models import (
    Consent,
    Delivery,
    Digest,
    Event,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class TopicReaders:
    slug: str
    name: str
    by_frequency: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_frequency.values())


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    signups: int
    unsubscribes: int


@dataclass(frozen=True, slots=True)
class DigestRow:
    id: int
    kind: str
    status: str
    subject: str
    run_key: str | None
    created_at: object
    sent: int
    failed: int
    bounced: int
    complained: int
    unsubscribed: int


def readers_by_topic(*, session: Session) -> list[TopicReaders]:
    """Active readers of each live topic, by frequency."""
    rows = session.execute(
        select(Topic.slug, Topic.name, Subscription.frequency, func.count(Subscription.id))
        .join(Subscription, Subscription.topic_id == Topic.id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Topic.archived_at.is_(None), Subscriber.status == SubscriberStatus.ACTIVE)
        .group_by(Topic.slug, Topic.name, Subscription.frequency)
    ).all()
    topics = {
        slug: name
        for slug, name in session.execute(
            select(Topic.slug, Topic.name).where(Topic.archived_at.is_(None)).order_by(Topic.name)
        )
    }
    counts: dict[str, dict[str, int]] = {slug: {f.value: 0 for f in Frequency} for slug in topics}
    for slug, _, frequency, n in rows:
        counts[slug][frequency.value] = int(n)
    return [TopicReaders(slug, name, counts[slug]) for slug, name in topics.items()]


def daily_activity(*, session: Session, days: int = 30) -> list[Day]:
    """Sign-ups (consents given) and unsubscribes per UTC day, the last `days` days."""
    since = utcnow() - timedelta(days=days - 1)
    start = since.date()
    since = since.replace(hour=0, minute=0, second=0, microsecond=0)
    signups: dict[object, object] = dict(
        session.execute(
            select(func.date(Consent.created_at), func.count(Consent.id))
            .where(Consent.created_at >= since)
            .group_by(func.date(Consent.created_at))
        ).all()
    )
    gone: dict[object, object] = dict(
        session.execute(
            select(func.date(Subscriber.unsubscribed_at), func.count(Subscriber.id))
            .where(Subscriber.unsubscribed_at >= since)
            .group_by(func.date(Subscriber.unsubscribed_at))
        ).all()
    )

    def count(table: dict[object, object], day: date) -> int:
        # SQLite gives 'YYYY-MM-DD' strings, PostgreSQL dates.
        value = table.get(day, table.get(day.isoformat(), 0))
        return int(value) if isinstance(value, int) else 0

    return [
        Day(d, count(signups, d), count(gone, d))
        for d in (start + timedelta(days=n) for n in range(days))
    ]


def recent_digests(*, session: Session, limit: int = 10) -> list[DigestRow]:
    """The latest digests with what happened to their emails."""
    digests = session.scalars(select(Digest).order_by(Digest.id.desc()).limit(limit)).all()
    ids = [d.id for d in digests]
    statuses: dict[int, dict[str, int]] = {i: {} for i in ids}
    for digest_id, status, n in session.execute(
        select(Delivery.digest_id, Delivery.status, func.count(Delivery.id))
        .where(Delivery.digest_id.in_(ids))
        .group_by(Delivery.digest_id, Delivery.status)
    ):
        statuses[digest_id][status.value] = int(n)
    events: dict[int, dict[str, int]] = {i: {} for i in ids}
    for digest_id, kind, n in session.execute(
        select(Delivery.digest_id, Event.type, func.count(Event.id))
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(Delivery.digest_id.in_(ids))
        .group_by(Delivery.digest_id, Event.type)
    ):
        events[digest_id][kind] = int(n)
    # Digests whose ledger was archived (subscriptions/ledger_archive.py) keep their counts there.
    for digest_id, moved in archived_counts(session=session, digest_ids=ids).items():
        for name, n in moved.items():
            statuses[digest_id][name] = statuses[digest_id].get(name, 0) + n
        for kind, n in archived_events(session=session, digest_id=digest_id).items():
            events[digest_id][kind] = events[digest_id].get(kind, 0) + n
    return [
        DigestRow(
            id=d.id,
            kind=d.kind.value,
            status=d.status.value,
            subject=d.subject,
            run_key=d.run_key,
            created_at=d.created_at,
            sent=statuses[d.id].get("sent", 0),
            failed=statuses[d.id].get("failed", 0),
            bounced=events[d.id].get("bounced", 0) + events[d.id].get("soft_bounced", 0),
            complained=events[d.id].get("complained", 0),
            unsubscribed=events[d.id].get("unsubscribed", 0),
        )
        for d in digests
    ]


def reader_totals(*, session: Session) -> dict[str, int]:
    """Readers by status."""
    rows = session.execute(
        select(Subscriber.status, func.count(Subscriber.id)).group_by(Subscriber.status)
    ).all()
    totals = {s.value: 0 for s in SubscriberStatus}
    totals.update({status.value: int(n) for status, n in rows})
    return totals
