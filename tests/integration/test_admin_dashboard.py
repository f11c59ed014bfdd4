"""The console's dashboard: figures from real rows, for editors and admins, never for strangers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from subscriptions import dashboard, feeds, readers
from subscriptions.models import Consent, Frequency, Subscriber, utcnow
from tests.consoles import Console
from tests.factories import active_reader


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    yield made
    made.close()


def _active(console: Console, email: str, topics: list[str], frequency: Frequency) -> int:
    with console.sessions.begin() as session:
        return active_reader(session, email, topics, frequency)


def test_readers_by_topic_and_frequency_count_active_readers_only(console: Console) -> None:
    _active(console, "a@example.org", ["mexico", "refugees"], Frequency.DAILY)
    _active(console, "b@example.org", ["mexico"], Frequency.WEEKLY)
    gone = _active(console, "c@example.org", ["mexico"], Frequency.IMMEDIATE)
    with console.sessions.begin() as session:
        readers.unsubscribe(session=session, subscriber_id=gone)
        readers.subscribe(  # pending: not counted
            session=session,
            email="d@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
    with console.sessions() as session:
        rows = {t.slug: t.by_frequency for t in dashboard.readers_by_topic(session=session)}
        totals = dashboard.reader_totals(session=session)
    assert rows["mexico"] == {"immediate": 0, "daily": 1, "weekly": 1}
    assert rows["refugees"] == {"immediate": 0, "daily": 1, "weekly": 0}
    assert totals == {"pending": 1, "active": 2, "unsubscribed": 1, "suppressed": 0}


def test_sign_ups_and_unsubscribes_land_on_their_days(console: Console) -> None:
    gone = _active(console, "a@example.org", ["mexico"], Frequency.DAILY)
    _active(console, "b@example.org", ["mexico"], Frequency.DAILY)
    three_days_ago = utcnow() - timedelta(days=3)
    with console.sessions.begin() as session:
        session.execute(
            update(Consent).where(Consent.subscriber_id == gone).values(created_at=three_days_ago)
        )
        readers.unsubscribe(session=session, subscriber_id=gone)
    with console.sessions() as session:
        days = dashboard.daily_activity(session=session, days=30)
    assert len(days) == 30 and days[-1].day == utcnow().date()
    by_day = {d.day: d for d in days}
    assert by_day[three_days_ago.date()].signups == 1
    assert by_day[utcnow().date()].signups == 1 and by_day[utcnow().date()].unsubscribes == 1
    assert sum(d.signups for d in days) == 2 and sum(d.unsubscribes for d in days) == 1


def test_the_page_shows_topics_chart_digests_and_feeds(console: Console) -> None:
    _active(console, "a@example.org", ["mexico"], Frequency.DAILY)
    with console.sessions.begin() as session:
        feeds.add_feed(session=session, url="https://example.org/feed.xml", topic="mexico")
    for role in ("editor", "admin"):
        client = console.signed_in(f"{role}@example.org", role)
        page = client.get("/admin")
        assert page.status_code == 200
        assert "Readers by topic and frequency" in page.text and "Mexico" in page.text
        assert "<svg" in page.text and "1 sign-ups" in page.text
        assert "https://example.org/feed.xml" in page.text and "never" in page.text
        assert ("Editors and tokens" in page.text) is (role == "admin")
    assert console.client().get("/admin").status_code == 303
    with console.sessions() as session:
        assert session.query(Subscriber).count() == 1
