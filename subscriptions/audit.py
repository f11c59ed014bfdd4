"""What editors see about readers: search, one reader's record, and the per-reader audit.

The audit answers "what did we send this reader, and why not that post?". It reads the reader's
own rows in a few queries (deliveries with their digests, posts and events; the recent posts; the
reader's subscriptions and suppression) and explains each recent post in Python, following the
planner's rules (worker/digests/planner.py): only published, notifying, released posts are mailed;
only to active readers who are not paused when the digest is planned; an immediate alert once per
post to readers with an immediate subscription to one of its topics; a daily or weekly digest per
period with the posts of the reader's topics at that frequency released in their window, minus what
reached them another way (a failed or suppressed delivery does not count as having reached them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.errors import NotFound
from subscriptions.ledger_archive import archived_emails
from subscriptions.models import (
    Consent,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    Event,
    Frequency,
    Post,
    PostStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    delivery_posts,
    post_topics,
)
from subscriptions.readers import email_hash

#: Delivery states that reached (or will reach) the reader.
ON_ITS_WAY = (DeliveryStatus.PENDING, DeliveryStatus.CLAIMED, DeliveryStatus.SENT)

#: Why a post did not reach a reader: code → sentence for editors.
REASONS = {
    "held": "held: not released for mailing",
    "backlog": "part of a new feed's backlog: recorded, never mailed",
    "suppressed": "the address is suppressed",
    "unsubscribed": "unsubscribed at the time",
    "not_confirmed": "not yet confirmed at the time",
    "not_subscribed": "not subscribed to its topics",
    "paused": "paused at the time",
    "subscribed_later": "subscribed later: to its topics only after it was released",
    "failed": "planned, but the email failed",
    "waiting": "waiting for the reader's next digest",
    "not_planned": "no email planned for it (no rule above explains why)",
}


# ------------------------------------------------------------------------------------------ search


@dataclass(frozen=True, slots=True)
class ReaderRow:
    id: int
    email: str
    status: str
    timezone: str
    created_at: datetime
    topics: int
    #: None: the first of NEWSLETTER_LANGUAGES.
    language: str | None = None


def search_readers(
    *,
    session: Session,
    query: str = "",
    status: SubscriberStatus | None = None,
    topic: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ReaderRow], int]:
    """Readers whose address contains `query` (any case), newest first, and how many match."""
    where = []
    if query.strip():
        where.append(func.lower(Subscriber.email).contains(query.strip().lower(), autoescape=True))
    if status is not None:
        where.append(Subscriber.status == status)
    if topic:
        where.append(
            select(Subscription.id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == Subscriber.id, Topic.slug == topic)
            .exists()
        )
    total = session.scalar(select(func.count()).select_from(Subscriber).where(*where)) or 0
    topics = (
        select(func.count()).where(Subscription.subscriber_id == Subscriber.id).scalar_subquery()
    )
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.status,
            Subscriber.timezone,
            Subscriber.created_at,
            topics,
            Subscriber.language,
        )
        .where(*where)
        .order_by(Subscriber.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [ReaderRow(i, e, s.value, tz, c, int(n), lang) for i, e, s, tz, c, n, lang in rows], int(
        total
    )


# ------------------------------------------------------------------------------------------ detail


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    topic: str
    name: str
    frequency: str
    since: datetime


@dataclass(frozen=True, slots=True)
class ConsentInfo:
    at: datetime
    source: str
    ip: str | None
    topics: list[str]
    frequency: str
    timezone: str
    wording: str
    confirmed_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReaderDetail:
    id: int
    email: str
    status: str
    timezone: str
    paused_until: datetime | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    suppression: str | None
    subscriptions: list[SubscriptionInfo]
    consents: list[ConsentInfo]
    #: None: the first of NEWSLETTER_LANGUAGES.
    language: str | None = None


def reader_detail(*, session: Session, subscriber_id: int) -> ReaderDetail:
    """One reader: status, zone, pause, subscriptions with frequencies, consent records."""
    reader = session.get(Subscriber, subscriber_id)
    if reader is None:
        raise NotFound("no such reader")
    subs = session.execute(
        select(Topic.slug, Topic.name, Subscription.frequency, Subscription.created_at)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.subscriber_id == subscriber_id)
        .order_by(Topic.slug)
    ).all()
    consents = session.scalars(
        select(Consent).where(Consent.subscriber_id == subscriber_id).order_by(Consent.id.desc())
    ).all()
    suppression = session.execute(
        select(Suppression.reason, Suppression.created_at).where(
            Suppression.email_hash == email_hash(reader.email)
        )
    ).first()
    return ReaderDetail(
        id=reader.id,
        email=reader.email,
        status=reader.status.value,
        timezone=reader.timezone,
        language=reader.language,
        paused_until=reader.paused_until,
        created_at=reader.created_at,
        confirmed_at=reader.confirmed_at,
        unsubscribed_at=reader.unsubscribed_at,
        suppression=(
            f"{suppression[0]} since {suppression[1]:%Y-%m-%d}" if suppression is not None else None
        ),
        subscriptions=[SubscriptionInfo(s, n, f.value, c) for s, n, f, c in subs],
        consents=[
            ConsentInfo(
                c.created_at,
                c.source,
                c.ip,
                list(c.topics),
                c.frequency.value,
                c.timezone,
                c.wording,
                c.confirmed_at,
            )
            for c in consents
        ],
    )


# ------------------------------------------------------------------------------------------ audit


@dataclass(frozen=True, slots=True)
class EventInfo:
    type: str
    occurred_at: datetime
    detail: str


@dataclass(frozen=True, slots=True)
class EmailInfo:
    """One email planned for the reader: a delivery and its digest."""

    delivery_id: int
    digest_id: int
    kind: str
    run_key: str | None
    subject: str
    status: str
    attempts: int
    planned_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None
    last_error: str
    post_ids: list[int]
    events: list[EventInfo] = field(default_factory=list)
    #: Read from the ledger's archive (the digest's rows were moved by `ledger archive`).
    archived: bool = False


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What became of one post for the reader: `delivery_ids` carried it; `reason` when not."""

    post_id: int
    title: str
    topics: list[str]
    released_at: datetime | None
    outcome: str  # "sent", "planned" or "not sent"
    delivery_ids: list[int]
    reason: str | None
    explanation: str


@dataclass(frozen=True, slots=True)
class ReaderAudit:
    reader_id: int
    email: str
    emails: list[EmailInfo]
    posts: list[PostOutcome]
    #: Provider events about the address that name no delivery.
    events: list[EventInfo]


def audit_reader(
    *,
    session: Session,
    subscriber_id: int,
    posts: int = 100,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ReaderAudit:
    """Every email planned for the reader, and each of the recent posts (the last `posts`, or
    those created between `since` and `until`) with what became of it and, when it was not
    mailed, why."""
    reader = session.get(Subscriber, subscriber_id)
    if reader is None:
        raise NotFound("no such reader")
    key = email_hash(reader.email)

    rows = session.execute(
        select(
            Delivery.id,
            Delivery.digest_id,
            Digest.kind,
            Digest.run_key,
            Digest.subject,
            Delivery.status,
            Delivery.attempts,
            Delivery.created_at,
            Delivery.sent_at,
            Delivery.provider_message_id,
            Delivery.last_error,
        )
        .join(Digest, Digest.id == Delivery.digest_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.id.desc())
    ).all()
    carried: dict[int, list[int]] = {}
    for delivery_id, post_id in session.execute(
        select(delivery_posts.c.delivery_id, delivery_posts.c.post_id)
        .join(Delivery, Delivery.id == delivery_posts.c.delivery_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(delivery_posts.c.post_id)
    ):
        carried.setdefault(delivery_id, []).append(post_id)
    # Copies of digests whose ledger was archived (subscriptions/ledger_archive.py): the events
    # that named them lost their delivery_id with the row; the archive lists them by event id.
    archived = archived_emails(session=session, subscriber_id=subscriber_id)
    archived_digests = {
        d.id: d
        for d in session.scalars(
            select(Digest).where(Digest.id.in_({a.digest_id for a in archived}))
        )
    }
    named = {event_id: a.delivery_id for a in archived for event_id in a.event_ids}
    by_delivery: dict[int | None, list[EventInfo]] = {}
    for event_id, delivery_id, type_, at, detail in session.execute(
        select(Event.id, Event.delivery_id, Event.type, Event.occurred_at, Event.detail)
        .where(Event.email_hash == key)
        .order_by(Event.occurred_at)
    ):
        if delivery_id is None:
            delivery_id = named.get(event_id)
        by_delivery.setdefault(delivery_id, []).append(EventInfo(type_, at, detail))
    emails = [
        EmailInfo(
            r.id,
            r.digest_id,
            r.kind.value,
            r.run_key,
            r.subject,
            r.status.value,
            r.attempts,
            r.created_at,
            r.sent_at,
            r.provider_message_id,
            r.last_error,
            carried.get(r.id, []),
            by_delivery.pop(r.id, []),
        )
        for r in rows
    ]
    emails += [
        EmailInfo(
            a.delivery_id,
            a.digest_id,
            archived_digests[a.digest_id].kind.value,
            archived_digests[a.digest_id].run_key,
            archived_digests[a.digest_id].subject,
            a.status,
            a.attempts,
            a.planned_at,
            a.sent_at,
            a.provider_message_id,
            a.last_error,
            a.post_ids,
            by_delivery.pop(a.delivery_id, []),
            archived=True,
        )
        for a in archived
        if a.digest_id in archived_digests
    ]
    emails.sort(key=lambda e: e.delivery_id, reverse=True)
    stray = [e for events in by_delivery.values() for e in events]

    recent = select(Post.id).order_by(Post.created_at.desc(), Post.id.desc())
    if since is not None:
        recent = recent.where(Post.created_at >= since)
    if until is not None:
        recent = recent.where(Post.created_at < until)
    post_rows = session.execute(
        select(Post.id, Post.title, Post.status, Post.notify, Post.released_at)
        .where(Post.id.in_(recent.limit(posts).scalar_subquery()))
        .order_by(Post.created_at.desc(), Post.id.desc())
    ).all()
    post_slugs: dict[int, list[str]] = {}
    for post_id, slug in session.execute(
        select(post_topics.c.post_id, Topic.slug)
        .join(Topic, Topic.id == post_topics.c.topic_id)
        .where(post_topics.c.post_id.in_([p.id for p in post_rows]))
        .order_by(Topic.slug)
    ):
        post_slugs.setdefault(post_id, []).append(slug)
    subs = {
        slug: (frequency, created)
        for slug, frequency, created in session.execute(
            select(Topic.slug, Subscription.frequency, Subscription.created_at)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == subscriber_id)
        )
    }
    suppressed_at = session.scalar(
        select(Suppression.created_at).where(Suppression.email_hash == key)
    )
    context = _Reader(reader, subs, suppressed_at, emails)
    outcomes = [
        _explain(
            context, p.id, p.title, p.status, p.notify, p.released_at, post_slugs.get(p.id, [])
        )
        for p in post_rows
    ]
    return ReaderAudit(reader.id, reader.email, emails, outcomes, stray)


@dataclass
class _Reader:
    row: Subscriber
    subs: dict[str, tuple[Frequency, datetime]]
    suppressed_at: datetime | None
    emails: list[EmailInfo]
    by_post: dict[int, list[EmailInfo]] = field(default_factory=dict)
    last_planned: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for email in self.emails:
            for post_id in email.post_ids:
                self.by_post.setdefault(post_id, []).append(email)
            latest = self.last_planned.get(email.kind)
            if latest is None or email.planned_at > latest:
                self.last_planned[email.kind] = email.planned_at


def _explain(
    reader: _Reader,
    post_id: int,
    title: str,
    status: PostStatus,
    notify: bool,
    released: datetime | None,
    slugs: list[str],
) -> PostOutcome:
    """One post's fate for the reader, the first rule that applies winning."""
    carrying = reader.by_post.get(post_id, [])
    ids = [e.delivery_id for e in carrying]

    def out(outcome: str, reason: str | None, note: str = "") -> PostOutcome:
        text = REASONS[reason] if reason else note
        if reason and note:
            text = f"{text} ({note})"
        return PostOutcome(post_id, title, slugs, released, outcome, ids, reason, text)

    reached = [e for e in carrying if e.status in {s.value for s in ON_ITS_WAY}]
    if reached:
        email = reached[0]
        outcome = "sent" if email.status == DeliveryStatus.SENT.value else "planned"
        note = f"in the {email.kind} email {email.run_key or email.subject}".strip()
        digest_topics = [
            s for s in slugs if s in reader.subs and reader.subs[s][0] is not Frequency.IMMEDIATE
        ]
        if email.kind == DigestKind.IMMEDIATE.value and digest_topics:
            note += "; not repeated in a digest: sent already as an alert"
        return out(outcome, None, note)
    if carrying:
        failed = carrying[0]
        if failed.status == DeliveryStatus.SUPPRESSED.value:
            return out("not sent", "suppressed", "when its email was sent")
        return out("not sent", "failed", f"{failed.status}: {failed.last_error}".rstrip(": "))
    if status is PostStatus.HELD or released is None:
        return out("not sent", "held")
    if not notify:
        return out("not sent", "backlog")
    row = reader.row
    if reader.suppressed_at is not None or row.status is SubscriberStatus.SUPPRESSED:
        since = f"since {reader.suppressed_at:%Y-%m-%d}" if reader.suppressed_at else ""
        return out("not sent", "suppressed", since)
    if row.status is SubscriberStatus.UNSUBSCRIBED:
        when = row.unsubscribed_at
        return out("not sent", "unsubscribed", f"on {when:%Y-%m-%d %H:%M}" if when else "")
    if row.status is SubscriberStatus.PENDING or (
        row.confirmed_at is not None and row.confirmed_at > released
    ):
        return out("not sent", "not_confirmed")
    mine = [reader.subs[s] for s in slugs if s in reader.subs]
    if not mine:
        return out("not sent", "not_subscribed")
    if row.paused_until is not None and row.paused_until > released:
        return out("not sent", "paused", f"until {row.paused_until:%Y-%m-%d %H:%M}")
    if all(created >= released for _, created in mine):
        # The planner's rule (worker/digests/planner.py): new readers get new posts only.
        return out("not sent", "subscribed_later")
    digests = {f.value for f, _ in mine if f is not Frequency.IMMEDIATE}
    if any(
        reader.last_planned.get(kind) is None or released > reader.last_planned[kind]
        for kind in digests
    ):
        return out("not sent", "waiting", " or ".join(sorted(digests)))
    return out("not sent", "not_planned")
