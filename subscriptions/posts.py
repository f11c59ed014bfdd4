"""Operations on posts: store one idempotently by its identity (GUID, else link, else title and date)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, selectinload

from subscriptions.content import plain_text, sanitize_summary
from subscriptions.db import lock_planning
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    Post,
    PostStatus,
    Topic,
    delivery_posts,
    post_topics,
    utcnow,
)
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
    notify: bool = True

    @property
    def announce(self) -> bool:
        """A post that is new, published and not backlog: its immediate alerts are due."""
        return self.created and self.status == PostStatus.PUBLISHED.value and self.notify


#: What may stay literal in a stored link; anything else (spaces, quotes, angle brackets) is
#: percent-encoded, so a link can never break out of an href, whatever serializes it later.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~-._"


def normalize_link(link: str) -> str:
    """A link without its fragment, with lower-case scheme and host, no trailing slash, and every
    character that is not plainly part of a URL percent-encoded."""
    parts = urlsplit(quote(link.strip(), safe=_URL_SAFE))
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def post_identity(
    *, guid: str | None, link: str | None, title: str, published: datetime | None
) -> str:
    """What makes two entries the same post."""
    if guid and guid.strip():
        return _bounded(f"guid:{guid.strip()}")
    if link and link.strip():
        return _bounded(f"link:{normalize_link(link)}")
    stamp = published.isoformat() if published else ""
    return "hash:" + hashlib.sha256(f"{title}\x00{stamp}".encode()).hexdigest()


def _bounded(identity: str) -> str:
    # The column holds 2,000 characters; a longer identity is kept as its digest.
    if len(identity) <= 2000:
        return identity
    return "sha256:" + hashlib.sha256(identity.encode()).hexdigest()


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
    notify: bool = True,
    categories: list[str] | None = None,
    unmapped_categories: list[str] | None = None,
) -> PostInfo:
    """Store a post, or update the one with the same identity (an edit is never a new post).

    The title is reduced to plain text and the summary sanitized, whoever sent them.
    """
    title = plain_text(title)
    if not title:
        raise InvalidInput("a post needs a title", field="title")
    link = (link or "").strip()
    if link and (urlsplit(link).scheme not in ("http", "https") or not urlsplit(link).netloc):
        raise InvalidInput("a post's link must be an http or https URL", field="link")
    if len(link) > 2000 or (guid is not None and len(guid) > 1900):
        raise InvalidInput("a post's link or GUID is too long", field="link")
    if not topics:
        raise InvalidInput("a post needs at least one topic", field="topics")
    if published_at is not None and published_at.tzinfo is None:
        raise InvalidInput("a post's published time needs a time zone", field="published_at")
    ids = topic_ids_for_slugs(session=session, slugs=topics)
    identity = post_identity(guid=guid, link=link, title=title, published=published_at)
    post = session.scalar(select(Post).where(Post.identity == identity))
    if post is None and link:
        # A GUID that changed while the link did not still names the same post.
        post = session.scalar(
            select(Post).where(Post.link == normalize_link(link), Post.feed_id == feed_id)
        )
        if post is not None:
            post.identity = identity
    created = post is None
    if post is None:
        post = Post(
            identity=identity,
            feed_id=feed_id,
            status=PostStatus.HELD if held else PostStatus.PUBLISHED,
            published_at=published_at or utcnow(),
            notify=notify,
        )
        if notify and not held:
            lock_planning(session)  # released_at must come after everything a planner covered
            post.released_at = utcnow()
        session.add(post)
    elif published_at is not None:
        post.published_at = published_at
    post.guid = guid.strip() if guid else None
    post.link = normalize_link(link) if link else ""
    post.title = title
    post.summary = sanitize_summary(summary)
    post.author = plain_text(author, limit=400)
    post.categories = sorted(set(categories or []))[:50]
    post.unmapped_categories = sorted(set(unmapped_categories or []))[:50]
    post.topics = list(session.scalars(select(Topic).where(Topic.id.in_(ids.values()))))
    session.flush()
    return _info(post, created=created)


def _info(post: Post, *, created: bool = False) -> PostInfo:
    return PostInfo(
        id=post.id,
        identity=post.identity,
        title=post.title,
        link=post.link,
        topics=sorted(t.slug for t in post.topics),
        status=post.status.value,
        published_at=post.published_at,
        created=created,
        notify=post.notify,
    )


def list_posts(
    *, session: Session, limit: int = 50, status: PostStatus | None = None
) -> list[PostInfo]:
    """The newest posts first."""
    query = select(Post).order_by(Post.published_at.desc(), Post.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Post.status == status)
    return [_info(p) for p in session.scalars(query)]


def approve_post(*, session: Session, post_id: int) -> PostInfo:
    """Release a held post; the returned info says its alerts are now due."""
    post = session.get(Post, post_id)
    if post is None:
        raise NotFound(f"no post {post_id}")
    if post.status is not PostStatus.HELD:
        raise InvalidInput(f"post {post_id} is not held", field="status")
    post.status = PostStatus.PUBLISHED
    if post.notify:
        lock_planning(session)
        post.released_at = utcnow()
    session.flush()
    return _info(post, created=True)


def get_post(*, session: Session, post_id: int) -> PostInfo:
    """One post, or NotFound."""
    post = session.get(Post, post_id)
    if post is None:
        raise NotFound(f"no post {post_id}")
    return _info(post)


def hold_post(*, session: Session, post_id: int) -> PostInfo:
    """Hold a published post: digests planned from now on leave it out until it is approved.

    Emails already planned with it are not taken back (the ledger is never rewritten).
    """
    post = session.get(Post, post_id)
    if post is None:
        raise NotFound(f"no post {post_id}")
    if post.status is PostStatus.HELD:
        raise InvalidInput(f"post {post_id} is already held", field="status")
    lock_planning(session)  # a planner running now sees the post either published or held
    post.status = PostStatus.HELD
    session.flush()
    return _info(post)


@dataclass(frozen=True, slots=True)
class PostPage:
    """One page of a post search and the number of posts that match."""

    items: list[PostInfo]
    total: int


MAX_SEARCH_CHARS = 200


def search_posts(
    *,
    session: Session,
    text: str = "",
    topic: str | None = None,
    status: PostStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> PostPage:
    """Posts whose title or link holds `text` (case-insensitive), of a topic and a status, newest
    first, a page at a time."""
    text = text.strip()
    if len(text) > MAX_SEARCH_CHARS:
        raise InvalidInput(f"search: at most {MAX_SEARCH_CHARS} characters", field="q")
    if "\x00" in text or "\x00" in (topic or ""):  # PostgreSQL refuses NUL in any string
        raise InvalidInput("search: no NUL characters", field="q" if "\x00" in text else "topic")
    query = select(Post.id)
    if text:
        pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern += "%"
        query = query.where(
            or_(
                func.lower(Post.title).like(pattern, escape="\\"),
                func.lower(Post.link).like(pattern, escape="\\"),
            )
        )
    if topic:
        query = query.where(
            Post.id.in_(
                select(post_topics.c.post_id)
                .join(Topic, Topic.id == post_topics.c.topic_id)
                .where(Topic.slug == topic)
            )
        )
    if status is not None:
        query = query.where(Post.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ids = list(
        session.scalars(
            query.order_by(Post.published_at.desc(), Post.id.desc()).limit(limit).offset(offset)
        )
    )
    found = {
        p.id: p
        for p in session.scalars(
            select(Post).where(Post.id.in_(ids)).options(selectinload(Post.topics))
        )
    }
    return PostPage([_info(found[i]) for i in ids], total)


@dataclass(frozen=True, slots=True)
class PostCarrier:
    """A digest that carried a post, and what became of the emails with it."""

    digest_id: int
    kind: str
    status: str
    subject: str
    run_key: str | None
    created_at: datetime
    emails: int
    sent: int
    failed: int
    pending: int


def post_digests(*, session: Session, post_id: int) -> list[PostCarrier]:
    """The digests whose emails carried the post, newest first, with their emails by outcome."""
    if session.get(Post, post_id) is None:
        raise NotFound(f"no post {post_id}")
    # delivery_posts has no foreign keys (migration 0008): joined by id.
    count = func.count(Delivery.id)

    def outcome(*statuses: DeliveryStatus) -> Any:
        return func.coalesce(func.sum(case((Delivery.status.in_(statuses), 1), else_=0)), 0)

    rows = session.execute(
        select(
            Digest.id,
            Digest.kind,
            Digest.status,
            Digest.subject,
            Digest.run_key,
            Digest.created_at,
            count,
            outcome(DeliveryStatus.SENT),
            outcome(DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN, DeliveryStatus.SUPPRESSED),
            outcome(DeliveryStatus.PENDING, DeliveryStatus.CLAIMED),
        )
        .select_from(delivery_posts)
        .join(Delivery, Delivery.id == delivery_posts.c.delivery_id)
        .join(Digest, Digest.id == Delivery.digest_id)
        .where(delivery_posts.c.post_id == post_id)
        .group_by(
            Digest.id, Digest.kind, Digest.status, Digest.subject, Digest.run_key, Digest.created_at
        )
        .order_by(Digest.created_at.desc(), Digest.id.desc())
    ).all()
    return [
        PostCarrier(d, k.value, s.value, subj, key, at, int(n), int(ok), int(bad), int(wait))
        for d, k, s, subj, key, at, n, ok, bad, wait in rows
    ]
