"""Editors' digests: compose (posts, or topics and a time window), schedule, cancel, read progress."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true
from sqlalchemy.orm import Session, aliased

from subscriptions.errors import CountChanged, InvalidInput, NotFound
from subscriptions.ledger_archive import archived_counts, archived_events
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Event,
    Post,
    PostStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
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
    #: The audience's topics (slugs); `everyone`: every active reader; `for_everyone`: each
    #: reader gets every post, not only the posts of their topics.
    audience_slugs: tuple[str, ...] = ()
    everyone: bool = False
    for_everyone: bool = False

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
    #: Of `pending`: claimed by a sender (in the batch going out now), and not yet claimed.
    claimed: int = 0

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
            claimed=counts.get(DeliveryStatus.CLAIMED.value, 0),
        )

    @property
    def waiting(self) -> int:
        return self.pending - self.claimed

    @property
    def phase(self) -> str:
        """In words, for the page and screen readers: what is happening now."""
        if self.status in ("draft", "scheduled", "cancelled", "sent"):
            return self.status
        if self.planned == 0:
            return "planning"
        if self.claimed:
            return f"sending a batch of {self.claimed:,}"
        return "sending" if self.pending else "finishing"

    @property
    def done(self) -> int:
        return self.planned - self.pending

    @property
    def percent(self) -> int:
        """Whole percent of planned deliveries with an outcome; 100 once a digest is sent. At
        least 1 as soon as one email has an outcome, so the bar moves with the first batch."""
        if self.planned == 0:
            return 100 if self.status == DigestStatus.SENT.value else 0
        if self.done == 0:
            return 0
        return max(1, self.done * 100 // self.planned)

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
    everyone: bool = False,
    for_everyone: bool = False,
) -> DigestSummary:
    """A draft digest of chosen posts, or of the posts of `topics` released in [since, until).

    The audience is the readers of `audience_topics`, else of the chosen topics, else of the
    chosen posts' topics; every active reader only when `everyone` is given. Each reader's copy
    carries only the posts of their topics, unless `for_everyone` (or `everyone`): then each
    reader of the audience gets every post.
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
    digest = Digest(
        kind=DigestKind.EDITORIAL,
        status=DigestStatus.DRAFT,
        subject=subject,
        intro_markdown=intro_markdown,
        options={"post_ids": ids},
    )
    _set_audience(
        session,
        digest,
        topic_ids=sorted(
            topic_ids_for_slugs(session=session, slugs=audience_topics).values()
            if audience_topics
            else chosen_topics.values()
        ),
        everyone=everyone,
        for_everyone=for_everyone,
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
    # A digest whose ledger moved to the archive keeps its counts there.
    for status, n in (
        archived_counts(session=session, digest_ids=[digest_id]).get(digest_id, {}).items()
    ):
        counts[status] = counts.get(status, 0) + n
    counts["planned"] = sum(counts.values())
    audience = "all active readers"
    everyone = _for_all_readers(digest.options)
    slugs: tuple[str, ...] = ()
    if not everyone:
        found = session.execute(
            select(Topic.name, Topic.slug)
            .where(Topic.id.in_(_audience_topic_ids(digest.options)))
            .order_by(Topic.name)
        ).all()
        slugs = tuple(slug for _, slug in found)
        audience = "readers of " + ", ".join(name for name, _ in found)
        if digest.options.get("for_everyone"):
            audience += " (every post to each)"
    summary = _summary(digest, audience, counts)
    return replace(
        summary,
        audience_slugs=slugs,
        everyone=everyone,
        for_everyone=everyone or bool(digest.options.get("for_everyone")),
    )


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
        for digest_id, moved in archived_counts(session=session, digest_ids=counts).items():
            for status_name, n in moved.items():
                counts[digest_id][status_name] = counts[digest_id].get(status_name, 0) + n
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
    for type_, n in archived_events(session=session, digest_id=digest_id).items():
        events[type_] = int(events.get(type_, 0)) + n
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


def schedule(
    *, session: Session, digest_id: int, at: datetime, expected_count: int
) -> DigestSummary:
    """Send a draft at `at` (now or later) once the editor confirmed `expected_count` recipients.

    The one send operation of the console, the API and the CLI: it counts the audience again,
    with the digest locked, and refuses (CountChanged, nothing changed) when the count the editor
    saw is no longer the count; the scheduler plans it when the time comes.
    """
    digest = _editable(session, digest_id)
    if at.tzinfo is None:
        raise InvalidInput(
            "give the time with a time zone, e.g. 2026-12-01T09:00+01:00", field="at"
        )
    count = count_audience(session=session, digest_id=digest_id).total
    if expected_count != count:
        raise CountChanged(
            f"the audience is {count} readers now, not {expected_count}: "
            "check the audience and confirm again",
            count=count,
        )
    if count == 0:
        raise InvalidInput("the audience has no reader: nothing would be sent", field="audience")
    digest.status = DigestStatus.SCHEDULED
    digest.scheduled_at = at
    session.flush()
    return summarize(session=session, digest_id=digest_id)


def count_another_audience(
    *,
    session: Session,
    digest_id: int,
    audience_topics: list[str] | None = None,
    everyone: bool = False,
    for_everyone: bool = False,
) -> AudienceCount:
    """What the count would be with this audience (the console shows it while the editor ticks
    boxes); nothing changes."""
    digest = session.get(Digest, digest_id)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise NotFound(f"no editorial digest {digest_id}")
    topic_ids = (
        sorted(topic_ids_for_slugs(session=session, slugs=audience_topics).values())
        if audience_topics
        else []
    )
    options = _audience_options(
        session, digest.options, topic_ids=topic_ids, everyone=everyone, for_everyone=for_everyone
    )
    return count_audience(session=session, digest_id=digest_id, options=options)


def change_audience(
    *,
    session: Session,
    digest_id: int,
    audience_topics: list[str] | None = None,
    everyone: bool = False,
    for_everyone: bool = False,
) -> DigestSummary:
    """Change a draft's (or scheduled digest's) audience; the same rules as `create_editorial`."""
    digest = _editable(session, digest_id)
    topic_ids = (
        sorted(topic_ids_for_slugs(session=session, slugs=audience_topics).values())
        if audience_topics
        else []
    )
    _set_audience(
        session, digest, topic_ids=topic_ids, everyone=everyone, for_everyone=for_everyone
    )
    session.flush()
    return summarize(session=session, digest_id=digest_id)


def _set_audience(
    session: Session, digest: Digest, *, topic_ids: list[int], everyone: bool, for_everyone: bool
) -> None:
    """Write the audience into the digest's options (a new dict: SQLAlchemy sees the change)."""
    digest.options = _audience_options(
        session,
        digest.options,
        topic_ids=topic_ids,
        everyone=everyone,
        for_everyone=for_everyone,
    )


def _audience_options(
    session: Session,
    options: dict[str, Any],
    *,
    topic_ids: list[int],
    everyone: bool,
    for_everyone: bool,
) -> dict[str, Any]:
    """The options with this audience: every active reader only when asked; otherwise the readers
    of `topic_ids`, or of the chosen posts' topics when none is given."""
    options = dict(options)
    post_ids = [int(p) for p in options.get("post_ids", [])]
    if everyone:
        options.update(audience="everyone", audience_topic_ids=[], for_everyone=True)
        return options
    if not topic_ids:
        topic_ids = sorted(
            set(
                session.scalars(
                    select(post_topics.c.topic_id).where(post_topics.c.post_id.in_(post_ids))
                )
            )
        )
    if not topic_ids:
        raise InvalidInput(
            "the chosen posts have no topic: choose the audience's topics, or every active reader",
            field="audience",
        )
    options.update(audience="topics", audience_topic_ids=topic_ids, for_everyone=for_everyone)
    return options


def _for_all_readers(options: dict[str, Any]) -> bool:
    # Digests made before audiences had a kind: no topics meant every active reader.
    if "audience" not in options:
        return not options.get("audience_topic_ids")
    return bool(options["audience"] == "everyone")


def _audience_topic_ids(options: dict[str, Any]) -> list[int]:
    return [int(t) for t in options.get("audience_topic_ids", [])]


def _mailable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now),
    )


def editorial_pairs(options: dict[str, Any], now: datetime) -> Select[Any, Any]:
    """(reader id, post id) for every post each reader of an editor's digest gets, as the planner
    plans it and as `count_audience` counts it (one query for both, so the count is exact).

    Every active reader gets every post; readers of the audience's topics get the posts of the
    topics they follow, or every post when the digest is marked for everyone.
    """
    post_ids = [int(p) for p in options.get("post_ids", [])]
    if _for_all_readers(options):
        return (
            select(Subscriber.id, Post.id)
            .join(Post, true())
            .where(_mailable(now), Post.id.in_(post_ids))
        )
    topic_ids = _audience_topic_ids(options)
    if options.get("for_everyone"):
        readers = (
            select(Subscription.subscriber_id.label("id"))
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscription.topic_id.in_(topic_ids), _mailable(now))
            .distinct()
            .subquery()
        )
        return select(readers.c.id, Post.id).join(Post, true()).where(Post.id.in_(post_ids))
    # A reader of the audience's topics, with the chosen posts of any topic they follow.
    own = aliased(Subscription)
    return (
        select(Subscription.subscriber_id, post_topics.c.post_id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(own, own.subscriber_id == Subscription.subscriber_id)
        .join(post_topics, post_topics.c.topic_id == own.topic_id)
        .where(
            Subscription.topic_id.in_(topic_ids),
            post_topics.c.post_id.in_(post_ids),
            _mailable(now),
        )
        .distinct()
    )


def every_post_to_each(options: dict[str, Any]) -> bool:
    """Whether each reader of an editor's digest gets every post (for everyone), rather than only
    the posts of the topics they follow."""
    return _for_all_readers(options) or bool(options.get("for_everyone"))


@dataclass(frozen=True, slots=True)
class AudienceCount:
    """How many readers an editor's digest would reach now: in all, by topic, by frequency.

    A reader counts once in `total`, and once under each audience topic (and frequency) they
    follow, so the parts may add up to more than the total."""

    total: int
    by_topic: list[tuple[str, int]]
    by_frequency: dict[str, int]


def count_audience(
    *,
    session: Session,
    digest_id: int,
    now: datetime | None = None,
    options: dict[str, Any] | None = None,
) -> AudienceCount:
    """The exact number of readers the digest would be planned for now (the planner's query), or
    would be with the audience in `options` (see `count_another_audience`)."""
    digest = session.get(Digest, digest_id)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise NotFound(f"no editorial digest {digest_id}")
    options = digest.options if options is None else options
    pairs = editorial_pairs(options, now or utcnow()).subquery()
    readers = select(pairs.c[0].label("id")).distinct().subquery()
    total = int(session.scalar(select(func.count()).select_from(readers)) or 0)
    subs = select(Subscription.subscriber_id, Subscription.topic_id, Subscription.frequency).join(
        readers, readers.c.id == Subscription.subscriber_id
    )
    if not _for_all_readers(options):
        subs = subs.where(Subscription.topic_id.in_(_audience_topic_ids(options)))
    sq = subs.subquery()
    by_topic = [
        (name, int(n))
        for name, n in session.execute(
            select(Topic.name, func.count(func.distinct(sq.c.subscriber_id)))
            .join(sq, sq.c.topic_id == Topic.id)
            .group_by(Topic.name)
            .order_by(Topic.name)
        )
    ]
    by_frequency = {
        frequency.value: int(n)
        for frequency, n in session.execute(
            select(sq.c.frequency, func.count(func.distinct(sq.c.subscriber_id))).group_by(
                sq.c.frequency
            )
        )
    }
    return AudienceCount(total=total, by_topic=by_topic, by_frequency=by_frequency)


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
