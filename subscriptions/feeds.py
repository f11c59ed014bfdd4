"""Operations on feeds: register one, list them, record what a poll found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.orm import Session

from subscriptions.content import plain_text, sanitize_summary
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import Feed, Post, Topic, post_topics, utcnow
from subscriptions.names import check_name
from subscriptions.posts import normalize_link
from subscriptions.topics import topic_ids_for_slugs

MIN_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 7 * 86400
#: After this many failed polls in a row a feed is paused until an editor resumes it.
PAUSE_AFTER_FAILURES = 5
MAX_BACKOFF = timedelta(hours=6)
MAX_CATEGORY_RULES = 200


@dataclass(frozen=True, slots=True)
class FeedInfo:
    id: int
    url: str
    title: str
    default_topic: str | None
    category_map: dict[str, str]
    poll_interval_seconds: int
    requires_approval: bool
    last_status: str
    last_error: str
    consecutive_failures: int
    paused_reason: str | None
    last_polled_at: datetime | None


def _info(feed: Feed, topic_slug: str | None) -> FeedInfo:
    return FeedInfo(
        id=feed.id,
        url=feed.url,
        title=feed.title,
        default_topic=topic_slug,
        category_map=dict(feed.category_map),
        poll_interval_seconds=feed.poll_interval_seconds,
        requires_approval=feed.requires_approval,
        last_status=feed.last_status,
        last_error=feed.last_error,
        consecutive_failures=feed.consecutive_failures,
        paused_reason=feed.paused_reason,
        last_polled_at=feed.last_polled_at,
    )


def add_feed(
    *,
    session: Session,
    url: str,
    topic: str,
    category_map: dict[str, str] | None = None,
    poll_interval_seconds: int = 900,
    requires_approval: bool = False,
    send_latest: int = 0,
) -> FeedInfo:
    """Register a feed with a default topic and category → topic rules; first poll is due now."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"feed URL {url!r}: use an http or https URL", field="url")
    _check_interval(poll_interval_seconds)
    if send_latest < 0:
        raise InvalidInput("send latest: a number of posts, 0 or more", field="send_latest")
    mapping = _mapping(category_map or {})
    ids = topic_ids_for_slugs(session=session, slugs=[topic, *mapping.values()])
    if session.scalar(select(Feed.id).where(Feed.url == url)) is not None:
        raise InvalidInput(f"feed {url} is already registered", field="url")
    feed = Feed(
        url=url,
        default_topic_id=ids[topic],
        category_map=mapping,
        send_latest=send_latest,
        poll_interval_seconds=poll_interval_seconds,
        requires_approval=requires_approval,
        next_poll_at=utcnow(),
    )
    session.add(feed)
    session.flush()
    return _info(feed, topic)


def _check_interval(seconds: int) -> None:
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidInput(
            f"poll interval: {MIN_INTERVAL_SECONDS} to {MAX_INTERVAL_SECONDS} seconds",
            field="interval",
        )


def _mapping(category_map: dict[str, str]) -> dict[str, str]:
    # Categories match case-insensitively (the poller casefolds what a feed sends).
    mapping = {
        check_name(k, what="category map: a category", field="category_map").casefold(): v.strip()
        for k, v in category_map.items()
        if k.strip()
    }
    if len(mapping) > MAX_CATEGORY_RULES:
        raise InvalidInput(
            f"category map: at most {MAX_CATEGORY_RULES} categories", field="category_map"
        )
    if any(len(k) > 200 for k in mapping):
        raise InvalidInput(
            "category map: a category is at most 200 characters", field="category_map"
        )
    return mapping


def get_feed(*, session: Session, feed_id: int) -> FeedInfo:
    """One feed with its health, or NotFound."""
    row = session.execute(
        select(Feed, Topic.slug)
        .outerjoin(Topic, Topic.id == Feed.default_topic_id)
        .where(Feed.id == feed_id)
    ).first()
    if row is None:
        raise NotFound(f"no feed {feed_id}")
    return _info(row[0], row[1])


def update_feed(
    *,
    session: Session,
    feed_id: int,
    topic: str | None = None,
    category_map: dict[str, str] | None = None,
    poll_interval_seconds: int | None = None,
    requires_approval: bool | None = None,
) -> FeedInfo:
    """Change a feed's default topic, category → topic rules, interval or approval; None keeps it.

    New rules apply to entries stored from the next poll on; posts already stored keep their topics.
    """
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFound(f"no feed {feed_id}")
    if poll_interval_seconds is not None:
        _check_interval(poll_interval_seconds)
        feed.poll_interval_seconds = poll_interval_seconds
    mapping = _mapping(category_map) if category_map is not None else None
    current = session.scalar(select(Topic.slug).where(Topic.id == feed.default_topic_id))
    if topic == current:
        topic = None  # kept as it is, even when that topic has been archived since
    wanted = ([topic] if topic is not None else []) + list((mapping or {}).values())
    ids = topic_ids_for_slugs(session=session, slugs=wanted) if wanted else {}
    if topic is not None:
        feed.default_topic_id = ids[topic]
    if mapping is not None:
        feed.category_map = mapping
    if requires_approval is not None:
        feed.requires_approval = requires_approval
    session.flush()
    return get_feed(session=session, feed_id=feed_id)


def list_feeds(*, session: Session) -> list[FeedInfo]:
    """Every feed with its health."""
    rows = session.execute(
        select(Feed, Topic.slug)
        .outerjoin(Topic, Topic.id == Feed.default_topic_id)
        .order_by(Feed.id)
    ).all()
    return [_info(feed, slug) for feed, slug in rows]


@dataclass(frozen=True, slots=True)
class PollTarget:
    """What a poll sends: the feed's URL and the validators of its last 200."""

    url: str
    etag: str | None
    last_modified: str | None
    interval: timedelta


def poll_target(*, connection: Connection, feed_id: int) -> PollTarget | None:
    """The URL, validators and interval of feed `feed_id` (None when it is gone): one narrow
    SELECT, no ORM object."""
    row = connection.execute(
        select(Feed.url, Feed.etag, Feed.last_modified, Feed.poll_interval_seconds).where(
            Feed.id == feed_id
        )
    ).first()
    if row is None:
        return None
    interval = timedelta(seconds=row.poll_interval_seconds)
    return PollTarget(row.url, row.etag, row.last_modified, interval)


def record_not_modified(
    *, connection: Connection, feed_id: int, now: datetime, interval: timedelta
) -> bool:
    """A poll answered 304: the feed is healthy, its next poll `interval` (its poll interval)
    from `now`. One UPDATE and nothing else (the validators stay), atomic on its own: the poller
    runs it on an autocommit connection, one round trip. False when the feed is gone."""
    done = connection.execute(
        update(Feed)
        .where(Feed.id == feed_id)
        .values(
            last_polled_at=now,
            last_status="not_modified",
            last_error="",
            consecutive_failures=0,
            next_poll_at=now + interval,
        ),
        execution_options={"preserve_rowcount": True},
    )
    return bool(getattr(done, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class PostFields:
    """A post's stored fields that a feed entry sets, as add_post would store them."""

    guid: str | None
    link: str
    title: str
    summary: str
    author: str
    categories: list[str]
    unmapped_categories: list[str]
    topics: frozenset[str]


def entry_fields(
    *,
    guid: str | None,
    link: str,
    title: str,
    summary: str,
    author: str,
    categories: list[str],
    unmapped_categories: list[str],
    topics: list[str],
) -> PostFields:
    """What subscriptions.posts.add_post would store for these values (same cleaning)."""
    link = (link or "").strip()
    return PostFields(
        guid=guid.strip() if guid else None,
        link=normalize_link(link) if link else "",
        title=plain_text(title),
        summary=sanitize_summary(summary),
        author=plain_text(author, limit=400),
        categories=sorted(set(categories))[:50],
        unmapped_categories=sorted(set(unmapped_categories))[:50],
        topics=frozenset(topics),
    )


def stored_fields(
    *, session: Session, identities: list[str]
) -> dict[str, tuple[PostFields, datetime]]:
    """The stored fields and published time of the posts with these identities, in two
    statements however many there are (a poll compares a feed's entries with them, and leaves
    an entry that changed nothing alone instead of rewriting its post)."""
    if not identities:
        return {}
    posts = session.execute(
        select(
            Post.id,
            Post.identity,
            Post.guid,
            Post.link,
            Post.title,
            Post.summary,
            Post.author,
            Post.categories,
            Post.unmapped_categories,
            Post.published_at,
        ).where(Post.identity.in_(identities))
    ).all()
    slugs: dict[int, set[str]] = {}
    if posts:
        for post_id, slug in session.execute(
            select(post_topics.c.post_id, Topic.slug)
            .join(Topic, Topic.id == post_topics.c.topic_id)
            .where(post_topics.c.post_id.in_([p.id for p in posts]))
        ):
            slugs.setdefault(post_id, set()).add(slug)
    return {
        p.identity: (
            PostFields(
                guid=p.guid,
                link=p.link,
                title=p.title,
                summary=p.summary,
                author=p.author,
                categories=list(p.categories),
                unmapped_categories=list(p.unmapped_categories),
                topics=frozenset(slugs.get(p.id, ())),
            ),
            p.published_at,
        )
        for p in posts
    }


def due_feed_ids(*, session: Session, now: datetime | None = None) -> list[int]:
    """Feeds whose next poll time has come, skipping paused ones."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(Feed.id)
            .where(
                Feed.paused_reason.is_(None),
                or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now),
            )
            .order_by(Feed.next_poll_at)
        )
    )


def claim_due_feeds(
    *, session: Session, now: datetime | None = None, lease_seconds: int = 300
) -> list[int]:
    """Due feeds, each leased for a while so that a second scheduler tick does not poll it again."""
    now = now or utcnow()
    query = (
        select(Feed)
        .where(
            Feed.paused_reason.is_(None), or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now)
        )
        .order_by(Feed.next_poll_at)
        .limit(1000)
        .with_for_update(skip_locked=True)
    )
    feeds = list(session.scalars(query))
    for feed in feeds:
        feed.next_poll_at = now + timedelta(seconds=lease_seconds)
    session.flush()
    return [feed.id for feed in feeds]


def set_feed_paused(*, session: Session, feed_id: int, reason: str | None) -> None:
    """Pause a feed with a reason an editor can read, or resume it (reason None) for a poll now."""
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFound(f"no feed {feed_id}")
    feed.paused_reason = reason
    if reason is None:
        feed.consecutive_failures = 0
        feed.next_poll_at = utcnow()
    session.flush()


def backoff(interval_seconds: int, failures: int) -> timedelta:
    """Wait after the n-th failure in a row: the interval doubled each time, at most six hours."""
    return min(timedelta(seconds=interval_seconds * 2 ** max(0, failures - 1)), MAX_BACKOFF)


def parse_category_rules(text: str) -> dict[str, str]:
    """Rules written one a line, `category = topic-slug` (the console's text box); blank lines skip."""
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        category, sep, slug = line.rpartition("=")
        if not sep or not category.strip() or not slug.strip():
            raise InvalidInput(
                f"category map, line {number}: write `category = topic-slug`", field="category_map"
            )
        mapping[category.strip()] = slug.strip()
    return mapping


def format_category_rules(mapping: dict[str, str]) -> str:
    """The rules as `parse_category_rules` reads them."""
    return "".join(f"{category} = {slug}\n" for category, slug in sorted(mapping.items()))
