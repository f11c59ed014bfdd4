"""Content operations on a migrated SQLite store: topics, feed rules, post search and hold, suppressions."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import feeds, posts, suppressions, topics
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import PostStatus
from tests.factories import add_demo_topics, migrated_sessions
from tests.feedserver import Item, rss2
from worker.feeds.poll import FetchOptions, poll_feed


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    factory = migrated_sessions(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with factory.begin() as session:
        add_demo_topics(session)
    return factory


def test_category_rules_read_and_written_back() -> None:
    text = "Border Wall = border-security\n\n  a=b = mexico \n"
    rules = feeds.parse_category_rules(text)
    assert rules == {"Border Wall": "border-security", "a=b": "mexico"}
    assert feeds.parse_category_rules(feeds.format_category_rules(rules)) == rules
    with pytest.raises(InvalidInput, match="line 2") as caught:
        feeds.parse_category_rules("ok = mexico\nno equals sign\n")
    assert caught.value.field == "category_map"


def test_update_feed_changes_only_what_is_given_and_nothing_on_error(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        feed = feeds.add_feed(
            session=session,
            url="https://example.org/f.xml",
            topic="mexico",
            category_map={"A": "refugees"},
        )
        changed = feeds.update_feed(session=session, feed_id=feed.id, requires_approval=True)
        assert changed.category_map == {"a": "refugees"} and changed.requires_approval
        with pytest.raises(InvalidInput, match="unknown topic"):
            feeds.update_feed(
                session=session, feed_id=feed.id, topic="nope", poll_interval_seconds=120
            )
        with pytest.raises(NotFound):
            feeds.update_feed(session=session, feed_id=feed.id + 1, topic="mexico")


def test_topics_summary_counts_and_archive_keeps_the_slug_reserved(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        posts.add_post(session=session, title="T", link="https://example.org/t", topics=["mexico"])
        mexico = next(t for t in topics.summarize_topics(session=session) if t.slug == "mexico")
        assert (mexico.readers, mexico.posts, mexico.archived) == (0, 1, False)
        topics.set_topic_archived(session=session, topic_id=mexico.id, archived=True)
        listed = topics.summarize_topics(session=session)
        assert listed[-1].slug == "mexico" and listed[-1].archived  # archived ones last
        assert "mexico" not in [
            t.slug for t in topics.summarize_topics(session=session, include_archived=False)
        ]
        with pytest.raises(InvalidInput, match="already exists"):
            topics.add_topic(session=session, slug="mexico", name="Again")
        renamed = topics.update_topic(session=session, topic_id=mexico.id, description=" New. ")
        assert (renamed.name, renamed.description) == ("Mexico", "New.")


def test_hold_then_approve_and_search_escapes_wildcards(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        post = posts.add_post(
            session=session, title="50% of_all", link="https://example.org/x", topics=["mexico"]
        )
        posts.add_post(
            session=session, title="Other", link="https://example.org/y", topics=["refugees"]
        )
        assert posts.hold_post(session=session, post_id=post.id).status == "held"
        with pytest.raises(InvalidInput, match="already held"):
            posts.hold_post(session=session, post_id=post.id)
        assert posts.approve_post(session=session, post_id=post.id).announce
        assert [p.title for p in posts.search_posts(session=session, text="0% OF_").items] == [
            "50% of_all"
        ]
        assert posts.search_posts(session=session, text="%").total == 1
        page = posts.search_posts(session=session, status=PostStatus.PUBLISHED, limit=1, offset=1)
        assert page.total == 2 and len(page.items) == 1
        with pytest.raises(InvalidInput):
            posts.search_posts(session=session, text="x" * 201)


def test_suppression_search_by_address_and_remove(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        entry, created = suppressions.add_suppression(
            session=session, email="A@Example.org", detail=" asked \n by phone ", added_by="ed"
        )
        assert created and entry.detail == "asked by phone (added by ed)"
        again, created = suppressions.add_suppression(
            session=session, email="a@example.org", detail="x"
        )
        assert not created and again.id == entry.id
        assert suppressions.list_suppressions(session=session, email="a@EXAMPLE.org").total == 1
        assert suppressions.list_suppressions(session=session, email="b@example.org").total == 0
        assert suppressions.list_suppressions(session=session, reason="bounce").total == 0
        suppressions.remove_suppression(session=session, suppression_id=entry.id)
        assert suppressions.list_suppressions(session=session).total == 0
        with pytest.raises(NotFound):
            suppressions.remove_suppression(session=session, suppression_id=entry.id)


def test_a_feed_skips_archived_topics_and_keeps_the_live_ones(
    sessions: sessionmaker[Session],
) -> None:
    """Archiving a topic breaks no feed: entries keep their live topics; one whose topics are all
    archived is skipped, not moved to the default topic."""
    document = rss2(
        [
            Item(title="Both", link="https://example.org/1", categories=["Mexico", "Refugees"]),
            Item(title="Only archived", link="https://example.org/2", categories=["Refugees"]),
            Item(title="No category", link="https://example.org/3"),
        ]
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=document, headers={"content-type": "application/rss+xml"}
        )
    )
    with sessions.begin() as session:
        feed = feeds.add_feed(
            session=session,
            url="https://example.org/feed.xml",
            topic="migration",
            category_map={"Mexico": "mexico", "Refugees": "refugees"},
        )
        refugees = next(t for t in topics.list_topics(session=session) if t.slug == "refugees")
        topics.set_topic_archived(session=session, topic_id=refugees.id, archived=True)
    report = poll_feed(sessions, feed.id, FetchOptions(allow_private=True, transport=transport))
    assert report.status == "ok" and report.skipped == 1, report
    with sessions() as session:
        stored = {p.title: p.topics for p in posts.search_posts(session=session).items}
    assert stored == {"Both": ["mexico"], "No category": ["migration"]}


def test_a_feed_keeps_its_archived_default_topic_when_other_things_change(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        feed = feeds.add_feed(session=session, url="https://example.org/f.xml", topic="refugees")
        refugees = next(t for t in topics.list_topics(session=session) if t.slug == "refugees")
        topics.set_topic_archived(session=session, topic_id=refugees.id, archived=True)
        kept = feeds.update_feed(
            session=session, feed_id=feed.id, topic="refugees", poll_interval_seconds=600
        )
        assert (kept.default_topic, kept.poll_interval_seconds) == ("refugees", 600)
        for seconds in (59, feeds.MAX_INTERVAL_SECONDS + 1):
            with pytest.raises(InvalidInput, match="poll interval"):
                feeds.update_feed(session=session, feed_id=feed.id, poll_interval_seconds=seconds)
