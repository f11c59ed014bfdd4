"""Operations on topics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.i18n import available_languages
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
    #: language → {"name": …, "description": …}; the default language is `name`/`description`.
    translations: dict[str, dict[str, str]] = field(default_factory=dict)

    def in_language(self, language: str) -> TopicInfo:
        """This topic as a reader of `language` sees it; a missing translation falls back to the
        default language's name and description (each on its own)."""
        given = self.translations.get(language) or {}
        return replace(
            self,
            name=given.get("name") or self.name,
            description=given.get("description") or self.description,
        )


def _info(topic: Topic) -> TopicInfo:
    return TopicInfo(
        topic.id,
        topic.slug,
        topic.name,
        topic.description,
        topic.archived_at is not None,
        dict(topic.translations or {}),
    )


def check_translations(
    translations: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    """Translations of a topic's name and description, checked: known languages, sizes; a
    language given with an empty name and description is removed."""
    known = available_languages()
    out: dict[str, dict[str, str]] = {}
    for language, given in translations.items():
        code = language.strip().lower()
        if code not in known:
            raise InvalidInput(
                f"topic translation: no catalog for language {code[:16]!r}"
                f" (known: {', '.join(sorted(known))})",
                field="translations",
            )
        name = (given.get("name") or "").strip()
        description = (given.get("description") or "").strip()
        if len(name) > 200:
            raise InvalidInput("topic name: give 1 to 200 characters", field="translations")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(
                f"topic description: at most {MAX_DESCRIPTION} characters", field="translations"
            )
        if name or description:
            out[code] = {"name": name, "description": description}
    return out


def add_topic(
    *,
    session: Session,
    slug: str,
    name: str,
    description: str = "",
    translations: Mapping[str, Mapping[str, str]] | None = None,
) -> TopicInfo:
    """Create a topic; the slug is lower-case words joined by hyphens and must be new.
    `translations`: its name and description in other languages (see `check_translations`)."""
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
    checked = check_translations(translations or {})
    topic = Topic(
        slug=slug, name=name, description=description.strip(), translations=checked or None
    )
    session.add(topic)
    session.flush()
    return _info(topic)


def list_topics(
    *, session: Session, include_archived: bool = False, language: str | None = None
) -> list[TopicInfo]:
    """Topics ordered by name; with `language`, named and described as its readers see them."""
    query = select(Topic).order_by(Topic.name)
    if not include_archived:
        query = query.where(Topic.archived_at.is_(None))
    found = [_info(t) for t in session.scalars(query)]
    if language is None:
        return found
    return sorted((t.in_language(language) for t in found), key=lambda t: t.name)


def localized_names(*, session: Session, language: str) -> dict[str, str]:
    """Each topic's default-language name → its name in `language` (for emails built from names)."""
    return {
        name: (given.get(language) or {}).get("name") or name
        for name, given in session.execute(select(Topic.name, Topic.translations))
        if given
    }


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
    translations: dict[str, dict[str, str]] = field(default_factory=dict)


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
        TopicSummary(
            t.id,
            t.slug,
            t.name,
            t.description,
            t.archived_at is not None,
            r,
            p,
            dict(t.translations or {}),
        )
        for t, r, p in session.execute(query)
    ]


def get_topic(*, session: Session, topic_id: int) -> TopicInfo:
    """One topic, archived or not, or NotFound."""
    return _info(_topic(session, topic_id))


def get_topic_by_slug(*, session: Session, slug: str) -> TopicInfo:
    """The topic with this slug, archived or not, or NotFound."""
    topic = session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        raise NotFound(f"no topic {slug!r} (see `newsletter topics list --all`)")
    return _info(topic)


def update_topic(
    *,
    session: Session,
    topic_id: int,
    name: str | None = None,
    description: str | None = None,
    translations: Mapping[str, Mapping[str, str]] | None = None,
) -> TopicInfo:
    """Rename a topic and/or change its description; its slug (used in links and feeds) stays.
    `translations` replaces the given languages' name and description (others are kept; a
    language given empty is removed)."""
    topic = _topic(session, topic_id)
    if translations is not None:
        merged = {k: v for k, v in (topic.translations or {}).items() if k not in translations}
        merged.update(check_translations(translations))
        topic.translations = merged or None
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
