"""Operations on topics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput
from subscriptions.models import Topic

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


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
    name = name.strip()
    if not SLUG.match(slug) or len(slug) > 64:
        raise InvalidInput(
            f"topic slug {slug!r}: use lower-case letters, digits and hyphens (e.g. border-security)",
            field="slug",
        )
    if not name or len(name) > 200:
        raise InvalidInput("topic name: give 1 to 200 characters", field="name")
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
