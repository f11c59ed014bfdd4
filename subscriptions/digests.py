"""Editors' digests: compose (posts, or topics and a time window), schedule, cancel, read progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Event,
    Post,
    PostStatus,
    Topic,
    post_topics,
    utcnow,
)
from subscriptions.names import check_name
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
    intro_markdown: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def progress(self) -> Progress:
        """How far sending has got, from the delivery counts."""
        return Progress.from_counts(self.status, self.counts)


#: Delivery statuses that are still work to do; every other status is an outcome.
OPEN_STATUSES = (DeliveryStatus.PENDING.value, DeliveryStatus.CLAIMED.value)


@dataclass(frozen=True, slots=True)
class Progress:
    """A digest's sending progress: planned deliveries, how many have an outcome, and which."""

    status: str
    planned: int
    sent: int
    failed: int
    suppressed: int
    unknown: int
    pending: int

    @classmethod
    def from_counts(cls, status: str, counts: dict[str, int]) -> Progress:
        return cls(
            status=status,
            planned=counts.get("planned", 0),
            sent=counts.get(DeliveryStatus.SENT.value, 0),
            failed=counts.get(DeliveryStatus.FAILED.value, 0),
            suppressed=counts.get(DeliveryStatus.SUPPRESSED.value, 0),
            unknown=counts.get(DeliveryStatus.UNKNOWN.value, 0),
            pending=sum(counts.get(s, 0) for s in OPEN_STATUSES),
        )

    @property
    def done(self) -> int:
        return self.planned - self.pending

    @property
    def percent(self) -> int:
        """Whole percent of planned deliveries with an outcome; 100 once a digest is sent."""
        if self.planned == 0:
            return 100 if self.status == DigestStatus.SENT.value else 0
        return self.done * 100 // self.planned

    @property
    def finished(self) -> bool:
        """Nothing more will happen: sent (no open work) or cancelled."""
        return self.status in (DigestStatus.SENT.value, DigestStatus.CANCELLED.value)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The final report: what happened to a digest's emails, from the ledger and provider events."""

    sent: int
    failed: int
    suppressed: int
    unknown: int
    bounced: int
    complained: int
    unsubscribed: int


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
    subject = check_name(subject, what="subject", field="subject")
    subject = " ".join(subject.split())  # runs of spaces and tabs become one space
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
    return _summary(digest, audience, counts)


def _summary(digest: Digest, audience: str, counts: dict[str, int]) -> DigestSummary:
    return DigestSummary(
        id=digest.id,
        kind=digest.kind.value,
        status=digest.status.value,
        subject=digest.subject,
        post_ids=[int(p) for p in digest.options.get("post_ids", [])],
        audience=audience,
        scheduled_at=digest.scheduled_at,
        counts=counts,
        intro_markdown=digest.intro_markdown,
        created_at=digest.created_at,
        started_at=digest.started_at,
        finished_at=digest.finished_at,
    )


def list_digests(
    *, session: Session, limit: int, offset: int = 0, kind: str | None = None
) -> tuple[list[DigestSummary], int]:
    """A page of digests of every kind (or of `kind`), newest first, with delivery counts; and the
    total. One grouped count for the page, not one per digest."""
    where = []
    if kind is not None:
        try:
            where.append(Digest.kind == DigestKind(kind))
        except ValueError:
            known = ", ".join(k.value for k in DigestKind)
            raise InvalidInput(f"kind: one of {known}", field="kind") from None
    total = int(session.scalar(select(func.count(Digest.id)).where(*where)) or 0)
    found = session.scalars(
        select(Digest).where(*where).order_by(Digest.id.desc()).limit(limit).offset(offset)
    ).all()
    counts: dict[int, dict[str, int]] = {d.id: {} for d in found}
    if found:
        for digest_id, status, n in session.execute(
            select(Delivery.digest_id, Delivery.status, func.count())
            .where(Delivery.digest_id.in_(list(counts)))
            .group_by(Delivery.digest_id, Delivery.status)
        ):
            counts[digest_id][status.value] = int(n)
    for c in counts.values():
        c["planned"] = sum(c.values())
    audience = {DigestKind.EDITORIAL: "editorial audience"}
    return [
        _summary(d, audience.get(d.kind, f"{d.kind.value} readers"), counts[d.id]) for d in found
    ], total


@dataclass(frozen=True, slots=True)
class CarriedPost:
    id: int
    title: str
    link: str
    published_at: datetime


def carried_posts(*, session: Session, digest_id: int) -> list[CarriedPost]:
    """The posts an editor's digest carries, newest first."""
    digest = session.get(Digest, digest_id)
    if digest is None:
        raise NotFound(f"no digest {digest_id}")
    ids = [int(p) for p in digest.options.get("post_ids", [])]
    if not ids:
        return []
    rows = session.execute(
        select(Post.id, Post.title, Post.link, Post.published_at)
        .where(Post.id.in_(ids))
        .order_by(Post.published_at.desc(), Post.id)
    )
    return [CarriedPost(*row) for row in rows]


def outcomes(*, session: Session, digest_id: int) -> Outcomes:
    """The final report of a digest: its deliveries' outcomes and the provider events about them."""
    summary = summarize(session=session, digest_id=digest_id)
    events = dict(
        session.execute(
            select(Event.type, func.count(Event.id))
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(Delivery.digest_id == digest_id)
            .group_by(Event.type)
        ).all()
    )
    progress = summary.progress
    return Outcomes(
        sent=progress.sent,
        failed=progress.failed,
        suppressed=progress.suppressed,
        unknown=progress.unknown,
        bounced=int(events.get("bounced", 0)) + int(events.get("soft_bounced", 0)),
        complained=int(events.get("complained", 0)),
        unsubscribed=int(events.get("unsubscribed", 0)),
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
    """Cancel a draft, scheduled or sending digest. What is already sent stays sent; deliveries not
    yet claimed stay pending and are never sent (senders skip a cancelled digest)."""
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise NotFound(f"no editorial digest {digest_id}")
    if digest.status in (DigestStatus.SENT, DigestStatus.CANCELLED):
        raise InvalidInput(
            f"digest {digest_id} is {digest.status.value} already; there is nothing to cancel",
            field="status",
        )
    digest.status = DigestStatus.CANCELLED
    digest.finished_at = digest.finished_at or utcnow()
    session.flush()
    return summarize(session=session, digest_id=digest_id)


def _editable(session: Session, digest_id: int) -> Digest:
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise NotFound(f"no editorial digest {digest_id}")
    if digest.status not in (DigestStatus.DRAFT, DigestStatus.SCHEDULED):
        raise InvalidInput(
            f"digest {digest_id} is {digest.status.value}; only drafts and scheduled digests change",
            field="status",
        )
    return digest
