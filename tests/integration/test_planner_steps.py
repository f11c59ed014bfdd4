"""The periodic planner's named steps (worker.digests.planner.PeriodicPlanner) one at a time, on a real
database (SQLite, and PostgreSQL when NEWSLETTER_TEST_DATABASE_URL is set): due periods grouped by run key
with runs that hold no post left out, the reader windows table, the plan, and the marks it advances."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.models import Delivery, DigestKind, DigestMark, Post
from subscriptions.posts import add_post
from tests.factories import active_reader, add_demo_topics, migrated_sessions, subscribed_since
from worker.digests.planner import PeriodicPlanner

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 11, 21, 0, tzinfo=UTC)  # 06:00 on 12 June in Tokyo: both zones on 11 June


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    factory = migrated_sessions(database_url)
    with factory.begin() as session:
        add_demo_topics(session)
        for email, zone in (("utc@example.org", "UTC"), ("tokyo@example.org", "Asia/Tokyo")):
            subscribed_since(session, active_reader(session, email, ["mexico"], timezone=zone))
    yield factory
    factory.kw["bind"].dispose()


def release(sessions: sessionmaker[Session], title: str, at: datetime) -> int:
    with sessions.begin() as session:
        info = add_post(
            session=session, title=title, link=f"https://example.org/{title}", topics=["mexico"]
        )
        post = session.get(Post, info.id)
        assert post is not None
        post.released_at = post.published_at = at
        return info.id


def test_due_periods_group_zones_by_run_key_and_leave_out_runs_without_posts(
    sessions: sessionmaker[Session],
) -> None:
    """UTC's latest daily period is 10→11 June 07:00 UTC (key 11 June); Tokyo's is 10→11 June 07:00
    local, i.e. 9 June 22:00 → 10 June 22:00 UTC (key 11 June too): one run for both zones. A post
    released at 10 June 23:00 UTC lies only in UTC's window, so only UTC's zone is due, and with no
    post at all nothing is."""
    with sessions() as session:
        assert PeriodicPlanner(session, DigestKind.DAILY, now=NOW).due_periods() == []
    post_id = release(sessions, "late", datetime(2024, 6, 10, 23, 0, tzinfo=UTC))
    with sessions() as session:
        [run] = PeriodicPlanner(session, DigestKind.DAILY, now=NOW).due_periods()
    assert run.key == "daily:2024-06-11"
    assert [z.zone for z in run.zones] == ["UTC"] and run.post_ids == [post_id]
    assert run.zones[0].period.end == datetime(2024, 6, 11, 7, 0, tzinfo=UTC)


def test_reader_windows_plan_and_advance_marks_one_step_at_a_time(
    sessions: sessionmaker[Session],
) -> None:
    """The windows table holds one row per due zone with its period; `plan` writes the delivery of
    the reader who has a post in their window and moves the marks of both readers' zones to their
    period ends; a second `plan` of the same run adds nothing."""
    release(sessions, "early", datetime(2024, 6, 10, 12, 0, tzinfo=UTC))  # in both windows
    with sessions.begin() as session:
        planner = PeriodicPlanner(session, DigestKind.DAILY, now=NOW)
        [run] = planner.due_periods()
        windows = planner.reader_windows(run)
        rows = session.execute(select(windows.c.zone, windows.c.closes)).all()
        assert sorted((zone, closes.astimezone(UTC)) for zone, closes in rows) == [
            ("Asia/Tokyo", datetime(2024, 6, 10, 22, 0, tzinfo=UTC)),
            ("UTC", datetime(2024, 6, 11, 7, 0, tzinfo=UTC)),
        ]
        result = planner.plan(run)
        assert result.planned == 2
        marks = dict(session.execute(select(DigestMark.subscriber_id, DigestMark.through)).all())
        assert sorted(m.astimezone(UTC) for m in marks.values()) == [
            datetime(2024, 6, 10, 22, 0, tzinfo=UTC),
            datetime(2024, 6, 11, 7, 0, tzinfo=UTC),
        ]
        assert planner.plan(run).planned == 0
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2
    with sessions() as session:
        later = PeriodicPlanner(session, DigestKind.DAILY, now=NOW + timedelta(hours=1))
        assert [r.planned for r in later.run()] == [0]
