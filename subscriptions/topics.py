"""Operations on topics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    post_topics,
    utcnow,
)
from subscriptions.names import check_name

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_DESCRIPTION = 2000


@dataclass(frozen=True, slots=True)
class TopicInfo:
    id: int
    slug: str
    name: str
    description: str
    archived: bool


def _info(topic: Topic) -> TopicInfo:
    return TopicInfo(
        topic.id, topic.slug, topic.name, topic.description, topic.archived_at is not None
    )


def add_topic(*, session: Session, slug: str, name: str, description: str = "") -> TopicInfo:
    """Create a topic; the slug is lower-case words joined by hyphens and must be new."""
    slug = slug.strip()
    if not SLUG.match(slug) or len(slug) > 64:
        raise InvalidInput(
            f"topic slug {slug!r}: use lower-case letters, digits and hyphens (e.g. border-security)",
            field="slug",
        )
    name = check_name(name, what="topic name", field="name")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"topic description: at most {MAX_DESCRIPTION} characters", field="description"
        )
    if session.scalar(select(Topic.id).where(Topic.slug == slug)) is not None:
        raise InvalidInput(f"topic {slug!r} already exists", field="slug")
    topic = Topic(slug=slug, name=name, description=description.strip())
    session.add(topic)
    session.flush()
    return _info(topic)


def list_topics(*, session: Session, include_archived: bool = False) -> list[TopicInfo]:
    """Topics ordered by name."""
    query = select(Topic).order_by(Topic.name)
    if not include_archived:
        query = query.where(Topic.archived_at.is_(None))
    return [_info(t) for t in session.scalars(query)]


def live_topic_slugs(*, session: Session) -> list[str]:
    """Slugs of the topics readers can subscribe to."""
    return list(session.scalars(select(Topic.slug).where(Topic.archived_at.is_(None))))


def topic_ids_for_slugs(*, session: Session, slugs: list[str]) -> dict[str, int]:
    """Map slugs to ids of live topics; an unknown or archived slug is an InvalidInput."""
    wanted = sorted(set(slugs))
    rows = session.execute(
        select(Topic.slug, Topic.id).where(Topic.slug.in_(wanted), Topic.archived_at.is_(None))
    ).all()
    found = {slug: topic_id for slug, topic_id in rows}
    missing = [s for s in wanted if s not in found]
    if missing:
        raise InvalidInput(f"unknown topic: {', '.join(missing)}", field="topics")
    return found


@dataclass(frozen=True, slots=True)
class TopicSummary:
    """A topic as the console lists it: with its readers (active, any frequency) and posts."""

    id: int
    slug: str
    name: str
    description: str
    archived: bool
    readers: int
    posts: int


def summarize_topics(*, session: Session, include_archived: bool = True) -> list[TopicSummary]:
    """Every topic with its active readers and its posts, live ones first, then by name."""
    readers = (
        select(Subscription.topic_id, func.count().label("n"))
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .group_by(Subscription.topic_id)
        .subquery()
    )
    posts = (
        select(post_topics.c.topic_id, func.count().label("n"))
        .group_by(post_topics.c.topic_id)
        .subquery()
    )
    query = (
        select(Topic, func.coalesce(readers.c.n, 0), func.coalesce(posts.c.n, 0))
        .outerjoin(readers, readers.c.topic_id == Topic.id)
        .outerjoin(posts, posts.c.topic_id == Topic.id)
        .order_by(Topic.archived_at.is_not(None), Topic.name, Topic.id)
    )
    if not include_archived:
        query = query.where(Topic.archived_at.is_(None))
    return [
        TopicSummary(t.id, t.slug, t.name, t.description, t.archived_at is not None, r, p)
        for t, r, p in session.execute(query)
    ]


def get_topic(*, session: Session, topic_id: int) -> TopicInfo:
    """One topic, archived or not, or NotFound."""
    return _info(_topic(session, topic_id))


def update_topic(
    *, session: Session, topic_id: int, name: str | None = None, description: str | None = None
) -> TopicInfo:
    """Rename a topic and/or change its description; its slug (used in links and feeds) stays."""
    topic = _topic(session, topic_id)
    if name is not None:
        topic.name = check_name(name, what="topic name", field="name")
    if description is not None:
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(
                f"topic description: at most {MAX_DESCRIPTION} characters", field="description"
            )
        topic.description = description.strip()
    session.flush()
    return _info(topic)


def set_topic_archived(*, session: Session, topic_id: int, archived: bool) -> TopicInfo:
    """Archive a topic, or bring it back.

    Archiving deletes nothing: readers keep their subscription, which simply receives no more
    posts (new posts cannot carry an archived topic), and the sign-up form stops offering it.
    Unarchiving resumes those subscriptions as they were.
    """
    topic = _topic(session, topic_id)
    if archived and topic.archived_at is None:
        topic.archived_at = utcnow()
    elif not archived:
        topic.archived_at = None
    session.flush()
    return _info(topic)


def _topic(session: Session, topic_id: int) -> Topic:
    topic = session.get(Topic, topic_id)
    if topic is None:
        raise NotFound(f"no topic {topic_id}")
    return topic
