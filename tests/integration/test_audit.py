"""The per-reader audit (subscriptions/audit.py) after real planner runs with a frozen clock:
every reason a post did not reach a reader, each produced by the planner itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import audit, readers
from subscriptions.db import transaction
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    DigestKind,
    Event,
    Frequency,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
)
from subscriptions.posts import add_post, approve_post
from tests.factories import add_demo_topics, migrated_sessions
from worker.digests import planner

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 24, tzinfo=UTC)  # a Tuesday


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    made = migrated_sessions(database_url)
    with transaction(made) as session:
        add_demo_topics(session)
    yield made
    made.kw["bind"].dispose()


def reader(
    sessions: sessionmaker[Session],
    email: str,
    subs: dict[str, Frequency],
    *,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    confirmed_at: datetime | None = DAY - timedelta(days=30),
    created_at: datetime = DAY - timedelta(days=30),
) -> int:
    with transaction(sessions) as session:
        topics = {slug: id_ for slug, id_ in session.execute(select(Topic.slug, Topic.id))}
        row = Subscriber(email=email, status=status, timezone="UTC", confirmed_at=confirmed_at)
        session.add(row)
        session.flush()
        for slug, frequency in subs.items():
            session.add(
                Subscription(
                    subscriber_id=row.id,
                    topic_id=topics[slug],
                    frequency=frequency,
                    created_at=created_at,
                )
            )
        return row.id


def post(
    sessions: sessionmaker[Session],
    title: str,
    topics: list[str],
    released: datetime,
    *,
    held: bool = False,
    notify: bool = True,
) -> int:
    """A post released at `released`, its immediate alerts planned then (as the worker does)."""
    with transaction(sessions) as session:
        info = add_post(
            session=session,
            title=title,
            link=f"https://example.org/{title.lower().replace(' ', '-')}",
            topics=topics,
            held=held,
            notify=notify,
        )
        session.execute(
            update(Post)
            .where(Post.id == info.id)
            .values(
                released_at=None if held else released,
                published_at=released,
                created_at=released,
            )
        )
    if not held:
        with transaction(sessions) as session:
            planner.plan_post_alerts(session, info.id, now=released)
    return info.id


def reasons(sessions: sessionmaker[Session], reader_id: int) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        found = audit.audit_reader(session=session, subscriber_id=reader_id)
    return {p.title: (p.outcome, p.reason) for p in found.posts}


def test_every_reason_comes_from_a_real_planner_run(sessions: sessionmaker[Session]) -> None:
    both = reader(
        sessions, "both@example.org", {"mexico": Frequency.IMMEDIATE, "migration": Frequency.DAILY}
    )
    paused = reader(sessions, "paused@example.org", {"migration": Frequency.DAILY})
    pending = reader(
        sessions,
        "pending@example.org",
        {"migration": Frequency.DAILY},
        status=SubscriberStatus.PENDING,
        confirmed_at=None,
    )
    leaving = reader(sessions, "leaving@example.org", {"migration": Frequency.DAILY})
    bounced = reader(sessions, "bounced@example.org", {"migration": Frequency.DAILY})
    failing = reader(sessions, "failing@example.org", {"mexico": Frequency.IMMEDIATE})
    with transaction(sessions) as session:
        readers.update_preferences(
            session=session,
            subscriber_id=paused,
            frequencies={},
            paused_until=DAY + timedelta(days=3),
        )
        readers.unsubscribe(session=session, subscriber_id=leaving)
        readers.suppress(session=session, email="bounced@example.org", reason="hard_bounce")

    # Monday's posts, alerted at once and carried by Tuesday 07:00 UTC's daily digest.
    alerted = post(sessions, "Alerted", ["mexico", "migration"], DAY - timedelta(hours=10))
    post(sessions, "Daily only", ["migration"], DAY - timedelta(hours=9))
    post(sessions, "Refugees news", ["refugees"], DAY - timedelta(hours=8))
    post(sessions, "Backlog", ["migration"], DAY - timedelta(hours=7), notify=False)
    held = post(sessions, "Held", ["migration"], DAY - timedelta(hours=6), held=True)
    # Two readers who came after Monday's alerts were planned.
    late = reader(
        sessions,
        "late@example.org",
        {"mexico": Frequency.IMMEDIATE},
        created_at=DAY + timedelta(hours=12),
        confirmed_at=DAY - timedelta(days=30),
    )
    newcomer = reader(
        sessions,
        "newcomer@example.org",
        {"mexico": Frequency.IMMEDIATE},
        confirmed_at=DAY + timedelta(hours=12),
    )
    # The alert to `failing` failed at the provider.
    with transaction(sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == failing)
            .values(status=DeliveryStatus.FAILED, last_error="550 mailbox unavailable", attempts=3)
        )
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == both))
        session.add(
            Event(
                provider="postmark",
                provider_event_id="ev-1",
                type="delivered",
                email_hash=readers.email_hash("both@example.org"),
                delivery_id=delivery_id,
                occurred_at=DAY - timedelta(hours=9),
            )
        )
    with transaction(sessions) as session:
        runs = planner.plan_periodic(session, DigestKind.DAILY, now=DAY + timedelta(hours=7))
    assert [r.planned for r in runs] == [1]  # only `both`: the others are not mailable
    # A post after today's digest waits for tomorrow's; one the later subscriber missed.
    post(sessions, "Tomorrow", ["migration"], DAY + timedelta(hours=9))
    post(sessions, "After they came", ["mexico"], DAY + timedelta(hours=13))

    got = reasons(sessions, both)
    assert got["Alerted"] == ("planned", None)
    assert got["Daily only"] == ("planned", None)
    assert got["Refugees news"] == ("not sent", "not_subscribed")
    assert got["Backlog"] == ("not sent", "backlog")
    assert got["Held"] == ("not sent", "held")
    assert got["Tomorrow"] == ("not sent", "waiting")
    with sessions() as session:
        full = audit.audit_reader(session=session, subscriber_id=both)
    alert_note = next(p for p in full.posts if p.title == "Alerted")
    assert "sent already as an alert" in alert_note.explanation
    kinds = sorted(e.kind for e in full.emails)
    assert kinds == ["daily", "immediate", "immediate"]
    daily = next(e for e in full.emails if e.kind == "daily")
    assert daily.run_key == "daily:2026-11-24" and daily.status == "pending"
    with sessions() as session:
        titles = {id_: title for id_, title in session.execute(select(Post.id, Post.title))}
    # The digest does not repeat the alerted post.
    assert [titles[p] for p in daily.post_ids] == ["Daily only"]
    first_alert = next(e for e in full.emails if e.post_ids == [alerted])
    assert [ev.type for ev in first_alert.events] == ["delivered"]

    assert reasons(sessions, paused)["Daily only"] == ("not sent", "paused")
    assert reasons(sessions, pending)["Daily only"] == ("not sent", "not_confirmed")
    assert reasons(sessions, leaving)["Daily only"] == ("not sent", "unsubscribed")
    assert reasons(sessions, bounced)["Daily only"] == ("not sent", "suppressed")
    assert reasons(sessions, failing)["Alerted"] == ("not sent", "failed")
    assert reasons(sessions, late)["Alerted"] == ("not sent", "subscribed_later")
    assert reasons(sessions, late)["After they came"] == ("planned", None)
    assert reasons(sessions, newcomer)["Alerted"] == ("not sent", "not_confirmed")

    # Approving the held post releases it: it is then planned like any other.
    with transaction(sessions) as session:
        approve_post(session=session, post_id=held)
        planner.plan_post_alerts(session, held, now=DAY + timedelta(hours=11))
    assert reasons(sessions, both)["Held"] == ("not sent", "waiting")


def test_the_window_of_posts_is_bounded(sessions: sessionmaker[Session]) -> None:
    someone = reader(sessions, "a@example.org", {"mexico": Frequency.IMMEDIATE})
    for n in range(5):
        post(sessions, f"Post {n}", ["mexico"], DAY + timedelta(hours=n))
    with sessions() as session:
        last_two = audit.audit_reader(session=session, subscriber_id=someone, posts=2)
        window = audit.audit_reader(
            session=session,
            subscriber_id=someone,
            since=DAY + timedelta(hours=1),
            until=DAY + timedelta(hours=3),
        )
    assert [p.title for p in last_two.posts] == ["Post 4", "Post 3"]
    assert [p.title for p in window.posts] == ["Post 2", "Post 1"]
    assert len(last_two.emails) == 5
