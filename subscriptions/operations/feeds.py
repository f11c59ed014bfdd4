"""Feed operations: add, edit, pause, resume, and ask a worker to poll one now.

An `InvalidInput` names the operation's parameter in `field` (`poll_interval_seconds`, `topic`), so
every entry point can point at what it asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from subscriptions import feeds
from subscriptions.errors import InvalidInput
from subscriptions.feeds import FeedInfo
from subscriptions.operations import UnitOfWork
from subscriptions.queue import POLL_FEED

#: The store's field names → this module's parameter names.
_FIELDS = {"interval": "poll_interval_seconds", "topics": "topic"}

#: A pause reason is one line of at most this many characters.
MAX_REASON = 300


@contextmanager
def _named() -> Iterator[None]:
    try:
        yield
    except InvalidInput as exc:
        if exc.field in _FIELDS:
            raise InvalidInput(str(exc), field=_FIELDS[exc.field]) from None
        raise


def add(
    uow: UnitOfWork,
    *,
    url: str,
    topic: str,
    category_map: dict[str, str] | None = None,
    poll_interval_seconds: int = 900,
    requires_approval: bool = False,
    send_latest: int = 0,
) -> FeedInfo:
    """Register a feed; its first poll is due now and records its backlog without mailing it
    (unless `send_latest`)."""
    with _named():
        return feeds.add_feed(
            session=uow.session,
            url=url,
            topic=topic,
            category_map=category_map,
            poll_interval_seconds=poll_interval_seconds,
            requires_approval=requires_approval,
            send_latest=send_latest,
        )


def edit(
    uow: UnitOfWork,
    feed_id: int,
    *,
    topic: str | None = None,
    category_map: dict[str, str] | None = None,
    poll_interval_seconds: int | None = None,
    requires_approval: bool | None = None,
) -> FeedInfo:
    """Change a feed's default topic, category rules, interval or approval; None keeps it."""
    with _named():
        return feeds.update_feed(
            session=uow.session,
            feed_id=feed_id,
            topic=topic,
            category_map=category_map,
            poll_interval_seconds=poll_interval_seconds,
            requires_approval=requires_approval,
        )


def pause(uow: UnitOfWork, feed_id: int, *, reason: str, by: str) -> FeedInfo:
    """Stop polling a feed. The reason is made one line of at most 300 characters; an empty one
    becomes "paused by {by}"."""
    text = (" ".join(reason.split()) or f"paused by {by}")[:MAX_REASON]
    feeds.set_feed_paused(session=uow.session, feed_id=feed_id, reason=text)
    return feeds.get_feed(session=uow.session, feed_id=feed_id)


def resume(uow: UnitOfWork, feed_id: int) -> FeedInfo:
    """Poll a paused feed again, from now; its failure count starts over."""
    feeds.set_feed_paused(session=uow.session, feed_id=feed_id, reason=None)
    return feeds.get_feed(session=uow.session, feed_id=feed_id)


def poll_now(uow: UnitOfWork, feed_id: int) -> FeedInfo:
    """Ask a worker to poll the feed now, paused or not (NotFound if there is no such feed)."""
    info = feeds.get_feed(session=uow.session, feed_id=feed_id)
    uow.later(POLL_FEED, feed_id)
    return info
