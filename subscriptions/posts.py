"""Operations on posts: store one idempotently by its identity (GUID, else link, else title and date)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput
from subscriptions.models import Post, PostStatus, Topic, utcnow
from subscriptions.topics import topic_ids_for_slugs


@dataclass(frozen=True, slots=True)
class PostInfo:
    id: int
    identity: str
    title: str
    link: str
    topics: list[str]
    status: str
    published_at: datetime
    created: bool = field(default=False)


def normalize_link(link: str) -> str:
    """A link without its fragment, with lower-case scheme and host and no trailing slash."""
    parts = urlsplit(link.strip())
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def post_identity(
    *, guid: str | None, link: str | None, title: str, published: datetime | None
) -> str:
    """What makes two entries the same post."""
    if guid and guid.strip():
        return f"guid:{guid.strip()}"
    if link and link.strip():
        return f"link:{normalize_link(link)}"
    stamp = published.isoformat() if published else ""
    return "hash:" + hashlib.sha256(f"{title}\x00{stamp}".encode()).hexdigest()


def add_post(
    *,
    session: Session,
    title: str,
    link: str,
    topics: list[str],
    summary: str = "",
    author: str = "",
    guid: str | None = None,
    published_at: datetime | None = None,
    feed_id: int | None = None,
    held: bool = False,
) -> PostInfo:
    """Store a post, or update the one with the same identity (an edit is never a new post)."""
    title = title.strip()
    if not title:
        raise InvalidInput("a post needs a title", field="title")
    if link and urlsplit(link).scheme not in ("http", "https"):
        raise InvalidInput("a post's link must be an http or https URL", field="link")
    if not topics:
        raise InvalidInput("a post needs at least one topic", field="topics")
    ids = topic_ids_for_slugs(session=session, slugs=topics)
    identity = post_identity(guid=guid, link=link, title=title, published=published_at)
    post = session.scalar(select(Post).where(Post.identity == identity))
    if post is None and link:
        # A GUID that changed while the link did not still names the same post.
        post = session.scalar(
            select(Post).where(Post.link == normalize_link(link), Post.feed_id == feed_id)
        )
    created = post is None
    if post is None:
        post = Post(
            identity=identity,
            feed_id=feed_id,
            status=PostStatus.HELD if held else PostStatus.PUBLISHED,
            published_at=published_at or utcnow(),
        )
        session.add(post)
    post.guid = guid
    post.link = normalize_link(link) if link else ""
    post.title = title[:1000]
    post.summary = summary
    post.author = author[:400]
    post.topics = list(session.scalars(select(Topic).where(Topic.id.in_(ids.values()))))
    session.flush()
    return PostInfo(
        id=post.id,
        identity=post.identity,
        title=post.title,
        link=post.link,
        topics=sorted(t.slug for t in post.topics),
        status=post.status.value,
        published_at=post.published_at,
        created=created,
    )


def list_posts(*, session: Session, limit: int = 50) -> list[PostInfo]:
    """The newest posts first."""
    posts = session.scalars(select(Post).order_by(Post.published_at.desc()).limit(limit))
    return [
        PostInfo(
            p.id,
            p.identity,
            p.title,
            p.link,
            sorted(t.slug for t in p.topics),
            p.status.value,
            p.published_at,
        )
        for p in posts
    ]
