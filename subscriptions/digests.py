"""Editors' digests: compose (posts, or topics and a time window), schedule, cancel, read progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import (
    Delivery,
    Digest,
    DigestKind,
    DigestStatus,
    Post,
    PostStatus,
    Topic,
    post_topics,
    utcnow,
)
from subscriptions.topics import topic_ids_for_slugs

MAX_POSTS = 100


@dataclass(frozen=True, slots=True)
class DigestSummary:
    id: int
    kind: str
    status: str
    subject: str
    post_ids: list[int]
    audience: str
    scheduled_at: datetime | None
    counts: dict[str, int]


def create_editorial(
    *,
    session: Session,
    subject: str,
    intro_markdown: str = "",
    post_ids: list[int] | None = None,
    topics: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    audience_topics: list[str] | None = None,
) -> DigestSummary:
    """A draft digest of chosen posts, or of the posts of `topics` released in [since, until).

    The audience is the readers of `audience_topics`, or of the chosen topics, or, when both are
    empty, every active reader.
    """
    subject = " ".join(subject.split())
    if not subject or len(subject) > 200:
        raise InvalidInput("subject: give 1 to 200 characters", field="subject")
    if len(intro_markdown) > 20_000:
        raise InvalidInput("intro: at most 20,000 characters", field="intro")
    chosen_topics = topic_ids_for_slugs(session=session, slugs=topics) if topics else {}
    if post_ids:
        found = set(
            session.scalars(
                select(Post.id).where(Post.id.in_(post_ids), Post.status == PostStatus.PUBLISHED)
            )
        )
        missing = [p for p in post_ids if p not in found]
        if missing:
            raise InvalidInput(f"no published post {', '.join(map(str, missing))}", field="posts")
        ids = list(dict.fromkeys(post_ids))
    elif chosen_topics:
        if since is None:
            raise InvalidInput(
                "give --since with topics (the start of the time window)", field="since"
            )
        query = (
            select(Post.id)
            .join(post_topics, post_topics.c.post_id == Post.id)
            .where(
                post_topics.c.topic_id.in_(chosen_topics.values()),
                Post.status == PostStatus.PUBLISHED,
                Post.published_at >= since,
                Post.published_at < (until or utcnow()),
            )
            .distinct()
        )
        ids = list(session.scalars(query))
        if not ids:
            raise InvalidInput("no published posts in those topics and that window", field="topics")
    else:
        raise InvalidInput("choose posts, or topics and a time window", field="posts")
    if len(ids) > MAX_POSTS:
        raise InvalidInput(f"at most {MAX_POSTS} posts in one digest", field="posts")
    audience = (
        topic_ids_for_slugs(session=session, slugs=audience_topics)
        if audience_topics
        else chosen_topics
    )
    digest = Digest(
        kind=DigestKind.EDITORIAL,
        status=DigestStatus.DRAFT,
        subject=subject,
        intro_markdown=intro_markdown,
        options={"post_ids": ids, "audience_topic_ids": sorted(audience.values())},
    )
    session.add(digest)
    session.flush()
    return summarize(session=session, digest_id=digest.id)


def summarize(*, session: Session, digest_id: int) -> DigestSummary:
    """A digest with its delivery counts by status (and `planned`, their total)."""
    digest = session.get(Digest, digest_id)
    if digest is None:
        raise NotFound(f"no digest {digest_id}")
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.digest_id == digest_id)
        .group_by(Delivery.status)
    ).all()
    counts = {status.value: int(n) for status, n in rows}
    counts["planned"] = sum(counts.values())
    topic_ids = digest.options.get("audience_topic_ids", [])
    audience = "all active readers"
    if topic_ids:
        names = session.scalars(
            select(Topic.name).where(Topic.id.in_(topic_ids)).order_by(Topic.name)
        )
        audience = "readers of " + ", ".join(names)
    return DigestSummary(
        id=digest.id,
        kind=digest.kind.value,
        status=digest.status.value,
        subject=digest.subject,
        post_ids=[int(p) for p in digest.options.get("post_ids", [])],
        audience=audience,
        scheduled_at=digest.scheduled_at,
        counts=counts,
    )


def schedule(*, session: Session, digest_id: int, at: datetime) -> DigestSummary:
    """Send a draft at `at` (now or later); the scheduler plans it when the time comes."""
    digest = _editable(session, digest_id)
    if at.tzinfo is None:
        raise InvalidInput(
            "give the time with a time zone, e.g. 2026-12-01T09:00+01:00", field="at"
        )
    digest.status = DigestStatus.SCHEDULED
    digest.scheduled_at = at
    session.flush()
    return summarize(session=session, digest_id=digest_id)


def cancel(*, session: Session, digest_id: int) -> DigestSummary:
    """Cancel a draft or scheduled digest before anything is sent."""
    digest = _editable(session, digest_id)
    digest.status = DigestStatus.CANCELLED
    session.flush()
    return summarize(session=session, digest_id=digest_id)


def _editable(session: Session, digest_id: int) -> Digest:
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise NotFound(f"no editorial digest {digest_id}")
    if digest.status not in (DigestStatus.DRAFT, DigestStatus.SCHEDULED):
        raise InvalidInput(
            f"digest {digest_id} is {digest.status.value}; only drafts and scheduled digests change"
        )
    return digest
