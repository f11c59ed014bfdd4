"""Load a claimed batch as plain data: who gets which posts under which topics, and why."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import NotFound
from subscriptions.models import (
    Delivery,
    Digest,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    delivery_posts,
    post_topics,
    utcnow,
)
from worker.digests.render import Group, post_view


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed delivery, ready to render."""

    delivery_id: int
    subscriber_id: int
    email: str
    token_version: int
    mailable: bool
    kind: str
    groups: tuple[Group, ...]
    subscriptions: tuple[tuple[str, str], ...]

    @property
    def variant(self) -> tuple[object, ...]:
        """Readers with equal variants share one rendered body."""
        return (self.kind, self.groups)


@dataclass(frozen=True, slots=True)
class DigestInfo:
    id: int
    kind: str
    subject: str
    intro_markdown: str


def load_jobs(session: Session, delivery_ids: list[int]) -> tuple[DigestInfo | None, list[Job]]:
    """The digest and the jobs of `delivery_ids` (all of one digest), in three queries."""
    if not delivery_ids:
        return None, []
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.digest_id,
            Subscriber.id,
            Subscriber.email,
            Subscriber.token_version,
            Subscriber.status,
            Subscriber.paused_until,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id.in_(delivery_ids))
        .order_by(Delivery.id)
    ).all()
    if not rows:
        return None, []
    digest = session.get(Digest, rows[0][1])
    assert digest is not None
    info = DigestInfo(digest.id, digest.kind.value, digest.subject, digest.intro_markdown)
    reader_ids = [r[2] for r in rows]
    subs: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for reader_id, name, frequency in session.execute(
        select(Subscription.subscriber_id, Topic.name, Subscription.frequency)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.subscriber_id.in_(reader_ids))
    ):
        subs[reader_id].append((name, frequency.value))
    posts: dict[int, list[tuple[int, str, str, str, str]]] = defaultdict(list)
    for delivery_id, post_id, title, link, summary, topic in session.execute(
        select(
            delivery_posts.c.delivery_id, Post.id, Post.title, Post.link, Post.summary, Topic.name
        )
        .join(Post, Post.id == delivery_posts.c.post_id)
        .join(post_topics, post_topics.c.post_id == Post.id)
        .join(Topic, Topic.id == post_topics.c.topic_id)
        .where(delivery_posts.c.delivery_id.in_(delivery_ids))
        .order_by(Post.published_at.desc(), Post.id, Topic.name)
    ):
        posts[delivery_id].append((post_id, title, link, summary, topic))
    now = utcnow()
    jobs = []
    for delivery_id, _, reader_id, email, version, status, paused_until in rows:
        mailable = status is SubscriberStatus.ACTIVE and (
            paused_until is None or paused_until <= now
        )
        mine = subs[reader_id]
        jobs.append(
            Job(
                delivery_id=delivery_id,
                subscriber_id=reader_id,
                email=email,
                token_version=version,
                mailable=mailable,
                kind=info.kind,
                groups=_groups(info.kind, posts[delivery_id], mine),
                subscriptions=tuple(sorted(mine)),
            )
        )
    return info, jobs


def preview_job(session: Session, digest_id: int, email: str) -> tuple[DigestInfo, Job]:
    """The job an editorial digest would give reader `email` (who need not be in its audience)."""
    digest = session.get(Digest, digest_id)
    if digest is None:
        raise NotFound(f"no digest {digest_id}")
    reader = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if reader is None:
        raise NotFound(f"no reader {email}")
    post_ids = [int(p) for p in digest.options.get("post_ids", [])]
    rows = [
        tuple(row)
        for row in session.execute(
            select(Post.id, Post.title, Post.link, Post.summary, Topic.name)
            .join(post_topics, post_topics.c.post_id == Post.id)
            .join(Topic, Topic.id == post_topics.c.topic_id)
            .where(Post.id.in_(post_ids))
            .order_by(Post.published_at.desc(), Post.id, Topic.name)
        )
    ]
    subscriptions = [
        (name, frequency.value)
        for name, frequency in session.execute(
            select(Topic.name, Subscription.frequency)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == reader.id)
        )
    ]
    info = DigestInfo(digest.id, digest.kind.value, digest.subject, digest.intro_markdown)
    job = Job(
        delivery_id=0,
        subscriber_id=reader.id,
        email=reader.email,
        token_version=reader.token_version,
        mailable=reader.status is SubscriberStatus.ACTIVE,
        kind=info.kind,
        groups=_groups(info.kind, rows, subscriptions),  # type: ignore[arg-type]
        subscriptions=tuple(sorted(subscriptions)),
    )
    return info, job


def _groups(
    kind: str, rows: list[tuple[int, str, str, str, str]], subscriptions: list[tuple[str, str]]
) -> tuple[Group, ...]:
    """Each post once, under the first (by name) of its topics that brought it to this reader."""
    wanted = {name for name, freq in subscriptions if kind == "editorial" or freq == kind}
    by_post: dict[int, tuple[str, str, str, list[str]]] = {}
    order: list[int] = []
    for post_id, title, link, summary, topic in rows:
        if post_id not in by_post:
            by_post[post_id] = (title, link, summary, [])
            order.append(post_id)
        by_post[post_id][3].append(topic)
    grouped: dict[str, list[int]] = defaultdict(list)
    for post_id in order:
        topics = sorted(by_post[post_id][3])
        home = next((t for t in topics if t in wanted), topics[0])
        grouped[home].append(post_id)
    return tuple(
        Group(topic, tuple(post_view(*by_post[p][:3]) for p in grouped[topic]))
        for topic in sorted(grouped)
    )
