"""Operations on feeds: register one, list them, record what a poll found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import Feed, Topic, utcnow
from subscriptions.topics import topic_ids_for_slugs

MIN_INTERVAL_SECONDS = 60
#: After this many failed polls in a row a feed is paused until an editor resumes it.
PAUSE_AFTER_FAILURES = 5
MAX_BACKOFF = timedelta(hours=6)


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
    if poll_interval_seconds < MIN_INTERVAL_SECONDS:
        raise InvalidInput(
            f"poll interval: at least {MIN_INTERVAL_SECONDS} seconds", field="interval"
        )
    if send_latest < 0:
        raise InvalidInput("send latest: a number of posts, 0 or more", field="send_latest")
    mapping = {
        k.strip().casefold(): v.strip() for k, v in (category_map or {}).items() if k.strip()
    }
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


def list_feeds(*, session: Session) -> list[FeedInfo]:
    """Every feed with its health."""
    rows = session.execute(
        select(Feed, Topic.slug)
        .outerjoin(Topic, Topic.id == Feed.default_topic_id)
        .order_by(Feed.id)
    ).all()
    return [_info(feed, slug) for feed, slug in rows]


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
