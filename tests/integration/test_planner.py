"""The digest planner (worker/digests/planner.py) on a real database, with a frozen, walked clock.

Posts get controlled `released_at` instants and enter the database when the simulated clock reaches
them, as they would in production; the planner runs at each step of the clock (hourly, and every
15 minutes around each reader's send instant, plus one second before it). Expected deliveries come from
an independent oracle: a reader's digest for local date D is planned at the first step at or after
the first instant their wall clock shows D at the send hour, and carries exactly the posts released
after the previous such instant and up to this one, in their topics of that frequency, minus what
reached them another way. Runs on SQLite, and on PostgreSQL when NEWSLETTER_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import audit, privacy, readers
from subscriptions import digests as editorial_digests
from subscriptions.db import transaction
from subscriptions.errors import CountChanged
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestMark,
    DigestStatus,
    Frequency,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    delivery_posts,
)
from subscriptions.posts import add_post
from subscriptions.settings import Settings
from tests.factories import (
    LONG_AGO,
    add_demo_topics,
    make_settings,
    migrated_sessions,
    subscribed_since,
)
from worker import dispatch
from worker.digests import planner
from worker.digests.jobs import load_jobs

pytestmark = pytest.mark.integration

DAILY, WEEKLY, IMMEDIATE = Frequency.DAILY, Frequency.WEEKLY, Frequency.IMMEDIATE
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# ------------------------------------------------------------------------------------ the oracle


@cache
def send_instant(zone: str, day: date, hour: int) -> datetime:
    """The first instant at which the wall clock in `zone` shows `day` at `hour` or later."""
    target = datetime.combine(day, time(hour))
    tz = ZoneInfo(zone)
    t = datetime.combine(day, time(0), tzinfo=UTC) - timedelta(hours=15)
    while t.astimezone(tz).replace(tzinfo=None) < target:
        t += timedelta(minutes=15)
    return t


def period_date(released: datetime, zone: str, hour: int, weekday: str | None) -> date:
    """The local date of the period whose window holds `released` (weekday: weekly periods)."""
    day = released.astimezone(ZoneInfo(zone)).date()
    if weekday is not None:
        day += timedelta(days=(WEEKDAYS.index(weekday) - day.weekday()) % 7)
    if released > send_instant(zone, day, hour):
        day += timedelta(days=7 if weekday else 1)
    return day


def send_steps(
    zones: Iterable[str], start: datetime, end: datetime, hour: int, weekday: str | None = None
) -> set[datetime]:
    """Around each send instant between start and end: one second before, at, and 15 minutes after."""
    steps: set[datetime] = set()
    for zone in zones:
        day = start.astimezone(ZoneInfo(zone)).date() - timedelta(days=1)
        while day <= end.date() + timedelta(days=1):
            if weekday is None or day.weekday() == WEEKDAYS.index(weekday):
                s = send_instant(zone, day, hour)
                for t in (s - timedelta(seconds=1), s, s + timedelta(minutes=15)):
                    if start <= t <= end:
                        steps.add(t)
            day += timedelta(days=1)
    return steps


def every(start: datetime, end: datetime, step: timedelta) -> set[datetime]:
    out, t = set(), start
    while t <= end:
        out.add(t)
        t += step
    return out


# ------------------------------------------------------------------------------------ the world


@dataclass(frozen=True, slots=True)
class Planned:
    """One delivery as the ledger holds it."""

    reader: str
    kind: str
    key: str
    planned_at: datetime
    posts: frozenset[str]
    status: str = "pending"

    def order(self) -> tuple[object, ...]:
        return (self.reader, self.kind, self.key, self.planned_at, sorted(self.posts), self.status)


@dataclass(frozen=True, slots=True)
class Reader:
    email: str
    zone: str
    subs: dict[str, Frequency]


@dataclass(frozen=True, slots=True)
class PostSpec:
    title: str
    topics: tuple[str, ...]
    released: datetime


@dataclass
class World:
    """A migrated database with the demo topics, and helpers to fill and read it."""

    sessions: sessionmaker[Session]
    readers: dict[str, int] = field(default_factory=dict)
    posts: dict[str, int] = field(default_factory=dict)

    def reader(
        self,
        email: str,
        zone: str,
        subs: dict[str, Frequency],
        *,
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
        since: datetime = LONG_AGO,
    ) -> int:
        with transaction(self.sessions) as session:
            topics = {k: v for k, v in session.execute(select(Topic.slug, Topic.id))}
            reader = Subscriber(email=email, status=status, timezone=zone)
            session.add(reader)
            session.flush()
            for slug, frequency in subs.items():
                session.add(
                    Subscription(
                        subscriber_id=reader.id,
                        topic_id=topics[slug],
                        frequency=frequency,
                        created_at=since,
                    )
                )
            self.readers[email] = reader.id
            return reader.id

    def post(self, spec: PostSpec, *, alerts: bool = False) -> int:
        """Store a post released at `spec.released`; plan its alerts then, if asked."""
        with transaction(self.sessions) as session:
            info = add_post(
                session=session,
                title=spec.title,
                link=f"https://example.org/posts/{spec.title.lower().replace(' ', '-')}",
                topics=list(spec.topics),
                summary=f"<p>About {spec.title}.</p>",
            )
            post = session.get(Post, info.id)
            assert post is not None
            post.released_at = spec.released
            post.published_at = spec.released
            self.posts[spec.title] = info.id
        if alerts:
            with transaction(self.sessions) as session:
                planner.plan_post_alerts(session, info.id, now=spec.released)
        return info.id

    def plan(
        self,
        now: datetime,
        kinds: Iterable[DigestKind] = (DigestKind.DAILY,),
        *,
        hour: int = 7,
        weekday: str = "monday",
    ) -> list[planner.PlanResult]:
        results = []
        with transaction(self.sessions) as session:
            for kind in kinds:
                results += planner.plan_periodic(session, kind, now=now, hour=hour, weekday=weekday)
        return results

    def run(
        self,
        steps: Iterable[datetime],
        posts: Iterable[PostSpec],
        kinds: Iterable[DigestKind] = (DigestKind.DAILY,),
        *,
        hour: int = 7,
        weekday: str = "monday",
        alerts: bool = False,
        before_step: Callable[[datetime], None] | None = None,
    ) -> None:
        """Walk the clock: at each instant store the posts released by then, then plan."""
        waiting = sorted(posts, key=lambda p: p.released)
        kinds = list(kinds)
        for now in sorted(set(steps)):
            while waiting and waiting[0].released <= now:
                self.post(waiting.pop(0), alerts=alerts)
            if before_step is not None:
                before_step(now)
            self.plan(now, kinds, hour=hour, weekday=weekday)

    def planned(self) -> list[Planned]:
        """Every delivery: reader, digest kind and run key, when planned, which posts."""
        with self.sessions() as session:
            emails = {k: v for k, v in session.execute(select(Subscriber.id, Subscriber.email))}
            titles = {k: v for k, v in session.execute(select(Post.id, Post.title))}
            carried: dict[int, set[str]] = {}
            for delivery_id, post_id in session.execute(
                select(delivery_posts.c.delivery_id, delivery_posts.c.post_id)
            ):
                carried.setdefault(delivery_id, set()).add(titles[post_id])
            rows = session.execute(
                select(
                    Delivery.id,
                    Delivery.subscriber_id,
                    Digest.kind,
                    Digest.run_key,
                    Delivery.created_at,
                    Delivery.status,
                ).join(Digest, Digest.id == Delivery.digest_id)
            ).all()
        return sorted(
            (
                Planned(
                    emails[reader],
                    kind.value,
                    key or "",
                    created,
                    frozenset(carried.get(delivery_id, ())),
                    status.value,
                )
                for delivery_id, reader, kind, key, created, status in rows
            ),
            key=Planned.order,
        )

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Default digest settings: 07:00 local, weekly on Monday."""
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
def world(database_url: str) -> World:
    sessions = migrated_sessions(database_url)
    with transaction(sessions) as session:
        add_demo_topics(session)
    return World(sessions)


def expected_periodic(
    readers_: Iterable[Reader],
    posts: Iterable[PostSpec],
    steps: Iterable[datetime],
    *,
    frequency: Frequency = DAILY,
    hour: int = 7,
    weekday: str = "monday",
) -> list[Planned]:
    """What the oracle says the ledger holds after walking `steps` (no other frequencies)."""
    ordered = sorted(set(steps))
    kind = frequency.value
    week = weekday if frequency is WEEKLY else None
    out: dict[tuple[str, date], set[str]] = {}
    for reader in readers_:
        topics = {slug for slug, f in reader.subs.items() if f is frequency}
        for post in posts:
            if topics & set(post.topics):
                day = period_date(post.released, reader.zone, hour, week)
                out.setdefault((reader.email, day), set()).add(post.title)
    zones = {r.email: r.zone for r in readers_}
    result = []
    for (email, day), titles in out.items():
        due = send_instant(zones[email], day, hour)
        planned_at = next((t for t in ordered if t >= due), None)
        if planned_at is not None:
            result.append(
                Planned(email, kind, f"{kind}:{day.isoformat()}", planned_at, frozenset(titles))
            )
    return sorted(result, key=Planned.order)


def spread_posts(
    start: datetime,
    end: datetime,
    every_: timedelta,
    topics: list[tuple[str, ...]],
    prefix: str = "Post",
) -> list[PostSpec]:
    """Posts at a regular, deliberately odd interval, cycling through `topics`."""
    out, t, n = [], start, 0
    while t <= end:
        out.append(PostSpec(f"{prefix} {n}", topics[n % len(topics)], t))
        t += every_
        n += 1
    return out


# ------------------------------------------------------------------------------------ time zones


def test_daily_digest_at_each_readers_local_hour(world: World) -> None:
    """Readers in UTC, Mexico City, Kolkata and Auckland each get one daily email per local date at
    07:00 their time, with exactly the posts of their topics released in that day's window."""
    readers_ = [
        Reader("utc@example.org", "UTC", {"mexico": DAILY, "migration": DAILY}),
        Reader(
            "cdmx@example.org", "America/Mexico_City", {"mexico": DAILY, "border-security": DAILY}
        ),
        Reader("kolkata@example.org", "Asia/Kolkata", {"migration": DAILY}),
        Reader("auckland@example.org", "Pacific/Auckland", {"mexico": DAILY, "refugees": DAILY}),
        # Subscribed to a topic with no posts in these days: never an email.
        Reader("quiet@example.org", "UTC", {"refugees": DAILY}),
    ]
    for r in readers_:
        world.reader(r.email, r.zone, r.subs)
    start, end = utc(2024, 6, 10, 0), utc(2024, 6, 12, 23)
    posts = spread_posts(
        start + timedelta(minutes=20),
        end,
        timedelta(hours=4, minutes=50),
        [("mexico",), ("migration",), ("border-security", "mexico"), ("migration", "mexico")],
    )
    posts += [
        # Exactly at the UTC send instant: in that day's digest; one second later: the next day's.
        PostSpec("At seven", ("mexico",), utc(2024, 6, 11, 7)),
        PostSpec("Just after seven", ("mexico",), utc(2024, 6, 11, 7, 0, 1)),
        # Between Auckland's send (19:00 UTC) and UTC midnight.
        PostSpec("Evening", ("mexico",), utc(2024, 6, 11, 20)),
    ]
    steps = every(start, end, timedelta(hours=3)) | send_steps(
        [r.zone for r in readers_], start, end, 7
    )
    world.run(steps, posts)

    expected = expected_periodic(readers_, posts, steps)
    assert world.planned() == expected
    # Sanity of the oracle itself: every zone got mail, each local date at most once.
    assert {p.reader for p in expected} == {r.email for r in readers_} - {"quiet@example.org"}
    keys = [(p.reader, p.key) for p in expected]
    assert len(keys) == len(set(keys))
    at_seven = [p for p in expected if p.reader == "utc@example.org" and "At seven" in p.posts]
    assert [p.key for p in at_seven] == ["daily:2024-06-11"]
    # One digest row per (kind, run key), shared by the zones whose local date it is.
    with world.sessions() as session:
        run_keys = session.scalars(
            select(Digest.run_key).where(Digest.kind == DigestKind.DAILY)
        ).all()
    assert len(run_keys) == len(set(run_keys))


def test_one_email_groups_a_readers_topics(world: World) -> None:
    """The daily email of a reader with three daily topics is one delivery, its posts grouped by
    topic name, a post in two of their topics shown once."""
    world.reader(
        "many@example.org", "UTC", {"mexico": DAILY, "migration": DAILY, "refugees": DAILY}
    )
    for spec in [
        PostSpec("Wall", ("border-security",), utc(2024, 6, 10, 9)),
        PostSpec("Trade", ("mexico",), utc(2024, 6, 10, 10)),
        PostSpec("Camps", ("refugees",), utc(2024, 6, 10, 11)),
        PostSpec("Caravan", ("mexico", "migration"), utc(2024, 6, 10, 12)),
        PostSpec("Visas", ("migration",), utc(2024, 6, 10, 13)),
    ]:
        world.post(spec)
    world.plan(utc(2024, 6, 11, 7))
    [planned] = world.planned()
    assert planned.posts == {"Trade", "Camps", "Caravan", "Visas"}
    with world.sessions() as session:
        ids = list(session.scalars(select(Delivery.id)))
        _, [job] = load_jobs(session, ids)
    grouped = [(g.topic, [p.title for p in g.posts]) for g in job.groups]
    assert grouped == [
        ("Mexico", ["Caravan", "Trade"]),
        ("Migration", ["Visas"]),
        ("Refugees", ["Camps"]),
    ]


# ------------------------------------------------------------------------------------ daylight saving

DST_WALKS = [
    # (zone, first instant, last instant, send hour)
    ("America/New_York", utc(2024, 3, 8, 20), utc(2024, 3, 11, 14), 7),  # spring forward
    ("America/New_York", utc(2024, 11, 1, 20), utc(2024, 11, 4, 14), 7),  # fall back
    ("America/New_York", utc(2024, 3, 8, 20), utc(2024, 3, 11, 14), 2),  # send hour skipped
    ("America/New_York", utc(2024, 11, 1, 20), utc(2024, 11, 4, 14), 1),  # send hour repeated
    ("Europe/London", utc(2024, 3, 29, 12), utc(2024, 4, 1, 9), 7),
    ("Europe/London", utc(2024, 10, 25, 12), utc(2024, 10, 28, 9), 7),
    ("Pacific/Auckland", utc(2024, 4, 4, 22), utc(2024, 4, 7, 21), 7),  # DST ends
    ("Pacific/Auckland", utc(2024, 9, 26, 22), utc(2024, 9, 29, 21), 7),  # DST starts
]


@pytest.mark.parametrize(
    ("zone", "start", "end", "hour"),
    DST_WALKS,
    ids=[f"{z}-{s:%m-%d}-{h:02d}h" for z, s, _, h in DST_WALKS],
)
def test_dst_neither_skips_nor_doubles_a_digest(
    world: World, zone: str, start: datetime, end: datetime, hour: int
) -> None:
    """Across a daylight-saving change, one email per local date, at the local send hour, with
    every post once; Mexico City (no DST since 2022) walks along as a control."""
    readers_ = [
        Reader("dst@example.org", zone, {"mexico": DAILY}),
        Reader("control@example.org", "America/Mexico_City", {"mexico": DAILY}),
    ]
    for r in readers_:
        world.reader(r.email, r.zone, r.subs)
    posts = spread_posts(
        start - timedelta(hours=20), end, timedelta(hours=2, minutes=35), [("mexico",)]
    )
    steps = every(start, end, timedelta(hours=3)) | send_steps(
        [zone, readers_[1].zone], start, end, hour
    )
    world.run(steps, posts, hour=hour)

    planned = world.planned()
    assert planned == expected_periodic(readers_, posts, steps, hour=hour)
    mine = [p for p in planned if p.reader == "dst@example.org"]
    days = [date.fromisoformat(p.key.split(":")[1]) for p in mine]
    assert days == [days[0] + timedelta(days=n) for n in range(len(days))]  # no date skipped
    assert len(mine) >= 3
    carried = [t for p in planned if p.reader == "dst@example.org" for t in p.posts]
    assert len(carried) == len(set(carried))  # no post twice
    # Every post released after the first window opened and by the last send went out.
    first_open = send_instant(zone, days[0] - timedelta(days=1), hour)
    last_send = send_instant(zone, days[-1], hour)
    assert set(carried) == {p.title for p in posts if first_open < p.released <= last_send}


# ------------------------------------------------------------------------------------ weeks


def test_weekly_digests_across_week_boundaries_and_dst(world: World) -> None:
    """Weekly on Monday 07:00 local over seven weeks holding New York's and Auckland's changes:
    one email per reader per week, a post at Monday 07:00:00 in the week it closes, one a second
    later in the next."""
    readers_ = [
        Reader("ny@example.org", "America/New_York", {"migration": WEEKLY}),
        Reader("akl@example.org", "Pacific/Auckland", {"migration": WEEKLY, "mexico": WEEKLY}),
        Reader("cdmx@example.org", "America/Mexico_City", {"migration": WEEKLY, "mexico": WEEKLY}),
    ]
    for r in readers_:
        world.reader(r.email, r.zone, r.subs)
    start, end = utc(2024, 2, 26, 0), utc(2024, 4, 16, 0)
    posts = spread_posts(start, end, timedelta(hours=17, minutes=10), [("migration",), ("mexico",)])
    for zone, label in (("America/New_York", "NY"), ("Pacific/Auckland", "AKL")):
        for week in (date(2024, 3, 11), date(2024, 4, 8)):
            s = send_instant(zone, week, 7)
            posts += [
                PostSpec(
                    f"{label} {week} sunday late", ("migration",), s - timedelta(hours=7, minutes=1)
                ),
                PostSpec(f"{label} {week} on the dot", ("migration",), s),
                PostSpec(
                    f"{label} {week} one second after", ("migration",), s + timedelta(seconds=1)
                ),
            ]
    steps = send_steps([r.zone for r in readers_], start, end, 7, "monday") | every(
        start, end, timedelta(days=3, hours=5)
    )
    world.run(steps, posts, [DigestKind.WEEKLY])

    planned = world.planned()
    assert planned == expected_periodic(readers_, posts, steps, frequency=WEEKLY)
    ny = {p.key: p.posts for p in planned if p.reader == "ny@example.org"}
    assert "NY 2024-03-11 on the dot" in ny["weekly:2024-03-11"]
    assert "NY 2024-03-11 sunday late" in ny["weekly:2024-03-11"]
    assert "NY 2024-03-11 one second after" in ny["weekly:2024-03-18"]
    weeks = sorted(ny)
    assert weeks == [f"weekly:{date(2024, 2, 26) + timedelta(weeks=n)}" for n in range(8)]


def test_weekly_on_a_configured_day_across_the_new_year(world: World) -> None:
    """NEWSLETTER_WEEKLY_DIGEST_DAY=friday and NEWSLETTER_DIGEST_HOUR=9: the weeks run Friday to
    Friday, across 31 December."""
    readers_ = [
        Reader("utc@example.org", "UTC", {"refugees": WEEKLY}),
        Reader("kol@example.org", "Asia/Kolkata", {"refugees": WEEKLY}),
    ]
    for r in readers_:
        world.reader(r.email, r.zone, r.subs)
    start, end = utc(2024, 12, 20, 12), utc(2025, 1, 11, 0)
    posts = spread_posts(start, end, timedelta(hours=31), [("refugees",)])
    steps = send_steps([r.zone for r in readers_], start, end, 9, "friday") | every(
        start, end, timedelta(days=2)
    )
    world.run(steps, posts, [DigestKind.WEEKLY], hour=9, weekday="friday")
    planned = world.planned()
    assert planned == expected_periodic(
        readers_, posts, steps, frequency=WEEKLY, hour=9, weekday="friday"
    )
    assert sorted({p.key for p in planned}) == [
        "weekly:2024-12-27",
        "weekly:2025-01-03",
        "weekly:2025-01-10",
    ]


# ------------------------------------------------------------------------------------ who gets nothing


def test_pause_and_resume(world: World) -> None:
    """A paused reader gets nothing while paused, alerts included. The planner re-plans the latest
    period at every tick, so the period whose send hour fell inside the pause reaches them when the
    pause ends (not at 07:00 the next day); then one email per day again. A reader who resumes early
    (pause cleared in the preference centre) is treated the same way, from the moment they resume."""
    world.reader("paused@example.org", "UTC", {"mexico": DAILY, "migration": IMMEDIATE})
    world.reader("early@example.org", "UTC", {"mexico": DAILY})
    world.reader("steady@example.org", "UTC", {"mexico": DAILY})
    with transaction(world.sessions) as session:
        for email, until in (
            ("paused@example.org", utc(2024, 6, 12, 12)),
            ("early@example.org", utc(2024, 6, 20)),
        ):
            readers.update_preferences(
                session=session,
                subscriber_id=world.readers[email],
                frequencies={},
                paused_until=until,
            )

    def resume_early(now: datetime) -> None:
        if now == utc(2024, 6, 11, 12):
            with transaction(world.sessions) as session:
                readers.update_preferences(
                    session=session,
                    subscriber_id=world.readers["early@example.org"],
                    frequencies={},
                )

    posts = [PostSpec(f"Day {d} news", ("mexico",), utc(2024, 6, d, 10)) for d in range(9, 15)]
    posts += [PostSpec("Alert while paused", ("migration",), utc(2024, 6, 11, 9))]
    steps = {
        utc(2024, 6, d, h) + delta
        for d in range(10, 16)
        for h, delta in (
            (0, timedelta()),
            (7, -timedelta(seconds=1)),
            (7, timedelta()),
            (12, timedelta()),
            (18, timedelta()),
        )
    }
    world.run(steps, posts, alerts=True, before_step=resume_early)

    def mail(email: str) -> list[tuple[str, datetime, list[str]]]:
        return [
            (p.key, p.planned_at, sorted(p.posts)) for p in world.planned() if p.reader == email
        ]

    assert mail("paused@example.org") == [
        ("daily:2024-06-12", utc(2024, 6, 12, 12), ["Day 11 news"]),  # when the pause ended
        ("daily:2024-06-13", utc(2024, 6, 13, 7), ["Day 12 news"]),
        ("daily:2024-06-14", utc(2024, 6, 14, 7), ["Day 13 news"]),
        ("daily:2024-06-15", utc(2024, 6, 15, 7), ["Day 14 news"]),
    ]
    assert mail("early@example.org") == [
        ("daily:2024-06-11", utc(2024, 6, 11, 12), ["Day 10 news"]),  # when they resumed
        ("daily:2024-06-12", utc(2024, 6, 12, 7), ["Day 11 news"]),
        ("daily:2024-06-13", utc(2024, 6, 13, 7), ["Day 12 news"]),
        ("daily:2024-06-14", utc(2024, 6, 14, 7), ["Day 13 news"]),
        ("daily:2024-06-15", utc(2024, 6, 15, 7), ["Day 14 news"]),
    ]
    assert mail("steady@example.org") == [
        (f"daily:2024-06-{d}", utc(2024, 6, d, 7), [f"Day {d - 1} news"]) for d in range(10, 16)
    ]


def test_unsubscribed_suppressed_and_unconfirmed_readers_get_nothing(world: World) -> None:
    """Alerts, daily and weekly digests skip readers who left, are suppressed or never confirmed."""
    subs = {"mexico": IMMEDIATE, "migration": DAILY, "refugees": WEEKLY}
    world.reader("active@example.org", "UTC", subs)
    left = world.reader("left@example.org", "UTC", subs)
    world.reader("bounced@example.org", "UTC", subs)
    world.reader("pending@example.org", "UTC", subs, status=SubscriberStatus.PENDING)
    with transaction(world.sessions) as session:
        readers.unsubscribe(session=session, subscriber_id=left)
        readers.suppress(session=session, email="bounced@example.org", reason="hard_bounce")
    posts = [
        PostSpec("Alerted", ("mexico",), utc(2024, 6, 10, 9)),
        PostSpec("Daily", ("migration",), utc(2024, 6, 10, 10)),
        PostSpec("Weekly", ("refugees",), utc(2024, 6, 10, 11)),
    ]
    steps = every(utc(2024, 6, 10, 6), utc(2024, 6, 17, 18), timedelta(hours=12))
    world.run(steps, posts, [DigestKind.DAILY, DigestKind.WEEKLY], alerts=True)
    assert {(p.reader, p.kind, *sorted(p.posts)) for p in world.planned()} == {
        ("active@example.org", "immediate", "Alerted"),
        ("active@example.org", "daily", "Daily"),
        ("active@example.org", "weekly", "Weekly"),
    }


def test_no_new_posts_no_email(world: World) -> None:
    """A period without posts in a reader's topics plans nothing for them, and planning it again
    changes nothing."""
    world.reader("reader@example.org", "Asia/Kolkata", {"mexico": DAILY, "refugees": WEEKLY})
    world.post(PostSpec("Elsewhere", ("migration",), utc(2024, 6, 10, 9)))
    for now in (utc(2024, 6, 11, 2), utc(2024, 6, 11, 3), utc(2024, 6, 17, 2)):
        world.plan(now, [DigestKind.DAILY, DigestKind.WEEKLY])
    assert world.planned() == []
    assert world.count(Delivery) == 0


# ------------------------------------------------------------------------------------ once per reader


def test_mixed_frequencies_each_post_reaches_the_reader_once(world: World) -> None:
    """Immediate for Mexico, daily for Migration, weekly for Refugees, over a week in Auckland:
    alerts as posts come, one daily and one weekly email, and a post in two of those topics only in
    the first email that could carry it."""
    world.reader(
        "mixed@example.org",
        "Pacific/Auckland",
        {"mexico": IMMEDIATE, "migration": DAILY, "refugees": WEEKLY},
    )
    # Auckland is UTC+12 in June: 07:00 local is 19:00 UTC the day before; Monday the 10th local
    # is the weekly send (Sunday the 9th, 19:00 UTC); the next is Monday the 17th.
    posts = [
        PostSpec("M", ("mexico",), utc(2024, 6, 10, 1)),
        PostSpec("MG", ("mexico", "migration"), utc(2024, 6, 10, 2)),
        PostSpec("G", ("migration",), utc(2024, 6, 10, 3)),
        PostSpec("GR", ("migration", "refugees"), utc(2024, 6, 10, 4)),
        PostSpec("R", ("refugees",), utc(2024, 6, 10, 5)),
        PostSpec("MR", ("mexico", "refugees"), utc(2024, 6, 12, 1)),
        PostSpec("MGR", ("mexico", "migration", "refugees"), utc(2024, 6, 13, 1)),
        PostSpec("R2", ("refugees",), utc(2024, 6, 14, 1)),
        PostSpec("Other", ("border-security",), utc(2024, 6, 14, 2)),
    ]
    steps = every(utc(2024, 6, 9, 20), utc(2024, 6, 16, 20), timedelta(hours=6))
    world.run(steps, posts, [DigestKind.DAILY, DigestKind.WEEKLY], alerts=True)
    got = sorted((p.kind, p.key, tuple(sorted(p.posts))) for p in world.planned())
    assert got == sorted(
        [
            ("daily", "daily:2024-06-11", ("G", "GR")),
            ("immediate", f"post:{world.posts['M']}", ("M",)),
            ("immediate", f"post:{world.posts['MG']}", ("MG",)),
            ("immediate", f"post:{world.posts['MGR']}", ("MGR",)),
            ("immediate", f"post:{world.posts['MR']}", ("MR",)),
            ("weekly", "weekly:2024-06-17", ("R", "R2")),
        ]
    )


@pytest.mark.parametrize(
    ("first", "second", "kinds", "shown_under"),
    [
        (IMMEDIATE, IMMEDIATE, ["immediate"], "Border Security"),
        (DAILY, DAILY, ["daily"], "Border Security"),
        (DAILY, WEEKLY, ["daily"], "Border Security"),
        (WEEKLY, DAILY, ["daily"], "Mexico"),
        (IMMEDIATE, WEEKLY, ["immediate"], "Border Security"),
        (WEEKLY, WEEKLY, ["weekly"], "Border Security"),
    ],
)
def test_a_post_in_two_topics_goes_once(
    world: World, first: Frequency, second: Frequency, kinds: list[str], shown_under: str
) -> None:
    """Subscribed to both topics of a post, at any mix of frequencies: the post arrives once, in
    the earliest email that can carry it, shown under one topic."""
    world.reader("both@example.org", "UTC", {"border-security": first, "mexico": second})
    world.reader("one@example.org", "UTC", {"mexico": second})
    steps = every(utc(2024, 6, 9, 12), utc(2024, 6, 17, 12), timedelta(hours=12))
    spec = PostSpec("Border wall", ("border-security", "mexico"), utc(2024, 6, 10, 9))
    world.run(steps, [spec], [DigestKind.DAILY, DigestKind.WEEKLY], alerts=True)
    mine = [p for p in world.planned() if p.reader == "both@example.org"]
    assert [p.kind for p in mine] == kinds
    assert [p.posts for p in mine] == [{"Border wall"}]
    with world.sessions() as session:
        ids = list(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.subscriber_id == world.readers["both@example.org"]
                )
            )
        )
        _, [job] = load_jobs(session, ids)
    # Under the first (by name) of its topics that brought it in this email.
    assert [(g.topic, len(g.posts)) for g in job.groups] == [(shown_under, 1)]


def test_alert_not_repeated_in_digest_and_digest_post_not_alerted(
    world: World, settings: Settings
) -> None:
    """An alerted post stays out of the same reader's digest; a post that went out in a digest is
    not alerted later when its alert was planned late (the scheduler's catch-up)."""
    world.reader("r@example.org", "UTC", {"mexico": IMMEDIATE, "migration": DAILY})
    world.post(PostSpec("Alerted first", ("mexico", "migration"), utc(2024, 6, 10, 9)), alerts=True)
    late = world.post(PostSpec("Digest first", ("mexico", "migration"), utc(2024, 6, 10, 10)))
    now = utc(2024, 6, 11, 7)
    with transaction(world.sessions) as session:
        dispatch.plan_due(session, settings, now=now)  # daily first, then the missed alert
    got = sorted((p.kind, tuple(sorted(p.posts))) for p in world.planned())
    assert got == [("daily", ("Digest first",)), ("immediate", ("Alerted first",))]
    with world.sessions() as session:
        # The late alert's run exists (so it is not retried forever) but mails nobody.
        digest = session.scalar(select(Digest).where(Digest.run_key == f"post:{late}"))
        assert digest is not None and digest.status is DigestStatus.SENT


# ------------------------------------------------------------------------------------ crashes


def _readers_in_four_zones(world: World) -> list[Reader]:
    readers_ = [
        Reader(f"{zone.split('/')[-1].lower()}-{n}@example.org", zone, {"mexico": DAILY})
        for zone in ("UTC", "America/Mexico_City", "Asia/Kolkata", "Pacific/Auckland")
        for n in range(3)
    ]
    for r in readers_:
        world.reader(r.email, r.zone, r.subs)
    for n in range(4):
        world.post(PostSpec(f"News {n}", ("mexico",), utc(2024, 6, 10, 20 + n)))
    return readers_


NOW = utc(2024, 6, 11, 20)  # the four zones have all planned a period holding the news


def test_rerun_after_a_crash_inside_the_planning_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planner that dies in the middle (after some zones' statements) leaves nothing; the rerun
    plans everything once."""
    readers_ = _readers_in_four_zones(world)
    real = planner.latest_daily

    def crash_in_kolkata(now: datetime, zone: str, *, hour: int) -> Any:
        if zone == "Asia/Kolkata":
            raise RuntimeError("worker killed")
        return real(now, zone, hour=hour)

    monkeypatch.setattr(planner, "latest_daily", crash_in_kolkata)
    with pytest.raises(RuntimeError, match="worker killed"):
        world.plan(NOW)
    assert world.count(Delivery) == 0
    assert world.count(Digest) == 0
    monkeypatch.setattr(planner, "latest_daily", real)
    world.plan(NOW)
    world.plan(NOW + timedelta(minutes=1))
    planned = world.planned()
    assert sorted(p.reader for p in planned) == sorted(r.email for r in readers_)
    assert {p.posts for p in planned} == {frozenset(f"News {n}" for n in range(4))}


def test_rerun_after_a_partly_committed_plan(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if some runs' deliveries were committed before the crash (a planner that commits per
    run key), the rerun keeps them as they are and adds only the missing ones."""
    readers_ = _readers_in_four_zones(world)
    real_fill = planner._fill
    calls = 0

    def commit_then_crash(session: Session, *args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            # daily:2024-06-11 (UTC, Mexico City, Kolkata) made durable; Auckland's
            # daily:2024-06-12 not run.
            session.commit()
            raise RuntimeError("worker killed")
        return real_fill(session, *args)

    monkeypatch.setattr(planner, "_fill", commit_then_crash)
    with pytest.raises(RuntimeError):
        world.plan(NOW)
    before = world.planned()
    assert len(before) == 9
    assert {p.key for p in before} == {"daily:2024-06-11"}
    monkeypatch.setattr(planner, "_fill", real_fill)
    world.plan(NOW)
    after = world.planned()
    assert set(before) <= set(after)
    assert sorted(p.reader for p in after) == sorted(r.email for r in readers_)
    assert {p.posts for p in after} == {frozenset(f"News {n}" for n in range(4))}


def test_a_half_written_delivery_is_completed_or_dropped(world: World) -> None:
    """A delivery row left without its posts (a crash between the two inserts of a plan that was
    not one transaction) gets its posts on the rerun, or is dropped if there are none for it."""
    world.reader("half@example.org", "UTC", {"mexico": DAILY})
    world.reader("empty@example.org", "UTC", {"refugees": DAILY})
    world.post(PostSpec("News", ("mexico",), utc(2024, 6, 10, 9)))
    with transaction(world.sessions) as session:
        digest = Digest(
            kind=DigestKind.DAILY, run_key="daily:2024-06-11", status=DigestStatus.PLANNING
        )
        session.add(digest)
        session.flush()
        for email in ("half@example.org", "empty@example.org"):
            session.add(Delivery(digest_id=digest.id, subscriber_id=world.readers[email]))
    world.plan(utc(2024, 6, 11, 7, 30))
    got = [(p.reader, p.key, p.posts) for p in world.planned()]
    assert got == [("half@example.org", "daily:2024-06-11", {"News"})]


# ------------------------------------------------------------------------------------ concurrency


def _at_once(*jobs: Callable[[], object]) -> list[BaseException]:
    """Run `jobs` in threads released together; the errors they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_two_planners_at_once_plan_each_reader_once(world: World, database_url: str) -> None:
    """Two schedulers (separate connections) plan the same daily run and the same post's alerts at
    the same moment: each reader has exactly one delivery with each post once."""
    topics = ["mexico", "migration", "refugees", "border-security"]
    zones = ["UTC", "America/Mexico_City", "Asia/Kolkata", "Pacific/Auckland"]
    with transaction(world.sessions) as session:
        ids = {k: v for k, v in session.execute(select(Topic.slug, Topic.id))}
        for n in range(240):
            reader = Subscriber(
                email=f"r{n}@example.org", status=SubscriberStatus.ACTIVE, timezone=zones[n % 4]
            )
            session.add(reader)
            session.flush()
            for k, slug in enumerate(topics[: 1 + n % 3]):
                frequency = IMMEDIATE if k == 2 else DAILY
                session.add(
                    Subscription(
                        subscriber_id=reader.id,
                        topic_id=ids[slug],
                        frequency=frequency,
                        created_at=LONG_AGO,
                    )
                )
    for n in range(12):
        world.post(PostSpec(f"News {n}", (topics[n % 2],), utc(2024, 6, 10, 12 + n)))
    alert = world.post(PostSpec("Breaking", ("refugees", "mexico"), utc(2024, 6, 11, 3)))
    other = migrated_sessions(database_url)  # a second engine: a second process's connections

    def plan_with(sessions: sessionmaker[Session], now: datetime) -> Callable[[], object]:
        def job() -> None:
            with transaction(sessions) as session:
                planner.plan_periodic(session, DigestKind.DAILY, now=now)

        return job

    def alerts_with(sessions: sessionmaker[Session]) -> Callable[[], object]:
        def job() -> None:
            with transaction(sessions) as session:
                planner.plan_post_alerts(session, alert, now=utc(2024, 6, 11, 3))

        return job

    assert _at_once(alerts_with(world.sessions), alerts_with(other)) == []
    for now in (utc(2024, 6, 11, 14), utc(2024, 6, 11, 14, 0, 1)):
        assert _at_once(plan_with(world.sessions, now), plan_with(other, now)) == []

    planned = world.planned()
    pairs = [(p.reader, p.kind, p.key) for p in planned]
    assert len(pairs) == len(set(pairs))
    daily = [p for p in planned if p.kind == "daily"]
    assert len(daily) == 240  # every reader has a daily topic with news (mexico or migration)
    per_reader: dict[str, list[str]] = {}
    for p in planned:
        per_reader.setdefault(p.reader, []).extend(p.posts)
    assert all(len(v) == len(set(v)) for v in per_reader.values())
    alerted = {p.reader for p in planned if p.kind == "immediate"}
    assert alerted == {f"r{n}@example.org" for n in range(240) if n % 3 == 2}
    with world.sessions() as session:
        digests = session.execute(select(Digest.kind, Digest.run_key)).all()
    assert len(digests) == len(set(digests))


def test_an_alert_and_a_digest_planned_at_once_carry_the_post_once(
    world: World, database_url: str
) -> None:
    """A post's alert (immediate on one topic) and the daily run (daily on its other topic) planned in
    two overlapping transactions: the reader still gets the post once.

    The alert planner does its work and keeps its transaction open until the daily planner has
    finished (or 1 s has passed), then commits: if the daily planner is not held back meanwhile,
    both checked "has the reader got it already?" before either committed. Planners are serialized
    (PostgreSQL: the planning lock; SQLite: the write lock), so the daily planner waits.
    """
    world.reader("r@example.org", "UTC", {"mexico": IMMEDIATE, "migration": DAILY})
    post = world.post(PostSpec("Both", ("mexico", "migration"), utc(2024, 6, 11, 6, 59)))
    now = utc(2024, 6, 11, 7, 0, 1)
    other = migrated_sessions(database_url)
    alert_planned, daily_done = threading.Event(), threading.Event()

    def alert() -> None:
        with transaction(world.sessions) as session:
            planner.plan_post_alerts(session, post, now=now)
            alert_planned.set()
            daily_done.wait(1)

    def daily() -> None:
        alert_planned.wait(10)
        try:
            with transaction(other) as session:
                planner.plan_periodic(session, DigestKind.DAILY, now=now)
        finally:
            daily_done.set()

    assert _at_once(alert, daily) == []
    carried = [t for p in world.planned() for t in p.posts]
    assert carried == ["Both"]


def test_a_planner_waits_for_a_post_being_released(world: World, database_url: str) -> None:
    """add_post stamps released_at when it writes the row; the commit can come much later (a slow
    feed poll). A planner starting in between must wait for that commit (PostgreSQL: the planning
    lock add_post takes; SQLite: the write lock), or it could plan the period whose window holds the
    post without seeing it, and the readers it planned would never get the post. Then the post
    reaches the reader exactly once."""
    world.reader("r@example.org", "UTC", {"mexico": DAILY})
    other = migrated_sessions(database_url)
    stamped, planned = threading.Event(), threading.Event()
    order: list[str] = []

    def release() -> None:
        with transaction(world.sessions) as session:
            add_post(
                session=session,
                title="Slow commit",
                link="https://example.org/slow",
                topics=["mexico"],
            )
            stamped.set()
            planned.wait(1)  # the rest of a slow poll; the planner must not finish meanwhile
            order.append("post committed")

    def plan() -> None:
        stamped.wait(10)
        with transaction(other) as session:
            planner.plan_periodic(session, DigestKind.DAILY)  # the real clock
        order.append("planned")
        planned.set()

    assert _at_once(release, plan) == []
    assert order == ["post committed", "planned"]
    with world.sessions() as session:
        released = session.scalar(select(Post.released_at))
    assert released is not None
    send = datetime.combine(released.date(), time(7), tzinfo=UTC)
    for now in (send, send + timedelta(days=1), send + timedelta(days=2)):
        world.plan(now + timedelta(minutes=1))
    assert [sorted(p.posts) for p in world.planned()] == [["Slow commit"]]


def test_a_deliverys_posts_go_with_it(world: World) -> None:
    """delivery_posts has no foreign keys (migration 0008); its rows still go with their delivery
    (an erased reader's, by the cascade from the reader) and with their post."""
    for email in ("stays@example.org", "erased@example.org"):
        world.reader(email, "UTC", {"mexico": DAILY})
    world.post(PostSpec("One", ("mexico",), utc(2024, 6, 10, 9)))
    world.post(PostSpec("Two", ("mexico",), utc(2024, 6, 10, 10)))
    world.plan(utc(2024, 6, 11, 7))
    assert world.count(delivery_posts) == 4
    with transaction(world.sessions) as session:
        privacy.erase_reader(session=session, subscriber_id=world.readers["erased@example.org"])
    assert [(p.reader, sorted(p.posts)) for p in world.planned()] == [
        ("stays@example.org", ["One", "Two"])
    ]
    assert world.count(delivery_posts) == 2
    with transaction(world.sessions) as session:
        session.delete(session.get(Post, world.posts["One"]))
    assert [sorted(p.posts) for p in world.planned()] == [["Two"]]
    assert world.count(delivery_posts) == 1


# ------------------------------------------------------------------------------------ changes of time zone


def mover(
    world: World,
    moves: Iterable[tuple[datetime, str, str]],
    *,
    paused_until: datetime | None = None,
) -> Callable[[datetime], None]:
    """A before_step that moves readers through the preference centre: (instant, email, zone).
    `paused_until` is sent with each move, as the form does for a paused reader."""
    plan: dict[datetime, list[tuple[str, str]]] = {}
    for at, email, zone in moves:
        plan.setdefault(at, []).append((email, zone))

    def move(now: datetime) -> None:
        for email, zone in plan.pop(now, []):
            with transaction(world.sessions) as session:
                readers.update_preferences(
                    session=session,
                    subscriber_id=world.readers[email],
                    frequencies={},
                    timezone=zone,
                    paused_until=paused_until,
                )

    return move


def carried_by(world: World, email: str) -> list[str]:
    """Every post title the reader's deliveries carry, sorted, repeats kept."""
    return sorted(t for p in world.planned() if p.reader == email for t in p.posts)


def mail_of(world: World, email: str) -> list[tuple[str, datetime, list[str]]]:
    """(run key, planned at, posts) of each of the reader's deliveries."""
    return [(p.key, p.planned_at, sorted(p.posts)) for p in world.planned() if p.reader == email]


def test_a_reader_who_changes_time_zone_loses_no_posts(world: World) -> None:
    """Kolkata (07:00 = 01:30 UTC) to Mexico City (07:00 = 13:00 UTC) on the same date: Mexico
    City's daily:2024-06-11 finds the reader's Kolkata delivery of that date, so their mark stays
    at Kolkata's 01:30 and the next window (daily:2024-06-12) reaches back to it."""
    reader = world.reader("mover@example.org", "Asia/Kolkata", {"mexico": DAILY})
    posts = [PostSpec(f"News {h}", ("mexico",), utc(2024, 6, 10, h)) for h in range(0, 24, 3)]
    posts += [PostSpec(f"Next {h}", ("mexico",), utc(2024, 6, 11, h)) for h in range(0, 24, 3)]

    def move(now: datetime) -> None:
        if now == utc(2024, 6, 11, 6):
            with transaction(world.sessions) as session:
                readers.update_preferences(
                    session=session,
                    subscriber_id=reader,
                    frequencies={},
                    timezone="America/Mexico_City",
                )

    steps = every(utc(2024, 6, 10, 0), utc(2024, 6, 13, 0), timedelta(hours=2))
    world.run(steps, posts, before_step=move)
    carried = [t for p in world.planned() for t in p.posts]
    released = [p.title for p in posts if p.released > utc(2024, 6, 9, 1, 30)]
    assert sorted(carried) == sorted(released)
    assert mail_of(world, "mover@example.org") == [
        ("daily:2024-06-10", utc(2024, 6, 10, 2), ["News 0"]),
        (
            "daily:2024-06-11",
            utc(2024, 6, 11, 2),
            sorted([f"News {h}" for h in range(3, 24, 3)] + ["Next 0"]),
        ),
        ("daily:2024-06-12", utc(2024, 6, 12, 14), sorted(f"Next {h}" for h in range(3, 24, 3))),
    ]


def test_a_reader_who_moves_to_a_zone_ahead_gets_each_post_once(world: World) -> None:
    """Mexico City to Kolkata (10.5 hours ahead), once before Mexico City's 07:00 (13:00 UTC) and
    once after it: the first Kolkata window starts where the last Mexico City one ended, neither
    at Kolkata's period start (which would offer posts again) nor later (which would lose some)."""
    zone = "America/Mexico_City"
    for email in ("early@example.org", "late@example.org"):
        world.reader(email, zone, {"mexico": DAILY})
    control = Reader("stays@example.org", zone, {"mexico": DAILY})
    world.reader(control.email, control.zone, control.subs)
    posts = spread_posts(
        utc(2024, 6, 9, 14), utc(2024, 6, 13), timedelta(hours=1, minutes=50), [("mexico",)]
    )
    steps = every(utc(2024, 6, 10), utc(2024, 6, 14), timedelta(hours=1))
    move = mover(
        world,
        [
            (utc(2024, 6, 11, 6), "early@example.org", "Asia/Kolkata"),
            (utc(2024, 6, 11, 14), "late@example.org", "Asia/Kolkata"),
        ],
    )
    world.run(steps, posts, before_step=move)

    everything = sorted(p.title for p in posts)
    assert carried_by(world, "early@example.org") == everything
    assert carried_by(world, "late@example.org") == everything

    def between(opens: datetime, closes: datetime) -> list[str]:
        return sorted(p.title for p in posts if opens < p.released <= closes)

    # Early: last Mexico City window ended 2024-06-10 13:00; Kolkata's daily:2024-06-11 (ended
    # 01:30) is planned at the move, from there.
    assert mail_of(world, "early@example.org")[1:3] == [
        (
            "daily:2024-06-11",
            utc(2024, 6, 11, 6),
            between(utc(2024, 6, 10, 13), utc(2024, 6, 11, 1, 30)),
        ),
        (
            "daily:2024-06-12",
            utc(2024, 6, 12, 2),
            between(utc(2024, 6, 11, 1, 30), utc(2024, 6, 12, 1, 30)),
        ),
    ]
    # Late: Mexico City's daily:2024-06-11 went out at 13:00; Kolkata's next window starts there.
    assert mail_of(world, "late@example.org")[1:3] == [
        (
            "daily:2024-06-11",
            utc(2024, 6, 11, 13),
            between(utc(2024, 6, 10, 13), utc(2024, 6, 11, 13)),
        ),
        (
            "daily:2024-06-12",
            utc(2024, 6, 12, 2),
            between(utc(2024, 6, 11, 13), utc(2024, 6, 12, 1, 30)),
        ),
    ]
    assert [p for p in world.planned() if p.reader == control.email] == expected_periodic(
        [control], posts, steps
    )


def test_a_reader_who_moves_back_and_forth_across_the_date_line(world: World) -> None:
    """Auckland (07:00 = 19:00 UTC the day before) and Honolulu (07:00 = 17:00 UTC the same day)
    are 22 hours and a calendar day apart; the reader moves every day at noon UTC, one way then
    the other, and gets every post exactly once. A reader in each zone gets what the oracle says."""
    akl, hnl = "Pacific/Auckland", "Pacific/Honolulu"
    world.reader("mover@example.org", akl, {"mexico": DAILY, "migration": DAILY})
    controls = [
        Reader("akl@example.org", akl, {"mexico": DAILY}),
        Reader("hnl@example.org", hnl, {"mexico": DAILY, "migration": DAILY}),
    ]
    for r in controls:
        world.reader(r.email, r.zone, r.subs)
    posts = spread_posts(
        utc(2024, 6, 9, 20),
        utc(2024, 6, 15, 12),
        timedelta(hours=2, minutes=13),
        [("mexico",), ("migration",), ("refugees",)],
    )
    steps = every(utc(2024, 6, 10), utc(2024, 6, 17), timedelta(hours=1))
    move = mover(
        world,
        [(utc(2024, 6, 10 + n, 12), "mover@example.org", (hnl, akl)[n % 2]) for n in range(5)],
    )
    world.run(steps, posts, before_step=move)

    mine = sorted(p.title for p in posts if {"mexico", "migration"} & set(p.topics))
    assert carried_by(world, "mover@example.org") == mine
    for r in controls:
        assert [p for p in world.planned() if p.reader == r.email] == expected_periodic(
            [r], posts, steps
        )


def test_weekly_readers_who_change_time_zone_get_each_post_once(world: World) -> None:
    """Weekly on Monday 07:00 over four weeks: one reader moves from Auckland to Los Angeles (19
    hours behind) hours after their Auckland digest of that Monday went out, so Los Angeles'
    run of the same date finds them planned; another moves from Los Angeles to Auckland mid-week.
    Each gets every post once; a reader who stays gets what the oracle says."""
    akl, lax = "Pacific/Auckland", "America/Los_Angeles"
    world.reader("behind@example.org", akl, {"refugees": WEEKLY})
    world.reader("ahead@example.org", lax, {"refugees": WEEKLY})
    control = Reader("stays@example.org", lax, {"refugees": WEEKLY})
    world.reader(control.email, control.zone, control.subs)
    posts = spread_posts(
        utc(2024, 6, 10, 20), utc(2024, 7, 7, 12), timedelta(hours=9, minutes=41), [("refugees",)]
    )
    steps = every(utc(2024, 6, 10), utc(2024, 7, 9), timedelta(hours=3))
    move = mover(
        world,
        [
            (utc(2024, 6, 17, 3), "behind@example.org", lax),
            (utc(2024, 6, 19, 12), "ahead@example.org", akl),
        ],
    )
    world.run(steps, posts, [DigestKind.WEEKLY], before_step=move)

    everything = sorted(p.title for p in posts)
    assert carried_by(world, "behind@example.org") == everything
    assert carried_by(world, "ahead@example.org") == everything
    # Behind: weekly:2024-06-17 from Auckland only; Los Angeles' next week reaches back to it.
    assert [k for k, _, _ in mail_of(world, "behind@example.org")] == [
        f"weekly:{date(2024, 6, 17) + timedelta(weeks=n)}" for n in range(4)
    ]
    assert [p for p in world.planned() if p.reader == control.email] == expected_periodic(
        [control], posts, steps, frequency=WEEKLY
    )


def test_a_zone_change_while_paused_does_not_reopen_the_pause(world: World) -> None:
    """Two readers in Kolkata pause from 2024-06-11 03:00 to 2024-06-13 20:00 UTC; one moves to
    Mexico City while paused. When the pause ends each gets the latest period of their zone (as
    any paused reader does), not everything since their last digest; then one email a day."""
    subs = {"mexico": DAILY}
    for email in ("mover@example.org", "stayer@example.org"):
        world.reader(email, "Asia/Kolkata", subs)
    until = utc(2024, 6, 13, 20)

    def pause(now: datetime) -> None:
        if now == utc(2024, 6, 11, 3):
            with transaction(world.sessions) as session:
                for email in ("mover@example.org", "stayer@example.org"):
                    readers.update_preferences(
                        session=session,
                        subscriber_id=world.readers[email],
                        frequencies={},
                        paused_until=until,
                    )

    move = mover(
        world,
        [(utc(2024, 6, 12, 12), "mover@example.org", "America/Mexico_City")],
        paused_until=until,
    )

    def before(now: datetime) -> None:
        pause(now)
        move(now)

    posts = [PostSpec(f"Day {d}", ("mexico",), utc(2024, 6, d, 10)) for d in range(9, 17)]
    steps = every(utc(2024, 6, 10), utc(2024, 6, 17), timedelta(hours=1))
    world.run(steps, posts, before_step=before)

    assert mail_of(world, "mover@example.org") == [
        ("daily:2024-06-10", utc(2024, 6, 10, 2), ["Day 9"]),
        ("daily:2024-06-11", utc(2024, 6, 11, 2), ["Day 10"]),
        # Mexico City's period that ended last during the pause; Days 11 and 12 stay unsent.
        ("daily:2024-06-13", utc(2024, 6, 13, 20), ["Day 13"]),
        ("daily:2024-06-14", utc(2024, 6, 14, 13), ["Day 14"]),
        ("daily:2024-06-15", utc(2024, 6, 15, 13), ["Day 15"]),
        ("daily:2024-06-16", utc(2024, 6, 16, 13), ["Day 16"]),
    ]
    assert mail_of(world, "stayer@example.org") == [
        ("daily:2024-06-10", utc(2024, 6, 10, 2), ["Day 9"]),
        ("daily:2024-06-11", utc(2024, 6, 11, 2), ["Day 10"]),
        ("daily:2024-06-13", utc(2024, 6, 13, 20), ["Day 12"]),  # Kolkata's latest period
        ("daily:2024-06-14", utc(2024, 6, 14, 2), ["Day 13"]),
        ("daily:2024-06-15", utc(2024, 6, 15, 2), ["Day 14"]),
        ("daily:2024-06-16", utc(2024, 6, 16, 2), ["Day 15"]),
    ]


def test_a_reader_back_at_a_frequency_after_a_while_starts_at_their_zones_period(
    world: World,
) -> None:
    """A mark moves only while the reader has a topic at that frequency: one who drops their
    daily topic and takes it again a week later gets their zone's period (as a new reader does),
    not the week in between, by the stale limit; and, subscribed to the topic again only then,
    only posts released after that (new readers get new posts only: not Day 17, nor Day 18,
    released at 10:00 that day)."""
    reader = world.reader("back@example.org", "UTC", {"mexico": DAILY})

    def change(now: datetime) -> None:
        for at, frequency in ((utc(2024, 6, 11, 13), None), (utc(2024, 6, 18, 13), DAILY)):
            if now == at:
                with transaction(world.sessions) as session:
                    readers.update_preferences(
                        session=session, subscriber_id=reader, frequencies={"mexico": frequency}
                    )
                    subscribed_since(session, reader, now)  # the operation ran at `now`

    posts = [PostSpec(f"Day {d}", ("mexico",), utc(2024, 6, d, 10)) for d in range(9, 20)]
    steps = every(utc(2024, 6, 10, 1), utc(2024, 6, 20, 13), timedelta(hours=6))
    world.run(steps, posts, before_step=change)
    assert mail_of(world, "back@example.org") == [
        ("daily:2024-06-10", utc(2024, 6, 10, 7), ["Day 9"]),
        ("daily:2024-06-11", utc(2024, 6, 11, 7), ["Day 10"]),
        ("daily:2024-06-20", utc(2024, 6, 20, 7), ["Day 19"]),
    ]


def test_a_reader_who_unsubscribes_and_signs_up_again_starts_afresh(world: World) -> None:
    """Unsubscribing clears a reader's marks: back two days later (their mark, a period before
    the latest one, not stale yet), they start at their zone's latest period, as a new reader
    signing up at the same time does, not where their last digest ended (which would bring what
    came while they were gone)."""
    world.reader("back@example.org", "UTC", {"mexico": DAILY})

    def sign_up(email: str) -> None:
        with transaction(world.sessions) as session:
            signup = readers.subscribe(
                session=session, email=email, topics=["mexico"], frequency=DAILY, timezone="UTC"
            )
            assert signup.subscriber_id is not None and signup.consent_id is not None
            readers.confirm(
                session=session,
                consent_id=signup.consent_id,
                subscriber_id=signup.subscriber_id,
                token_version=1,
            )
            subscribed_since(session, signup.subscriber_id, utc(2024, 6, 12, 8))

    def before(now: datetime) -> None:
        if now == utc(2024, 6, 10, 8):
            with transaction(world.sessions) as session:
                readers.unsubscribe(
                    session=session, subscriber_id=world.readers["back@example.org"]
                )
            assert not [m for m in marks(world) if m[0] == "back@example.org"]
        if now == utc(2024, 6, 12, 8):
            sign_up("back@example.org")
            sign_up("new@example.org")

    posts = [PostSpec(f"Day {d}", ("mexico",), utc(2024, 6, d, 10)) for d in range(9, 14)]
    steps = every(utc(2024, 6, 10, 1), utc(2024, 6, 14, 8), timedelta(hours=1))
    world.run(steps, posts, before_step=before)
    # Day 11 was released before they signed up (again): new readers get new posts only.
    again = [
        ("daily:2024-06-13", utc(2024, 6, 13, 7), ["Day 12"]),
        ("daily:2024-06-14", utc(2024, 6, 14, 7), ["Day 13"]),
    ]
    assert mail_of(world, "new@example.org") == again
    # Day 10 came while they were gone, before the period a new reader gets.
    assert mail_of(world, "back@example.org") == [
        ("daily:2024-06-10", utc(2024, 6, 10, 7), ["Day 9"]),
        *again,
    ]


def marks(world: World) -> dict[tuple[str, str], datetime]:
    """Every reader's marks: (email, frequency) -> through."""
    with world.sessions() as session:
        return {
            (email, frequency.value): through
            for email, frequency, through in session.execute(
                select(Subscriber.email, DigestMark.frequency, DigestMark.through).join(
                    DigestMark, DigestMark.subscriber_id == Subscriber.id
                )
            )
        }


def test_rerun_after_a_crash_while_moving_the_marks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner dies after planning a run's deliveries, while moving the readers' marks: the
    tick leaves nothing (deliveries and marks are one transaction), and the rerun plans it as if
    nothing had happened. Crashes at the ticks that plan a mover's first window in their new zone;
    at the end every reader has every post once."""
    world.reader("behind@example.org", "Asia/Kolkata", {"mexico": DAILY})
    world.reader("ahead@example.org", "America/Mexico_City", {"mexico": DAILY})
    world.reader("stays@example.org", "UTC", {"mexico": DAILY})
    posts = spread_posts(
        utc(2024, 6, 10), utc(2024, 6, 12, 23), timedelta(hours=1, minutes=40), [("mexico",)]
    )
    steps = every(utc(2024, 6, 10), utc(2024, 6, 14), timedelta(hours=1))
    move = mover(
        world,
        [
            (utc(2024, 6, 11, 6), "behind@example.org", "America/Mexico_City"),
            (utc(2024, 6, 11, 14), "ahead@example.org", "Asia/Kolkata"),
        ],
    )
    crash_at = {utc(2024, 6, 12, 2), utc(2024, 6, 12, 7), utc(2024, 6, 12, 13)}
    real = planner._advance_marks
    crashed: list[datetime] = []

    def after_fill_crash(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise RuntimeError("worker killed")

    def before(now: datetime) -> None:
        move(now)
        if now in crash_at:
            ledger, marked = world.planned(), marks(world)
            monkeypatch.setattr(planner, "_advance_marks", after_fill_crash)
            with pytest.raises(RuntimeError, match="worker killed"):
                world.plan(now)
            monkeypatch.setattr(planner, "_advance_marks", real)
            assert (world.planned(), marks(world)) == (ledger, marked)
            crashed.append(now)

    world.run(steps, posts, before_step=before)
    assert sorted(crashed) == sorted(crash_at)
    everything = sorted(p.title for p in posts)
    for email in ("behind@example.org", "ahead@example.org", "stays@example.org"):
        assert carried_by(world, email) == everything, email


def test_editorial_plan_reaches_its_audience_once(world: World, settings: Settings) -> None:
    """An editor's digest goes to active readers of its audience topics, once each, however often it
    is planned, with only the posts of their topics; a draft or a cancelled one is not planned."""
    world.reader("mx@example.org", "UTC", {"mexico": WEEKLY})
    world.reader("both@example.org", "UTC", {"mexico": DAILY, "refugees": DAILY})
    world.reader("other@example.org", "UTC", {"migration": DAILY})
    world.reader("gone@example.org", "UTC", {"mexico": DAILY}, status=SubscriberStatus.UNSUBSCRIBED)
    one = world.post(PostSpec("One", ("mexico",), utc(2024, 6, 10, 9)))
    two = world.post(PostSpec("Two", ("migration",), utc(2024, 6, 10, 10)))
    with transaction(world.sessions) as session:
        draft = editorial_digests.create_editorial(
            session=session,
            subject="Our week",
            post_ids=[one, two],
            audience_topics=["mexico", "refugees"],
        )
        assert planner.plan_editorial(session, draft.id).planned == 0
        editorial_digests.schedule(
            session=session, digest_id=draft.id, at=utc(2024, 6, 10, 12), expected_count=2
        )
    for _ in range(2):
        with transaction(world.sessions) as session:
            dispatch.plan_due(session, settings, now=utc(2024, 6, 10, 12, 1))
    got = sorted((p.reader, p.kind, tuple(sorted(p.posts))) for p in world.planned())
    assert got == [  # "Two" is a Migration post: no reader of Mexico or Refugees follows it
        ("both@example.org", "editorial", ("One",)),
        ("mx@example.org", "editorial", ("One",)),
    ]
    with transaction(world.sessions) as session:
        cancelled = editorial_digests.create_editorial(
            session=session, subject="Never", post_ids=[one]
        )
        editorial_digests.schedule(
            session=session, digest_id=cancelled.id, at=utc(2024, 6, 10, 13), expected_count=2
        )
        editorial_digests.cancel(session=session, digest_id=cancelled.id)
    with transaction(world.sessions) as session:
        dispatch.plan_due(session, settings, now=utc(2024, 6, 10, 14))
        assert planner.plan_editorial(session, cancelled.id).planned == 0
    with world.sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.digest_id == cancelled.id)
        )
    assert count == 0
    assert all(p.status == DeliveryStatus.PENDING.value for p in world.planned())


def test_editorial_audience_defaults_to_the_posts_topics_and_the_count_is_what_is_planned(
    world: World, settings: Settings
) -> None:
    """No audience ticked: the readers of the chosen posts' topics, each with the posts of their
    own topics (a Border Security and Migration reader gets no Mexico post, and no email); "for
    everyone": each reader of the audience gets every post; every active reader only when picked.
    count_audience counts exactly the readers the planner then plans."""
    world.reader("bm@example.org", "UTC", {"border-security": WEEKLY, "migration": WEEKLY})
    world.reader("mx@example.org", "UTC", {"mexico": WEEKLY})
    world.reader("mf@example.org", "UTC", {"mexico": DAILY, "refugees": WEEKLY})
    world.reader("rf@example.org", "UTC", {"refugees": DAILY})
    mexico = world.post(PostSpec("Mexico this month", ("mexico",), utc(2024, 6, 10, 9)))
    russia = world.post(PostSpec("Refugees now", ("refugees",), utc(2024, 6, 10, 9)))
    expected = {
        "default": [
            ("mf@example.org", ("Mexico this month", "Refugees now")),
            ("mx@example.org", ("Mexico this month",)),
            ("rf@example.org", ("Refugees now",)),
        ],
        "for_everyone": [
            ("mf@example.org", ("Mexico this month", "Refugees now")),
            ("mx@example.org", ("Mexico this month", "Refugees now")),
            ("rf@example.org", ("Mexico this month", "Refugees now")),
        ],
        "everyone": [
            ("bm@example.org", ("Mexico this month", "Refugees now")),
            ("mf@example.org", ("Mexico this month", "Refugees now")),
            ("mx@example.org", ("Mexico this month", "Refugees now")),
            ("rf@example.org", ("Mexico this month", "Refugees now")),
        ],
    }
    for n, (how, want) in enumerate(expected.items()):
        with transaction(world.sessions) as session:
            draft = editorial_digests.create_editorial(
                session=session,
                subject=how,
                post_ids=[mexico, russia],
                for_everyone=how == "for_everyone",
                everyone=how == "everyone",
            )
            count = editorial_digests.count_audience(session=session, digest_id=draft.id)
            assert count.total == len(want), how
            if how == "default":
                assert draft.audience == "readers of Mexico, Refugees"
                assert count.by_topic == [("Mexico", 2), ("Refugees", 2)]
                assert count.by_frequency == {"daily": 2, "weekly": 2}
            with pytest.raises(CountChanged):
                editorial_digests.schedule(
                    session=session,
                    digest_id=draft.id,
                    at=utc(2024, 6, 10, 12),
                    expected_count=count.total + 1,
                )
            editorial_digests.schedule(
                session=session,
                digest_id=draft.id,
                at=utc(2024, 6, 10, 12),
                expected_count=count.total,
            )
            planned = planner.plan_editorial(session, draft.id, now=utc(2024, 6, 10, 12, n))
            assert planned.planned == count.total, how
            digest_id = draft.id
        with world.sessions() as session:
            rows = session.execute(
                select(Subscriber.email, Post.title)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .join(delivery_posts, delivery_posts.c.delivery_id == Delivery.id)
                .join(Post, Post.id == delivery_posts.c.post_id)
                .where(Delivery.digest_id == digest_id)
            ).all()
        carried: dict[str, list[str]] = {}
        for email, title in rows:
            carried.setdefault(email, []).append(title)
        assert sorted((e, tuple(sorted(t))) for e, t in carried.items()) == want, how


def test_plan_results_count_the_deliveries_each_call_added(world: World) -> None:
    """PlanResult.planned (what the scheduler's tasks report) is the number of deliveries added."""
    for n in range(3):
        world.reader(f"r{n}@example.org", "UTC", {"mexico": DAILY, "migration": IMMEDIATE})
    post = world.post(PostSpec("News", ("mexico", "migration"), utc(2024, 6, 10, 9)))
    with transaction(world.sessions) as session:
        alert = planner.plan_post_alerts(session, post, now=utc(2024, 6, 10, 9))
    assert alert is not None and alert.planned == 3
    world.post(PostSpec("More", ("mexico",), utc(2024, 6, 10, 10)))
    assert [r.planned for r in world.plan(utc(2024, 6, 11, 7))] == [3]
    assert [r.planned for r in world.plan(utc(2024, 6, 11, 8))] == [0]


def test_new_readers_get_new_posts_only_in_alerts_and_digests(world: World) -> None:
    """The demo's case: posts released before a reader's subscription to their topic began reach
    them neither as alerts (even when the alerts are planned after they came, by the dispatcher's
    sweep) nor in a digest; a topic added later in the preference centre starts then. The audit
    says "subscribed later" for each post left out."""
    world.reader("early@example.org", "UTC", {"mexico": IMMEDIATE, "refugees": DAILY})
    late = world.reader(
        "late@example.org", "UTC", {"mexico": IMMEDIATE}, since=utc(2024, 6, 10, 12)
    )
    old = world.post(PostSpec("Old", ("mexico",), utc(2024, 6, 10, 9)))
    new = world.post(PostSpec("New", ("mexico",), utc(2024, 6, 10, 13)))
    world.post(PostSpec("Old refugees", ("refugees",), utc(2024, 6, 10, 10)))
    world.post(PostSpec("New refugees", ("refugees",), utc(2024, 6, 10, 16)))
    with transaction(world.sessions) as session:
        # The late reader adds Refugees in the preference centre at 15:00.
        readers.update_preferences(
            session=session, subscriber_id=late, frequencies={"refugees": DAILY}
        )
        session.execute(
            update(Subscription)
            .where(Subscription.subscriber_id == late, Subscription.topic_id == _topic(session))
            .values(created_at=utc(2024, 6, 10, 15))
        )
    with transaction(world.sessions) as session:
        for post_id in (old, new):  # planned late, after both readers came
            planner.plan_post_alerts(session, post_id, now=utc(2024, 6, 10, 17))
        planner.plan_periodic(session, DigestKind.DAILY, now=utc(2024, 6, 11, 8))
    assert sorted(mail_of(world, "early@example.org")) == [
        ("daily:2024-06-11", utc(2024, 6, 11, 8), ["New refugees", "Old refugees"]),
        (f"post:{old}", utc(2024, 6, 10, 17), ["Old"]),
        (f"post:{new}", utc(2024, 6, 10, 17), ["New"]),
    ]
    assert sorted(mail_of(world, "late@example.org")) == [
        ("daily:2024-06-11", utc(2024, 6, 11, 8), ["New refugees"]),
        (f"post:{new}", utc(2024, 6, 10, 17), ["New"]),
    ]
    with world.sessions() as session:
        found = audit.audit_reader(session=session, subscriber_id=late)
    reasons = {p.title: p.reason for p in found.posts}
    assert reasons["Old"] == "subscribed_later"
    assert reasons["Old refugees"] == "subscribed_later"
    assert reasons["New"] is None and reasons["New refugees"] is None


def _topic(session: Session, slug: str = "refugees") -> int:
    topic_id = session.scalar(select(Topic.id).where(Topic.slug == slug))
    assert topic_id is not None
    return topic_id
