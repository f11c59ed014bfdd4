"""Poll one feed: fetch, parse, store each entry once, record the feed's health."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import posts
from subscriptions.errors import InvalidInput
from subscriptions.feeds import (
    PAUSE_AFTER_FAILURES,
    PostFields,
    backoff,
    entry_fields,
    poll_target,
    record_not_modified,
    stored_fields,
)
from subscriptions.models import Feed, Topic, utcnow
from subscriptions.posts import post_identity
from worker.feeds.fetch import FeedFetcher, FeedFetchError, shared_fetcher
from worker.feeds.parse import Entry, FeedParseError, ParsedFeed, fallback_guid, parse_feed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchOptions:
    allow_private: bool = False
    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 10.0
    transport: httpx.BaseTransport | None = None


@dataclass
class PollReport:
    """What one poll found; `announce` lists the posts whose alerts are now due."""

    feed_id: int
    status: str = "ok"
    error: str = ""
    new: int = 0
    updated: int = 0
    backlog: int = 0
    held: int = 0
    skipped: int = 0
    announce: list[int] = field(default_factory=list)

    def summary(self) -> str:
        if self.status not in ("ok", "not_modified"):
            return f"feed {self.feed_id}: {self.status}: {self.error}"
        parts = [f"{self.new} new", f"{self.updated} updated"]
        if self.backlog:
            parts.append(f"{self.backlog} backlog recorded as seen")
        if self.held:
            parts.append(f"{self.held} held for approval")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        state = "not modified" if self.status == "not_modified" else ", ".join(parts)
        return f"feed {self.feed_id}: {state}"


def poll_feed(
    sessions: sessionmaker[Session],
    feed_id: int,
    options: FetchOptions,
    *,
    now: datetime | None = None,
) -> PollReport:
    """Poll feed `feed_id` now. Never raises for a feed's own faults: they are recorded on the feed.

    A 304 (the feed unchanged since its validators) touches almost nothing: one narrow SELECT
    before the request, the request on this process's client (FeedFetcher, kept-alive
    connections), one UPDATE of the feed's poll times after it; no parsing, no ORM object.
    """
    now = now or utcnow()
    report = PollReport(feed_id)
    engine: Engine = sessions.kw["bind"]
    with _connect(engine) as connection:
        target = poll_target(connection=connection, feed_id=feed_id)
        connection.commit()  # nothing is held while the feed answers
        if target is None:
            report.status, report.error = "missing", "no such feed"
            return report
        fetcher = (
            shared_fetcher(allow_private=options.allow_private)
            if options.transport is None
            else FeedFetcher(allow_private=options.allow_private, transport=options.transport)
        )
        failure = ""
        try:
            fetched = fetcher.fetch(
                target.url,
                etag=target.etag,
                last_modified=target.last_modified,
                max_bytes=options.max_bytes,
                timeout=options.timeout,
            )
            if fetched.not_modified:
                found = record_not_modified(
                    connection=connection, feed_id=feed_id, now=now, interval=target.interval
                )
                connection.commit()
                if not found:
                    report.status, report.error = "missing", "no such feed"
                else:
                    report.status = "not_modified"
                return report
            parsed = parse_feed(
                fetched.body, content_type=fetched.content_type, base_url=fetched.url
            )
        except (FeedFetchError, FeedParseError) as exc:
            failure = str(exc)
        finally:
            if options.transport is not None:
                fetcher.close()
    if failure:
        return _record_failure(sessions, feed_id, failure, now, report)
    with sessions() as session, session.begin():
        feed = session.get(Feed, feed_id)
        if feed is None:
            report.status, report.error = "missing", "no such feed"
            return report
        _store(session, feed, parsed, report)
        # Validators too long to keep are dropped: the next poll is then unconditional, not broken.
        feed.etag = fetched.etag if fetched.etag and len(fetched.etag) <= 400 else None
        feed.last_modified = (
            fetched.last_modified
            if fetched.last_modified and len(fetched.last_modified) <= 100
            else None
        )
        if parsed.title and not feed.title:
            feed.title = parsed.title
        feed.last_polled_at = now
        feed.last_status = report.status
        feed.last_error = parsed.warning
        feed.consecutive_failures = 0
        feed.next_poll_at = now + timedelta(seconds=feed.poll_interval_seconds)
    return report


def _connect(engine: Engine) -> Connection:
    """The poll's connection. On PostgreSQL in autocommit: the SELECT before the request and,
    after a 304, the UPDATE are one round trip each (both are single statements). SQLite keeps
    its transactions (this project's BEGIN IMMEDIATE is taken at every begin), committed at once.
    """
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        return connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


def _store(session: Session, feed: Feed, parsed: ParsedFeed, report: PollReport) -> None:
    first_poll = feed.last_polled_at is None
    rules: dict[str, str] = dict(feed.category_map)
    default = session.get(Topic, feed.default_topic_id) if feed.default_topic_id else None
    # An archived topic receives no more posts: an entry keeps its live topics, and one whose
    # topics are all archived is skipped (not moved to the default topic).
    live = set(session.scalars(select(Topic.slug).where(Topic.archived_at.is_(None))))
    seen: set[str] = set()
    kept: list[tuple[int, Entry, str | None, list[str], list[str], PostFields, str]] = []
    for index, entry in enumerate(parsed.entries):
        guid = entry.guid or (None if entry.link else fallback_guid(entry))
        key = guid or entry.link
        if key in seen:  # a duplicate GUID inside one document: the first (newest) wins
            report.skipped += 1
            continue
        seen.add(key)
        topics, unmapped = _topics(entry, rules, default.slug if default else None)
        topics = [t for t in topics if t in live]
        if not topics:
            report.skipped += 1
            continue
        fields = entry_fields(
            guid=guid,
            link=entry.link,
            title=entry.title,
            summary=entry.summary,
            author=entry.author,
            categories=entry.categories,
            unmapped_categories=unmapped,
            topics=topics,
        )
        identity = post_identity(
            guid=guid, link=entry.link, title=fields.title, published=entry.published
        )
        kept.append((index, entry, guid, topics, unmapped, fields, identity))
    # A changed feed repeats mostly entries it sent before: those whose post already holds
    # exactly what they say are left alone (counted as updated, as add_post would report them),
    # so a poll writes only what changed.
    stored = stored_fields(session=session, identities=[k[6] for k in kept])
    for index, entry, guid, topics, unmapped, fields, identity in kept:
        known = stored.get(identity)
        if (
            known is not None
            and known[0] == fields
            and (entry.published is None or known[1] == entry.published)
        ):
            report.updated += 1
            continue
        notify = not first_poll or index < feed.send_latest
        try:
            with session.begin_nested():
                info = posts.add_post(
                    session=session,
                    title=entry.title,
                    link=entry.link,
                    topics=topics,
                    summary=entry.summary,
                    author=entry.author,
                    guid=guid,
                    published_at=entry.published,
                    feed_id=feed.id,
                    held=feed.requires_approval,
                    notify=notify,
                    categories=entry.categories,
                    unmapped_categories=unmapped,
                )
        except InvalidInput as exc:
            log.info("feed %s: skipped an entry: %s", feed.id, exc)
            report.skipped += 1
            continue
        if not info.created:
            report.updated += 1
        elif not notify:
            report.backlog += 1
        elif feed.requires_approval:
            report.held += 1
        else:
            report.new += 1
            report.announce.append(info.id)


def _topics(
    entry: Entry, rules: dict[str, str], default: str | None
) -> tuple[list[str], list[str]]:
    mapped = {rules[c.casefold()] for c in entry.categories if c.casefold() in rules}
    unmapped = [c for c in entry.categories if c.casefold() not in rules]
    if not mapped and default:
        mapped.add(default)
    return sorted(mapped), unmapped


def _record_failure(
    sessions: sessionmaker[Session], feed_id: int, error: str, now: datetime, report: PollReport
) -> PollReport:
    report.status, report.error = "error", error
    with sessions() as session, session.begin():
        feed = session.get(Feed, feed_id)
        if feed is None:
            return report
        feed.consecutive_failures += 1
        feed.last_status = "error"
        feed.last_error = error[:2000]
        feed.next_poll_at = now + backoff(feed.poll_interval_seconds, feed.consecutive_failures)
        if feed.consecutive_failures >= PAUSE_AFTER_FAILURES:
            feed.paused_reason = (
                f"paused after {feed.consecutive_failures} failed polls in a row: {error[:300]}"
            )
            report.status = "paused"
    log.warning("feed %s: %s", feed_id, error)
    return report
