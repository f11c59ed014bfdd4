"""Plan deliveries in SQL set operations: a few statements per digest run, never a loop over readers.

Every planned email is a Delivery row (unique per digest and reader) with the posts it carries in
delivery_posts, written in one transaction: a crash leaves either a whole plan or none, and a rerun or a
second planner adds only what is missing (the unique keys make "twice" impossible, not unlikely). In the
same transaction each reader's mark (a digest_marks row per reader and frequency) moves to the end of
the window just planned for them: their next window starts there, whatever their time zone is by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    Subquery,
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from subscriptions.db import lock_planning
from subscriptions.digests import editorial_pairs
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestMark,
    DigestStatus,
    Frequency,
    Post,
    PostStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    delivery_posts,
    post_topics,
    utcnow,
)
from worker.digests.schedule import Period, latest_daily, latest_weekly

#: Deliveries in these states did not (and will not) reach the reader: their posts may go again.
NOT_DELIVERED = (DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED)

#: How far a reader's mark may lie before their zone's period start and still count. A mark lags
#: only after a move to a zone behind (by the offset difference: at most 26 hours, UTC+14 to
#: UTC-12) or across quiet periods with no post at all (harmless); an older one is stale (the
#: reader had no topic at that frequency, or was gone, for a while) and the zone's period applies.
STALE_MARK = timedelta(days=2)

_marks = cast(Table, DigestMark.__table__)
_deliveries = cast(Table, Delivery.__table__)
_digests = cast(Table, Digest.__table__)


@dataclass(frozen=True, slots=True)
class PlanResult:
    digest_id: int
    planned: int


#: An INSERT with ON CONFLICT clauses: PostgreSQL's and SQLite's have the same methods.
Upsert = postgresql.Insert | sqlite.Insert


def _insert(session: Session, table: Table) -> Upsert:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _digest_for(session: Session, kind: DigestKind, run_key: str, *, subject: str = "") -> int:
    """The digest row of a run, created once whoever asks first; locked for this transaction."""
    stmt = (
        _insert(session, _digests)
        .values(
            kind=kind.value,
            run_key=run_key,
            status=DigestStatus.PLANNING.value,
            subject=subject,
            intro_markdown="",
            options={},
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
    )
    session.execute(stmt)
    digest_id = session.scalar(
        select(Digest.id).where(Digest.kind == kind, Digest.run_key == run_key).with_for_update()
    )
    assert digest_id is not None
    return digest_id


def _already_has(
    reader_id: SQLColumnExpression[int], post_id: SQLColumnExpression[int], post_ids: list[int]
) -> ColumnElement[bool]:
    """The reader has (or will get) this post through some other delivery.

    `post_ids` are all the posts the statement can offer: naming them lets the database read only
    their deliveries (ix_delivery_posts_post_id) instead of every post ever sent to the readers.
    """
    other = aliased(Delivery)
    return exists(
        select(literal(1))
        .select_from(delivery_posts.join(other, other.id == delivery_posts.c.delivery_id))
        .where(
            delivery_posts.c.post_id.in_(post_ids),
            other.subscriber_id == reader_id,
            delivery_posts.c.post_id == post_id,
            other.status.not_in(NOT_DELIVERED),
        )
    )


def _mailable(now: datetime) -> ColumnElement[bool]:
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now),
    )


def _subscribed_before(released_at: datetime) -> ColumnElement[bool]:
    """New readers get new posts only: the subscription to the topic began before the release.

    A subscription row begins when the reader confirms the topic or adds it in the preference
    centre; unsubscribing deletes the rows, so signing up again is a new beginning. The audit calls
    what this leaves out "subscribed later".
    """
    return Subscription.created_at < literal(released_at, type_=Subscription.created_at.type)


def _released(start: datetime | None, end: datetime) -> ColumnElement[bool]:
    window = Post.released_at <= end
    if start is not None:
        window = and_(window, Post.released_at > start)
    return and_(Post.status == PostStatus.PUBLISHED, Post.notify.is_(True), window)


def _serialize(session: Session) -> None:
    # "Does the reader have this post yet?" must see every other planner's finished work, and
    # every post released before this planner started.
    lock_planning(session)


def _drop_empty(session: Session, digest_id: int) -> None:
    """Pending deliveries of the digest that carry no post (half-written by a crash outside one
    transaction, or emptied since): dropped, so that their readers are planned afresh."""
    session.execute(
        delete(Delivery).where(
            Delivery.digest_id == digest_id,
            Delivery.status == DeliveryStatus.PENDING,
            ~exists(select(literal(1)).where(delivery_posts.c.delivery_id == Delivery.id)),
        )
    )


def _fill(session: Session, digest_id: int, now: datetime, pairs: Select[int, int]) -> int:
    """One delivery per reader in `pairs` (reader id, post id) who has none in this digest yet,
    with the posts `pairs` gives that reader. Returns the deliveries added.

    Set-based whatever the number of readers. PostgreSQL: one statement, the pairs computed once
    and materialized, the deliveries inserted RETURNING their ids, joined back to the pairs by
    hash (robust to a ledger whose statistics predate the fan-out). SQLite, where a WITH holds no
    INSERT: two statements, the second finding the new deliveries by id (sequence ids: every row
    the first adds is above the highest id visible before it, and planners of one digest are
    serialized, so no one else adds to it meanwhile).
    """
    pairs_sq = pairs.subquery()
    unplanned = ~exists(
        select(literal(1)).where(
            Delivery.digest_id == digest_id, Delivery.subscriber_id == pairs_sq.c[0]
        )
    )
    todo = select(pairs_sq.c[0].label("reader"), pairs_sq.c[1].label("post")).where(unplanned)
    columns = ["digest_id", "subscriber_id", "status", "attempts", "last_error", "created_at"]

    def deliveries_of(
        readers: ColumnElement[int],
    ) -> Select[int, int, str, int, str, datetime]:
        return (
            select(
                literal(digest_id),
                readers,
                literal(DeliveryStatus.PENDING.value),
                literal(0),
                literal(""),
                literal(now, type_=Delivery.created_at.type),
            )
            .group_by(readers)
            .order_by(readers)
        )

    if session.get_bind().dialect.name == "postgresql":
        todo_cte = todo.distinct().cte("todo").prefix_with("MATERIALIZED")
        fresh = (
            postgresql.insert(_deliveries)
            .from_select(columns, deliveries_of(todo_cte.c.reader))
            .returning(Delivery.id, Delivery.subscriber_id)
            .cte("fresh")
        )
        carried = (
            postgresql.insert(delivery_posts)
            .from_select(
                ["delivery_id", "post_id"],
                select(fresh.c.id, todo_cte.c.post)
                .join(todo_cte, todo_cte.c.reader == fresh.c.subscriber_id)
                .order_by(fresh.c.id, todo_cte.c.post),
            )
            .cte("carried")  # no RETURNING: PostgreSQL runs a WITH's INSERT whole regardless
        )
        added = session.scalar(select(func.count()).select_from(fresh).add_cte(carried))
        return int(added or 0)

    todo_sq = todo.subquery()
    highest = session.scalar(select(func.max(Delivery.id))) or 0
    # preserve_rowcount: otherwise the count is gone with the cursor (psycopg reports -1).
    inserted = session.execute(
        _insert(session, _deliveries).from_select(columns, deliveries_of(todo_sq.c.reader)),
        execution_options={"preserve_rowcount": True},
    )
    added = int(getattr(inserted, "rowcount", 0) or 0)
    if added:
        # From `pairs`, not `todo`: every reader of `todo` now has a delivery in this digest.
        fresh_row = aliased(Delivery)
        session.execute(
            _insert(session, delivery_posts).from_select(
                ["delivery_id", "post_id"],
                select(fresh_row.id, pairs_sq.c[1])
                .join(pairs_sq, pairs_sq.c[0] == fresh_row.subscriber_id)
                .where(fresh_row.digest_id == digest_id, fresh_row.id > highest)
                .distinct()
                .order_by(fresh_row.id, pairs_sq.c[1]),
            )
        )
    return added


def plan_post_alerts(
    session: Session, post_id: int, *, now: datetime | None = None
) -> PlanResult | None:
    """Immediate alerts for one post: every reader with an immediate subscription to any of its
    topics, once each, unless they have the post already. None when the post is not mailable."""
    now = now or utcnow()
    _serialize(session)
    post = session.get(Post, post_id)
    if (
        post is None
        or post.status is not PostStatus.PUBLISHED
        or not post.notify
        or post.released_at is None
    ):
        return None
    digest_id = _digest_for(session, DigestKind.IMMEDIATE, f"post:{post_id}", subject=post.title)
    pairs = (
        select(Subscriber.id, post_topics.c.post_id)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(post_topics, post_topics.c.topic_id == Subscription.topic_id)
        .where(
            post_topics.c.post_id == post_id,
            Subscription.frequency == Frequency.IMMEDIATE,
            _subscribed_before(post.released_at),
            _mailable(now),
            ~_already_has(Subscriber.id, post_topics.c.post_id, [post_id]),
        )
    )
    _drop_empty(session, digest_id)
    planned = _fill(session, digest_id, now, pairs)
    refresh_digest_status(session, digest_id)
    return PlanResult(digest_id, planned)


def _period(kind: DigestKind, now: datetime, zone: str, hour: int, weekday: str) -> Period:
    if kind is DigestKind.DAILY:
        return latest_daily(now, zone, hour=hour)
    return latest_weekly(now, zone, hour=hour, weekday=weekday)


@dataclass(frozen=True, slots=True)
class ZonePeriod:
    """One time zone's latest ended period, and the earliest instant any of its readers' windows
    may open (a lower bound: marks only widen a window backwards, and not past the stale limit)."""

    zone: str
    period: Period
    earliest: datetime

    def holds(self, released_at: datetime) -> bool:
        """A post released at `released_at` may be in some reader's window of this zone."""
        return self.earliest < released_at <= self.period.end


@dataclass(frozen=True, slots=True)
class DueRun:
    """One digest run to plan: its run key, the zones whose period has that key and some post in
    its windows, and the ids of every post released in any of those windows."""

    key: str
    zones: list[ZonePeriod]
    post_ids: list[int]


def _windows(zones: list[ZonePeriod]) -> Subquery:
    """The (zone, opens, closes, stale) rows of `zones` as a derived table."""
    rows = [
        select(
            literal(z.zone, type_=Subscriber.timezone.type).label("zone"),
            literal(z.period.start, type_=Post.released_at.type).label("opens"),
            literal(z.period.end, type_=Post.released_at.type).label("closes"),
            literal(z.period.start - STALE_MARK, type_=Post.released_at.type).label("stale"),
        )
        for z in zones
    ]
    return (rows[0] if len(rows) == 1 else union_all(*rows)).subquery("windows")


def _mark_join(frequency: Frequency) -> ColumnElement[bool]:
    """The ON clause that outer-joins a reader's (the statement's Subscriber) mark of `frequency`."""
    return and_(DigestMark.subscriber_id == Subscriber.id, DigestMark.frequency == frequency)


def _window_start(
    mark: SQLColumnExpression[datetime], windows: Subquery
) -> ColumnElement[datetime]:
    """Where a reader's window opens: at their mark, unless it is missing or stale; else at their
    zone's period start."""
    return case((mark > windows.c.stale, mark), else_=windows.c.opens)


def _move_marks(
    session: Session,
    frequency: Frequency,
    windows: Subquery,
    to: ColumnElement[datetime],
    readers: list[ColumnElement[bool]],
) -> None:
    """Move the marks of `frequency` of the `readers` (conditions on Subscriber) in a zone of
    `windows` up to `to` (a column of `windows`), never back: one upsert for all of them.

    Readers whose mark is there already are left out before the upsert, not only by its WHERE:
    PostgreSQL locks every row an ON CONFLICT finds, updated or not.
    """
    already = exists(
        select(literal(1)).where(
            _marks.c.subscriber_id == Subscriber.id,
            _marks.c.frequency == frequency,
            _marks.c.through >= to,
        )
    )
    source = (
        select(Subscriber.id, literal(frequency, type_=_marks.c.frequency.type), to)
        .join(windows, windows.c.zone == Subscriber.timezone)
        .where(*readers, ~already)
    )
    stmt = _insert(session, _marks).from_select(["subscriber_id", "frequency", "through"], source)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[_marks.c.subscriber_id, _marks.c.frequency],
            set_={"through": stmt.excluded.through},
            where=_marks.c.through < stmt.excluded.through,
        )
    )


def _advance_marks(
    session: Session,
    kind: DigestKind,
    windows: Subquery,
    *,
    digest_id: int,
    planned_above: int,
    now: datetime,
) -> None:
    """After a run is planned, move the marks of the mailable readers it considered.

    A mailable reader of a zone in `windows` with a topic at this frequency has had their window up
    to the period end: their mark goes there (also with nothing new, so a later window cannot
    reopen this one), never back. Not so a reader who had a delivery in this digest before this
    run (id at most `planned_above`): planned in an earlier tick (their mark is there already), or
    in another zone's period of the same date before moving to a zone behind, in which case their
    mark stays where it is and the next period's window reaches back to it.
    """
    frequency = Frequency(kind.value)
    planned_before = exists(
        select(literal(1)).where(
            Delivery.digest_id == digest_id,
            Delivery.subscriber_id == Subscriber.id,
            Delivery.id <= planned_above,
        )
    )
    readers = [_mailable(now), _has_topics(frequency), ~planned_before]
    _move_marks(session, frequency, windows, windows.c.closes, readers)


def _forfeit_paused(
    session: Session, kind: DigestKind, windows: Subquery, *, now: datetime
) -> None:
    """A paused reader forfeits what came before the latest period: their mark moves up to its
    start, so when the pause ends they get that period's posts (as a reader without a mark
    would), not everything since their last digest."""
    frequency = Frequency(kind.value)
    readers = [
        Subscriber.status == SubscriberStatus.ACTIVE,
        Subscriber.paused_until > now,
        _has_topics(frequency),
    ]
    _move_marks(session, frequency, windows, windows.c.opens, readers)


def _has_topics(frequency: Frequency) -> ColumnElement[bool]:
    """The reader (the statement's Subscriber) has a topic at `frequency`."""
    return exists(
        select(literal(1)).where(
            Subscription.subscriber_id == Subscriber.id, Subscription.frequency == frequency
        )
    )


class PeriodicPlanner:
    """One tick of daily or weekly planning, in named steps:

    1. `due_periods`: each time zone's latest ended period, grouped by run key, keeping the runs
       with a post released in some window (one statement for the zones, one for the posts);
    2. `reader_windows`: a run's zones as a small derived table (zone, opens, closes, stale) that
       the statements join readers to by time zone;
    3. `plan`: one delivery per reader with something new in their window, with its posts
       (`_fill`), unless every reader of the run is planned or marked already;
    4. `advance_marks`: each considered reader's mark moves to the period end (paused readers'
       to its start), in the same transaction.

    `run` does them in order for every due run and returns one PlanResult per run planned.
    """

    def __init__(
        self,
        session: Session,
        kind: DigestKind,
        *,
        now: datetime,
        hour: int = 7,
        weekday: str = "monday",
    ) -> None:
        self.session = session
        self.kind = kind
        self.frequency = Frequency(kind.value)
        self.now = now
        self.hour = hour
        self.weekday = weekday

    def run(self) -> list[PlanResult]:
        """Every due run of this tick, planned; serialized with other planners."""
        _serialize(self.session)
        if self.session.get_bind().dialect.name == "postgresql":
            # These statements join every reader with the window's posts and the ledger rows a
            # previous run key of this very transaction has just written, which the statistics
            # do not know yet: PostgreSQL then picks nested loops that take minutes from the
            # second day on (bench/digest.py, "the next day"). Hash joins are right for
            # set-wide planning.
            self.session.execute(text("SET LOCAL enable_nestloop = off"))
        return [self.plan(run) for run in self.due_periods()]

    def due_periods(self) -> list[DueRun]:
        """The runs of this tick, by run key: zones whose latest periods share a key (the same
        local date) are planned together; a run with no post released in any of its readers'
        windows is left out before any reader is read."""
        mark = DigestMark.through
        zones = self.session.execute(
            select(Subscriber.timezone, func.min(mark))
            .outerjoin(DigestMark, _mark_join(self.frequency))
            .where(Subscriber.status == SubscriberStatus.ACTIVE, _has_topics(self.frequency))
            .group_by(Subscriber.timezone)
        ).all()
        periods: list[ZonePeriod] = []
        for zone, lowest in sorted(zones):
            period = _period(self.kind, self.now, zone, self.hour, self.weekday)
            earliest = period.start
            if lowest is not None:
                earliest = min(period.start, max(lowest, period.start - STALE_MARK))
            periods.append(ZonePeriod(zone, period, earliest))
        if not periods:
            return []
        # The posts of every window at once: a few rows, read in one statement.
        released = [
            (post_id, at)
            for post_id, at in self.session.execute(
                select(Post.id, Post.released_at).where(
                    _released(min(z.earliest for z in periods), max(z.period.end for z in periods))
                )
            )
            if at is not None
        ]
        by_key: dict[str, list[ZonePeriod]] = {}
        for z in periods:
            by_key.setdefault(z.period.key, []).append(z)
        runs = []
        for key in sorted(by_key):
            due = [z for z in by_key[key] if any(z.holds(at) for _, at in released)]
            if due:  # else nothing new in any window of this run: no digest, no email
                post_ids = sorted({pid for pid, at in released if any(z.holds(at) for z in due)})
                runs.append(DueRun(key, due, post_ids))
        return runs

    def reader_windows(self, run: DueRun) -> Subquery:
        """The run's zones as a derived table (zone, opens, closes, stale) to join readers to."""
        return _windows(run.zones)

    def plan(self, run: DueRun) -> PlanResult:
        """One run: its digest row, its deliveries, then the marks of the readers it covered."""
        session, frequency, now = self.session, self.frequency, self.now
        mark = DigestMark.through
        digest_id = _digest_for(session, self.kind, run.key)
        windows = self.reader_windows(run)
        pairs = (
            select(Subscriber.id, Post.id)
            .join(windows, windows.c.zone == Subscriber.timezone)
            .outerjoin(DigestMark, _mark_join(frequency))
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(post_topics, post_topics.c.topic_id == Subscription.topic_id)
            .join(Post, Post.id == post_topics.c.post_id)
            .where(
                Subscription.frequency == frequency,
                _mailable(now),
                Post.id.in_(run.post_ids),
                Post.released_at > Subscription.created_at,  # new readers: new posts only
                Post.released_at > _window_start(mark, windows),
                Post.released_at <= windows.c.closes,
                ~_already_has(Subscriber.id, Post.id, run.post_ids),
            )
        )
        _drop_empty(session, digest_id)
        planned = 0
        if self._waiting(digest_id, windows):
            # Deliveries above this id are this run's (planners are serialized).
            planned_above = session.scalar(select(func.max(Delivery.id))) or 0
            planned = _fill(session, digest_id, now, pairs)
            self.advance_marks(windows, digest_id=digest_id, planned_above=planned_above)
        _forfeit_paused(session, self.kind, windows, now=now)
        refresh_digest_status(session, digest_id)
        return PlanResult(digest_id, planned)

    def advance_marks(self, windows: Subquery, *, digest_id: int, planned_above: int) -> None:
        """The considered readers' marks to the period end (`_advance_marks`)."""
        _advance_marks(
            self.session,
            self.kind,
            windows,
            digest_id=digest_id,
            planned_above=planned_above,
            now=self.now,
        )

    def _waiting(self, digest_id: int, windows: Subquery) -> bool:
        """Some mailable reader of the run has neither a delivery in it nor a mark at its end.

        A tick after the run was planned finds (by the unique key's index) that every reader of
        it has one or the other, and stops there: no post pairs are formed or checked, no mark
        is written.
        """
        mark = DigestMark.through
        waiting = (
            select(literal(1))
            .select_from(Subscriber)
            .join(windows, windows.c.zone == Subscriber.timezone)
            .outerjoin(DigestMark, _mark_join(self.frequency))
            .where(
                _mailable(self.now),
                or_(mark.is_(None), mark < windows.c.closes),
                _has_topics(self.frequency),
                ~exists(
                    select(literal(1)).where(
                        Delivery.digest_id == digest_id, Delivery.subscriber_id == Subscriber.id
                    )
                ),
            )
            .limit(1)
        )
        return self.session.scalar(waiting) is not None


def plan_periodic(
    session: Session,
    kind: DigestKind,
    *,
    now: datetime | None = None,
    hour: int = 7,
    weekday: str = "monday",
) -> list[PlanResult]:
    """Daily or weekly digests for every time zone whose period has ended: one email per reader
    per period, with the new posts in all their topics of that frequency.

    A reader's window ends with their zone's period and starts where their last one ended (their
    mark; the zone's period start when they have none), so a reader who changes time zone gets
    every post once. Zones whose latest periods share a run key (the same local date) are planned
    together, in one digest and the same few statements; a period with no post released in any
    of its readers' windows is skipped before any reader is read. Returns one result per digest
    run planned. The steps are PeriodicPlanner's.
    """
    return PeriodicPlanner(session, kind, now=now or utcnow(), hour=hour, weekday=weekday).run()


def plan_editorial(session: Session, digest_id: int, *, now: datetime | None = None) -> PlanResult:
    """An editor's digest: the chosen posts to the chosen audience, as they were chosen; each
    reader of topics gets the posts of their topics unless the digest is for everyone."""
    now = now or utcnow()
    _serialize(session)
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None or digest.kind is not DigestKind.EDITORIAL:
        raise ValueError(f"digest {digest_id} is not an editorial digest")
    if digest.status in (DigestStatus.DRAFT, DigestStatus.CANCELLED):
        return PlanResult(digest_id, 0)
    # The same query the editor's confirmed count came from (subscriptions.digests).
    pairs = editorial_pairs(digest.options, now)
    _drop_empty(session, digest_id)
    planned = _fill(session, digest_id, now, pairs)
    refresh_digest_status(session, digest_id)
    return PlanResult(digest_id, planned)


def refresh_digest_status(session: Session, digest_id: int) -> None:
    """Sending while any delivery is pending or claimed, sent (with a finish time) once none is."""
    open_work = session.scalar(
        select(literal(1))
        .where(
            Delivery.digest_id == digest_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.CLAIMED]),
        )
        .limit(1)
    )
    now = utcnow()
    started = func.coalesce(Digest.started_at, now)
    stmt = update(Digest).where(Digest.id == digest_id, Digest.status != DigestStatus.CANCELLED)
    if open_work:
        stmt = stmt.values(started_at=started, status=DigestStatus.SENDING, finished_at=None)
    else:
        finished = func.coalesce(Digest.finished_at, now)
        stmt = stmt.values(started_at=started, status=DigestStatus.SENT, finished_at=finished)
    session.execute(stmt)
