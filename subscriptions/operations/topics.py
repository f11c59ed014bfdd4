"""Topic operations: add, edit (name, description, translations) and archive."""

from __future__ import annotations

from collections.abc import Mapping

from subscriptions import topics
from subscriptions.operations import UnitOfWork
from subscriptions.topics import TopicInfo


def add(
    uow: UnitOfWork,
    *,
    slug: str,
    name: str,
    description: str = "",
    translations: Mapping[str, Mapping[str, str]] | None = None,
) -> TopicInfo:
    """Create a topic; its slug is its name in links and feeds and cannot change."""
    return topics.add_topic(
        session=uow.session,
        slug=slug,
        name=name,
        description=description,
        translations=translations,
    )


def edit(
    uow: UnitOfWork,
    topic_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    translations: Mapping[str, Mapping[str, str]] | None = None,
) -> TopicInfo:
    """Rename a topic, change its description, or its name and description per language (a
    language given empty is removed); None keeps a part as it is."""
    if name is None and description is None and translations is None:
        return topics.get_topic(session=uow.session, topic_id=topic_id)
    return topics.update_topic(
        session=uow.session,
        topic_id=topic_id,
        name=name,
        description=description,
        translations=translations,
    )


def archive(uow: UnitOfWork, topic_id: int, *, archived: bool = True) -> TopicInfo:
    """Archive a topic (readers keep their subscription; it gets no more posts), or bring it back."""
    return topics.set_topic_archived(session=uow.session, topic_id=topic_id, archived=archived)


def find(uow: UnitOfWork, slug: str) -> TopicInfo:
    """The topic with this slug, archived or not (NotFound otherwise), for entry points that name
    topics by slug."""
    return topics.get_topic_by_slug(session=uow.session, slug=slug)
