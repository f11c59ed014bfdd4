"""Plan deliveries in SQL set operations: one statement per time zone, never a loop over readers.

Every planned email is a Delivery row (unique per digest and reader) with the posts it carries in
delivery_posts, written in one transaction: a crash leaves either a whole plan or none, and a rerun or a
second planner adds only what is missing (the unique keys make "twice" impossible, not unlikely).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from subscriptions.db import lock_planning
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Frequency,
    Post,
    PostStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    delivery_posts,
    post_topics,
    utcnow,
)
from worker.digests.schedule import Period, latest_daily, latest_weekly

#: Deliveries in these states did not (and will not) reach the reader: their posts may go again.
NOT_DELIVERED = (DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED)


@dataclass(frozen=True, slots=True)
class PlanResult:
    digest_id: int
    planned: int


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def _digest_for(session: Session, kind: DigestKind, run_key: str, *, subject: str = "") -> int:
    """The digest row of a run, created once whoever asks first; locked for this transaction."""
    stmt = (
        _insert(session, Digest.__table__)
        .values(
            kind=kind.value,
            run_key=run_key,
            status=DigestStatus.PLANNING.value,
            subject=subject,
            intro_markdown="",
            options={},
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    session.execute(stmt)
    digest_id = session.scalar(
        select(Digest.id).where(Digest.kind == kind, Digest.run_key == run_key).with_for_update()
    )
    assert digest_id is not None
    return digest_id


def _already_has(reader_id: Any, post_id: Any) -> ColumnElement[bool]:
    """The reader has (or will get) this post through some other delivery."""
    other = aliased(Delivery)
    return exists(
        select(literal(1))
        .select_from(delivery_posts.join(other, other.id == delivery_posts.c.delivery_id))
        .where(
            other.subscriber_id == reader_id,
            delivery_posts.c.post_id == post_id,
            other.status.not_in(NOT_DELIVERED),
        )
    )


def _mailable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now),
    )


def _released(start: datetime | None, end: datetime) -> ColumnElement[bool]:
    window = Post.released_at <= end
    if start is not None:
        window = and_(window, Post.released_at > start)
    return and_(Post.status == PostStatus.PUBLISHED, Post.notify.is_(True), window)


def _serialize(session: Session) -> None:
    # "Does the reader have this post yet?" must see every other planner's finished work, and
    # every post released before this planner started.
    lock_planning(session)


def _count(session: Session, digest_id: int) -> int:
    return int(
        session.scalar(select(func.count(Delivery.id)).where(Delivery.digest_id == digest_id)) or 0
    )


def _fill(session: Session, digest_id: int, now: datetime, pairs: Any) -> int:
    """Insert one delivery per reader in `pairs` (reader id, post id), then the posts of each new
    delivery; readers already planned for this digest are left alone. Returns deliveries added."""
    readers = pairs.with_only_columns(pairs.selected_columns[0]).distinct()
    # Counted, not read off rowcount: psycopg reports -1 for INSERT … SELECT … ON CONFLICT.
    before = _count(session, digest_id)
    session.execute(
        _insert(session, Delivery.__table__)
        .from_select(
            ["digest_id", "subscriber_id", "status", "attempts", "last_error", "created_at"],
            select(
                literal(digest_id),
                readers.subquery().c[0],
                literal(DeliveryStatus.PENDING.value),
                literal(0),
                literal(""),
                literal(now, type_=Delivery.created_at.type),
            ).where(true()),
        )
        .on_conflict_do_nothing()
    )
    added = _count(session, digest_id) - before
    fresh = select(Delivery.id, Delivery.subscriber_id).where(
        Delivery.digest_id == digest_id,
        ~exists(select(literal(1)).where(delivery_posts.c.delivery_id == Delivery.id)),
    )
    fresh_sq = fresh.subquery()
    pairs_sq = pairs.subquery()
    session.execute(
        _insert(session, delivery_posts)
        .from_select(
            ["delivery_id", "post_id"],
            select(fresh_sq.c.id, pairs_sq.c[1])
            .join(pairs_sq, pairs_sq.c[0] == fresh_sq.c.subscriber_id)
            .distinct(),
        )
        .on_conflict_do_nothing()
    )
    return added


def plan_post_alerts(
    session: Session, post_id: int, *, now: datetime | None = None
) -> PlanResult | None:
    """Immediate alerts for one post: every reader with an immediate subscription to any of its
    topics, once each, unless they have the post already. None when the post is not mailable."""
    now = now or utcnow()
    _serialize(session)
    post = session.get(Post, post_id)
    if (
        post is None
        or post.status is not PostStatus.PUBLISHED
        or not post.notify
        or post.released_at is None
    ):
        return None
    digest_id = _digest_for(session, DigestKind.IMMEDIATE, f"post:{post_id}", subject=post.title)
    pairs = (
        select(Subscriber.id, Post.id)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(post_topics, post_topics.c.topic_id == Subscription.topic_id)
        .join(Post, Post.id == post_topics.c.post_id)
        .where(
            Post.id == post_id,
            Subscription.frequency == Frequency.IMMEDIATE,
            _mailable(now),
            ~_already_has(Subscriber.id, Post.id),
        )
    )
    planned = _fill(session, digest_id, now, pairs)
    _mark_sending(session, digest_id)
    return PlanResult(digest_id, planned)


def plan_periodic(
    session: Session,
    kind: DigestKind,
    *,
    now: datetime | None = None,
    hour: int = 7,
    weekday: str = "monday",
) -> list[PlanResult]:
    """Daily or weekly digests for every time zone whose period has ended: one email per reader
    per period, with the new posts in all their topics of that frequency."""
    now = now or utcnow()
    _serialize(session)
    frequency = Frequency(kind.value)
    zones = session.scalars(
        select(Subscriber.timezone)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(Subscription.frequency == frequency, Subscriber.status == SubscriberStatus.ACTIVE)
        .distinct()
    ).all()
    results = []
    for zone in sorted(zones):
        period: Period = (
            latest_daily(now, zone, hour=hour)
            if kind is DigestKind.DAILY
            else latest_weekly(now, zone, hour=hour, weekday=weekday)
        )
        digest_id = _digest_for(session, kind, period.key)
        pairs = (
            select(Subscriber.id, Post.id)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(post_topics, post_topics.c.topic_id == Subscription.topic_id)
            .join(Post, Post.id == post_topics.c.post_id)
            .where(
                Subscriber.timezone == zone,
                Subscription.frequency == frequency,
                _mailable(now),
                _released(period.start, period.end),
                ~_already_has(Subscriber.id, Post.id),
            )
        )
        planned = _fill(session, digest_id, now, pairs)
        _mark_sending(session, digest_id)
        results.append(PlanResult(digest_id, planned))
    return results


def plan_editorial(session: Session, digest_id: int, *, now: datetime | None = None) -> PlanResult:
    """An editor's digest: the chosen posts to the chosen audience, as they were chosen."""
    now = now or utcnow()
    _serialize(session)
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise ValueError(f"digest {digest_id} is not an editorial digest")
    if digest.status in (DigestStatus.DRAFT, DigestStatus.CANCELLED):
        return PlanResult(digest_id, 0)
    post_ids = [int(p) for p in digest.options.get("post_ids", [])]
    topic_ids = [int(t) for t in digest.options.get("audience_topic_ids", [])]
    readers = select(Subscriber.id).where(_mailable(now))
    if topic_ids:
        readers = readers.where(
            exists(
                select(literal(1)).where(
                    Subscription.subscriber_id == Subscriber.id,
                    Subscription.topic_id.in_(topic_ids),
                )
            )
        )
    reader_sq = readers.subquery()
    pairs = select(reader_sq.c.id, Post.id).join(Post, true()).where(Post.id.in_(post_ids))
    planned = _fill(session, digest_id, now, pairs)
    _mark_sending(session, digest_id)
    return PlanResult(digest_id, planned)


def _mark_sending(session: Session, digest_id: int) -> None:
    # Deliveries whose every post went to the reader another way meanwhile are dropped, not sent empty.
    session.execute(
        delete(Delivery).where(
            Delivery.digest_id == digest_id,
            Delivery.status == DeliveryStatus.PENDING,
            ~exists(select(literal(1)).where(delivery_posts.c.delivery_id == Delivery.id)),
        )
    )
    refresh_digest_status(session, digest_id)


def refresh_digest_status(session: Session, digest_id: int) -> None:
    """Sending while any delivery is pending or claimed, sent (with a finish time) once none is."""
    open_work = session.scalar(
        select(literal(1))
        .where(
            Delivery.digest_id == digest_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.CLAIMED]),
        )
        .limit(1)
    )
    now = utcnow()
    values: dict[str, Any] = {"started_at": func.coalesce(Digest.started_at, now)}
    if open_work:
        values.update(status=DigestStatus.SENDING, finished_at=None)
    else:
        values.update(status=DigestStatus.SENT, finished_at=func.coalesce(Digest.finished_at, now))
    session.execute(
        update(Digest)
        .where(Digest.id == digest_id, Digest.status != DigestStatus.CANCELLED)
        .values(**values)
    )
