"""Feed polling end to end: a real HTTP server on 127.0.0.1 (tests.feedserver), the real database, poll_feed.

Covers the formats (RSS 2.0, RSS 1.0, Atom), identity (GUID, else normalized link, else a hash of title and
date; a changed GUID with the same link), backlog and `send_latest`, edits, categories mapped to topics,
clean titles and summaries, encodings, malformed and empty documents, conditional GET (ETag and
Last-Modified sent back, 304), HTTP errors, timeouts, gzip, the size cap, redirects, the refusal of
private addresses (checked before any connection), per-feed health with back-off and pause, hold for
approval, `newsletter feeds poll --all` with a broken feed, and the demo feed built from the sample posts.

No packet leaves 127.0.0.1: private-address refusals are tested with address literals that are refused
before a connection, and the "public" host of the redirect test is a name resolved by a stand-in resolver
and routed by a test transport to the local server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import event, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from subscriptions import feeds as feed_ops
from subscriptions.demo import DEMO_TOPICS, parse_sample_posts, sample_text
from subscriptions.feeds import PAUSE_AFTER_FAILURES
from subscriptions.models import Feed, Post, PostStatus
from subscriptions.queue import PLAN_POST_ALERTS, QUEUE
from subscriptions.topics import add_topic
from tests.factories import add_demo_topics, migrated_sessions
from tests.feedserver import FeedServer, Item, Raw, atom, rss1, rss2
from tests.integration.conftest import newsletter
from worker.feeds import fetch as fetch_module
from worker.feeds.fetch import (
    USER_AGENT,
    FeedFetchError,
    check_address,
    fetch_feed,
    shared_fetcher,
)
from worker.feeds.poll import FetchOptions, PollReport, poll_feed

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
FEED = "/feed.xml"
CATEGORY_MAP = {"Mexico": "mexico", "border security": "border-security", "Refugees": "refugees"}


# --------------------------------------------------------------------------------------- helpers


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as s:
        yield s


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated database with the four demo topics."""
    factory = migrated_sessions(database_url)
    with factory.begin() as session:
        add_demo_topics(session)
    yield factory
    factory.kw["bind"].dispose()


def register(
    sessions: sessionmaker[Session],
    url: str,
    *,
    topic: str = "migration",
    category_map: dict[str, str] | None = None,
    interval: int = 900,
    requires_approval: bool = False,
    send_latest: int = 0,
) -> int:
    with sessions.begin() as session:
        return feed_ops.add_feed(
            session=session,
            url=url,
            topic=topic,
            category_map=category_map if category_map is not None else CATEGORY_MAP,
            poll_interval_seconds=interval,
            requires_approval=requires_approval,
            send_latest=send_latest,
        ).id


def poll(
    sessions: sessionmaker[Session],
    feed_id: int,
    *,
    now: datetime | None = None,
    allow_private: bool = True,
    timeout: float = 2.0,
    max_bytes: int = 5 * 1024 * 1024,
    transport: httpx.BaseTransport | None = None,
) -> PollReport:
    options = FetchOptions(
        allow_private=allow_private, timeout=timeout, max_bytes=max_bytes, transport=transport
    )
    return poll_feed(sessions, feed_id, options, now=now)


def watched(
    server: FeedServer, sessions: sessionmaker[Session], path: str = FEED, **feed: Any
) -> int:
    """A feed already polled once (empty then), so that what it publishes next is new."""
    server.route(path, body=rss2([]))
    feed_id = register(sessions, server.url(path), **feed)
    first = poll(sessions, feed_id)
    assert (first.status, first.new, first.backlog) == ("ok", 0, 0), first
    return feed_id


def stored(sessions: sessionmaker[Session]) -> list[Post]:
    """Every post with its topics, newest first."""
    with sessions() as session:
        query = (
            select(Post)
            .options(selectinload(Post.topics))
            .order_by(Post.published_at.desc(), Post.id)
        )
        return list(session.scalars(query))


def slugs(post: Post) -> list[str]:
    return sorted(t.slug for t in post.topics)


def feed_row(sessions: sessionmaker[Session], feed_id: int) -> Feed:
    with sessions() as session:
        feed = session.get(Feed, feed_id)
        assert feed is not None
        return feed


def queued(redis_url: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of every message waiting on the broker's queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        out = []
        for raw in client.lrange(QUEUE, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            out.append((message["headers"]["task"], args))
        return out
    finally:
        client.close()


def feed_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "NEWSLETTER_FEEDS_ALLOW_PRIVATE_ADDRESSES": "true",
        "NEWSLETTER_FEEDS_TIMEOUT_SECONDS": "2",
    }


def items(count: int, *, start: int = 0, newest: datetime = T0) -> list[Item]:
    """`count` entries, newest first, one hour apart, with GUIDs post-N and links /posts/N."""
    return [
        Item(
            f"Post {n}",
            link=f"http://example.org/posts/{n}",
            guid=f"post-{n}",
            summary=f"<p>Summary {n}</p>",
            published=newest - timedelta(hours=n - start),
        )
        for n in range(start, start + count)
    ]


# --------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("build", [rss2, rss1, atom], ids=["rss2", "rss1", "atom"])
def test_each_format_is_stored_with_mapped_topics_and_announced(
    server: FeedServer, sessions: sessionmaker[Session], build: Any
) -> None:
    """RSS 2.0, RSS 1.0 and Atom over HTTP: both new entries stored and announced; categories map to
    topics (a post can land in several), unmapped ones are recorded, no mapped one means the feed's
    default topic; the fetch sends the product's User-Agent and asks for feed types."""
    feed_id = watched(server, sessions)
    server.route(
        FEED,
        body=build(
            [
                Item(
                    "Security cooperation",
                    link="http://example.org/posts/1",
                    guid="urn:post:1",
                    summary="<p>Two governments.</p>",
                    author="Ann",
                    published=T0,
                    categories=["Mexico", "Border Security", "Trade"],
                ),
                Item(
                    "Asylum numbers",
                    link="http://example.org/posts/2",
                    guid="urn:post:2",
                    published=T0 - timedelta(days=1),
                ),
            ]
        ),
        content_type="application/xml",
    )
    report = poll(sessions, feed_id)
    assert (report.status, report.new, report.updated, report.skipped) == ("ok", 2, 0, 0)
    first, second = stored(sessions)
    assert report.announce == [first.id, second.id]
    assert (first.title, first.link, first.identity) == (
        "Security cooperation",
        "http://example.org/posts/1",
        "guid:urn:post:1",
    )
    assert first.summary == "<p>Two governments.</p>" and first.author == "Ann"
    assert first.published_at == T0 and first.feed_id == feed_id
    assert slugs(first) == ["border-security", "mexico"]
    assert first.categories == ["Border Security", "Mexico", "Trade"]
    assert first.unmapped_categories == ["Trade"]
    assert slugs(second) == ["migration"] and second.unmapped_categories == []
    assert first.status is PostStatus.PUBLISHED and first.notify and second.notify
    sent = server.requests_for(FEED)[-1].headers
    assert sent["user-agent"] == USER_AGENT and "topic-newsletter/" in USER_AGENT
    assert "application/rss+xml" in sent["accept"] and "application/atom+xml" in sent["accept"]


# --------------------------------------------------------------------------------------- identity


def test_without_a_guid_the_normalized_link_is_the_identity(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """No GUID: the link without fragment, trailing slash, or upper-case host names the post, so the
    same link written differently later is the same post (updated, not new)."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2([Item("First", link="HTTP://Example.ORG/Posts/7/#comments")]))
    assert poll(sessions, feed_id).new == 1
    [post] = stored(sessions)
    assert post.identity == "link:http://example.org/Posts/7" and post.guid is None
    server.route(FEED, body=rss2([Item("First, edited", link="http://example.org/Posts/7")]))
    report = poll(sessions, feed_id)
    assert (report.new, report.updated, report.announce) == (0, 1, [])
    [post] = stored(sessions)
    assert post.title == "First, edited"


def test_without_guid_or_link_a_hash_of_title_and_date_is_the_identity(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Neither GUID nor link: the identity is a SHA-256 of title and date; polling the same entry again
    finds it, and the same title with another date is another post."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2([Item("Weekly note", published=T0)]))
    assert poll(sessions, feed_id).new == 1
    digest = hashlib.sha256(f"Weekly note\x00{T0.isoformat()}".encode()).hexdigest()
    [post] = stored(sessions)
    assert post.identity == f"guid:{digest}" and post.link == ""
    assert poll(sessions, feed_id).new == 0
    later = T0 + timedelta(days=7)
    server.route(
        FEED, body=rss2([Item("Weekly note", published=later), Item("Weekly note", published=T0)])
    )
    report = poll(sessions, feed_id)
    assert (report.new, report.updated) == (1, 1)
    assert len(stored(sessions)) == 2


def test_duplicate_guids_in_one_document_store_one_post_the_newest(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Two entries with one GUID: one post, the newer entry's text, the other counted as skipped."""
    feed_id = watched(server, sessions)
    server.route(
        FEED,
        body=rss2(
            [
                Item("Older copy", link="http://e.org/a", guid="dup", published=T0 - timedelta(1)),
                Item("Newer copy", link="http://e.org/b", guid="dup", published=T0),
            ]
        ),
    )
    report = poll(sessions, feed_id)
    assert (report.new, report.skipped) == (1, 1)
    [post] = stored(sessions)
    assert post.title == "Newer copy" and post.identity == "guid:dup"


def test_entries_without_dates_get_the_time_first_seen_and_keep_it(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """No pubDate: the post is dated when it was first stored, and later polls do not move that date."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2([Item("Undated", link="http://e.org/u", guid="u")]))
    before = datetime.now(UTC)
    poll(sessions, feed_id)
    after = datetime.now(UTC)
    [post] = stored(sessions)
    assert before - timedelta(seconds=1) <= post.published_at <= after + timedelta(seconds=1)
    time.sleep(0.05)
    poll(sessions, feed_id)
    assert stored(sessions)[0].published_at == post.published_at


def test_a_changed_guid_with_the_same_link_is_the_same_post(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A CMS migration rewrites GUIDs but not links: the post is updated to the new GUID, not sent again."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2([Item("Stable", link="http://e.org/p/1", guid="old-guid-1")]))
    assert poll(sessions, feed_id).new == 1
    server.route(FEED, body=rss2([Item("Stable", link="http://e.org/p/1", guid="new-guid-1")]))
    report = poll(sessions, feed_id)
    assert (report.new, report.updated, report.announce) == (0, 1, [])
    [post] = stored(sessions)
    assert post.guid == "new-guid-1" and post.identity == "guid:new-guid-1"


def test_an_edited_post_is_updated_and_not_announced_again(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Same GUID, new title, summary and categories: the row changes in place and announce stays empty."""
    feed_id = watched(server, sessions)
    original = Item("Draft title", link="http://e.org/p/9", guid="p9", published=T0)
    server.route(FEED, body=rss2([original]))
    first = poll(sessions, feed_id)
    assert first.new == 1 and len(first.announce) == 1
    edited = Item(
        "Final title",
        link="http://e.org/p/9",
        guid="p9",
        summary="<p>Now with a summary.</p>",
        published=T0,
        categories=["Refugees"],
    )
    server.route(FEED, body=rss2([edited]))
    report = poll(sessions, feed_id)
    assert (report.new, report.updated, report.announce) == (0, 1, [])
    [post] = stored(sessions)
    assert post.id == first.announce[0]
    assert (post.title, post.summary, slugs(post)) == (
        "Final title",
        "<p>Now with a summary.</p>",
        ["refugees"],
    )


# --------------------------------------------------------------------------------------- content


def test_titles_and_summaries_are_cleaned_before_they_are_stored(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """HTML and entities in titles become plain text; <script>, onerror= and javascript: links are gone
    from summaries while paragraphs and http links stay."""
    feed_id = watched(server, sessions)
    hostile = (
        '<p>Read <a href="https://example.org/r">the report</a>.</p>'
        '<img src="x" onerror="alert(1)"><script>alert(2)</script>'
        '<a href="javascript:alert(3)">click</a>'
    )
    server.route(
        FEED,
        body=rss2(
            [
                Item(
                    Raw("Q&amp;A: &lt;b&gt;Refugees&lt;/b&gt; &amp;amp; asylum &#8212; 2026"),
                    link="http://e.org/1",
                    summary=hostile,
                )
            ]
        ),
    )
    poll(sessions, feed_id)
    [post] = stored(sessions)
    assert post.title == "Q&A: Refugees & asylum — 2026"
    for bad in ("<script", "onerror", "alert", "javascript:", "<img"):
        assert bad not in post.summary
    assert post.summary.startswith('<p>Read <a href="https://example.org/r"')


def test_a_latin_1_feed_is_stored_as_the_right_characters(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """An ISO-8859-1 document (declared in its prolog, no charset in the header) reads correctly."""
    feed_id = watched(server, sessions)
    body = rss2([Item("Niños en la frontera", link="http://e.org/1")], encoding="iso-8859-1")
    assert "ñ".encode("latin-1") in body
    server.route(FEED, body=body, content_type="application/rss+xml")
    assert poll(sessions, feed_id).new == 1
    assert stored(sessions)[0].title == "Niños en la frontera"


def test_malformed_xml_with_readable_entries_is_stored_with_a_warning(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A bare & and an unclosed item: the entries are stored, the poll is ok, and the feed's last error
    tells the editor the document is not well-formed."""
    feed_id = watched(server, sessions)
    server.route(
        FEED,
        body=b'<?xml version="1.0"?><rss version="2.0"><channel><title>M</title>'
        b"<item><title>Trade & security</title><link>http://e.org/1</link></item>"
        b"<item><title>Two</title><link>http://e.org/2</link></channel></rss>",
    )
    report = poll(sessions, feed_id)
    assert (report.status, report.new) == ("ok", 2)
    feed = feed_row(sessions, feed_id)
    assert feed.last_status == "ok" and "not well-formed" in feed.last_error
    assert feed.consecutive_failures == 0


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"<<<>>> \x00 not a feed", "application/xml", "not a readable feed"),
        (b"<html><body>Sign in</body></html>", "text/html", "text/html is not an XML media type"),
        (b"", "application/rss+xml", "not an RSS or Atom feed"),
    ],
    ids=["garbage", "html-page", "empty-body"],
)
def test_a_document_that_is_not_a_feed_is_a_failed_poll(
    server: FeedServer,
    sessions: sessionmaker[Session],
    body: bytes,
    content_type: str,
    message: str,
) -> None:
    """Garbage, an HTML page or an empty body: nothing stored, the failure recorded with its reason."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=body, content_type=content_type)
    report = poll(sessions, feed_id, now=T0)
    assert report.status == "error" and message in report.error
    feed = feed_row(sessions, feed_id)
    assert (feed.last_status, feed.consecutive_failures) == ("error", 1)
    assert message in feed.last_error and stored(sessions) == []


def test_an_empty_feed_is_a_successful_poll_with_nothing_new(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A feed without items: status ok, no error, the title learnt, and the poll time recorded."""
    server.route(FEED, body=rss2([], title="A quiet blog"))
    feed_id = register(sessions, server.url(FEED))
    report = poll(sessions, feed_id, now=T0)
    assert (report.status, report.new, report.backlog, report.error) == ("ok", 0, 0, "")
    feed = feed_row(sessions, feed_id)
    assert (feed.title, feed.last_status, feed.last_error) == ("A quiet blog", "ok", "")
    assert feed.last_polled_at == T0 and feed.next_poll_at == T0 + timedelta(seconds=900)
    assert stored(sessions) == []


# --------------------------------------------------------------------------------------- HTTP


def test_conditional_get_sends_the_validators_back_and_a_304_changes_nothing(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """The ETag and Last-Modified of a 200 are stored and sent back; the 304 that follows stores no post,
    keeps the validators for the next poll, and counts as a healthy poll."""
    etag, modified = '"v1-abc"', "Mon, 02 Nov 2026 07:00:00 GMT"
    server.route(FEED, body=rss2(items(2)), etag=etag, last_modified=modified)
    feed_id = register(sessions, server.url(FEED))
    assert poll(sessions, feed_id).backlog == 2
    first = server.requests_for(FEED)[0].headers
    assert "if-none-match" not in first and "if-modified-since" not in first
    feed = feed_row(sessions, feed_id)
    assert (feed.etag, feed.last_modified) == (etag, modified)

    for _ in range(2):
        report = poll(sessions, feed_id, now=T0)
        assert (report.status, report.new, report.updated) == ("not_modified", 0, 0)
        asked = server.requests_for(FEED)[-1]
        assert asked.status == 304
        assert asked.headers["if-none-match"] == etag
        assert asked.headers["if-modified-since"] == modified
    feed = feed_row(sessions, feed_id)
    assert (feed.last_status, feed.consecutive_failures, feed.etag) == ("not_modified", 0, etag)
    assert feed.last_polled_at == T0 and len(stored(sessions)) == 2


def test_last_modified_alone_gives_a_304(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A server without ETags: If-Modified-Since alone is sent back and its 304 is honoured."""
    modified = "Sun, 01 Nov 2026 12:00:00 GMT"
    server.route(FEED, body=rss2(items(1)), last_modified=modified)
    feed_id = register(sessions, server.url(FEED))
    poll(sessions, feed_id)
    assert poll(sessions, feed_id).status == "not_modified"
    last = server.requests_for(FEED)[-1].headers
    assert last["if-modified-since"] == modified and "if-none-match" not in last


@pytest.mark.parametrize("status", [404, 500])
def test_an_http_error_is_recorded_on_the_feed(
    server: FeedServer, sessions: sessionmaker[Session], status: int
) -> None:
    """404 or 500: poll_feed does not raise; the feed records the status, the error and one failure."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=b"oops", status=status, content_type="text/plain")
    report = poll(sessions, feed_id, now=T0)
    assert report.status == "error" and report.error == f"HTTP {status} from 127.0.0.1"
    feed = feed_row(sessions, feed_id)
    assert (feed.last_status, feed.last_error, feed.consecutive_failures) == (
        "error",
        f"HTTP {status} from 127.0.0.1",
        1,
    )
    assert feed.next_poll_at == T0 + timedelta(seconds=900)


def test_a_server_that_does_not_answer_in_time_is_a_timeout(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A server that waits 3 s before answering, with a 0.5 s limit: the poll gives up quickly."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2(items(1)), delay=3.0)
    started = time.monotonic()
    report = poll(sessions, feed_id, timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert report.status == "error" and "timed out" in report.error
    assert feed_row(sessions, feed_id).consecutive_failures == 1


def test_a_server_that_drips_its_body_is_stopped_by_the_time_limit(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """The timeout is "the time limit of one feed fetch": a body trickled out over 1.6 s is not
    accepted with a 0.5 s limit, although each chunk arrives within 0.5 s so that a per-read timeout
    never fires. (Regression: the limit used to apply to each read only.)"""
    feed_id = watched(server, sessions)
    body = rss2(items(1)) + b" " * 7000
    server.route(FEED, body=body, drip=0.2, chunk_size=1024)
    started = time.monotonic()
    report = poll(sessions, feed_id, timeout=0.5)
    elapsed = time.monotonic() - started
    assert report.status == "error" and "timed out" in report.error
    assert elapsed < 1.2


def test_a_server_that_drips_its_headers_is_stopped_by_the_time_limit(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Eight header lines 0.2 s apart (1.6 s) with a 0.5 s limit: each read returns within the read
    timeout, so only a limit on the whole fetch stops it; the poll must fail as timed out, quickly."""
    feed_id = watched(server, sessions)
    padding = {f"X-Pad-{n}": "x" for n in range(8)}
    server.route(FEED, body=rss2(items(1)), headers=padding, header_drip=0.2)
    started = time.monotonic()
    report = poll(sessions, feed_id, timeout=0.5)
    elapsed = time.monotonic() - started
    assert report.status == "error" and "timed out" in report.error
    assert elapsed < 1.2


def test_a_gzipped_feed_is_read(server: FeedServer, sessions: sessionmaker[Session]) -> None:
    """The fetcher accepts gzip and reads a compressed answer."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2(items(3)), gzip=True)
    assert poll(sessions, feed_id).new == 3
    last = server.requests_for(FEED)[-1]
    assert "gzip" in last.headers["accept-encoding"] and last.gzipped


CAP = 64 * 1024


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ({}, False),
        ({"pad": 200_000}, True),
        ({"pad": 200_000, "send_length": False}, True),
        ({"pad": 2_000_000, "gzip": True}, True),
    ],
    ids=["under-the-cap", "content-length-over", "streamed-over", "gzip-bomb"],
)
def test_a_body_over_the_cap_is_refused(
    server: FeedServer, sessions: sessionmaker[Session], answer: dict[str, Any], refused: bool
) -> None:
    """max_bytes holds whether the size is declared, only discovered while reading, or hidden by gzip
    (2 MB that compress to a few KB); a feed under the cap is read."""
    answer = dict(answer)
    pad = answer.pop("pad", 0)
    body = rss2(items(2)).replace(b"</channel>", b"<!--" + b" " * pad + b"--></channel>")
    feed_id = watched(server, sessions)
    server.route(FEED, body=body, **answer)
    report = poll(sessions, feed_id, max_bytes=CAP)
    if not refused:
        assert report.status == "ok" and report.new == 2
        return
    assert report.status == "error" and report.error == f"feed is larger than {CAP} bytes"
    assert stored(sessions) == []
    if answer.get("gzip"):
        assert server.requests_for(FEED)[-1].gzipped


def test_up_to_three_redirects_are_followed(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Three redirects (absolute and relative Locations, 301/302/307/308) lead to the feed; a fourth
    is refused before it is followed."""
    server.route(FEED, body=rss2(items(1)))
    server.route("/a1", location=server.url("/a2"), status=301)
    server.route("/a2", location="/a3", status=307)
    server.route("/a3", location=FEED, status=308)
    ok = register(sessions, server.url("/a1"))
    assert poll(sessions, ok).backlog == 1
    assert [r.path for r in server.requests][-4:] == ["/a1", "/a2", "/a3", FEED]

    server.route("/b1", location="/b2")
    server.route("/b2", location="/b3")
    server.route("/b3", location="/b4")
    server.route("/b4", location=FEED)
    too_many = register(sessions, server.url("/b1"))
    before = len(server.requests_for(FEED))
    report = poll(sessions, too_many)
    assert report.status == "error" and report.error == "more than 3 redirects"
    assert len(server.requests_for(FEED)) == before


def test_a_redirect_to_a_non_http_scheme_is_refused(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A Location of file:///etc/passwd is refused, even with private addresses allowed."""
    server.route("/r", location="file:///etc/passwd")
    feed_id = register(sessions, server.url("/r"))
    report = poll(sessions, feed_id)
    assert report.status == "error" and "not an http or https URL" in report.error


# --------------------------------------------------------------------------------------- addresses


def test_a_loopback_feed_is_refused_unless_private_addresses_are_allowed(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """With allow_private False, a feed on 127.0.0.1 is refused before any request is made."""
    server.route(FEED, body=rss2(items(1)))
    feed_id = register(sessions, server.url(FEED))
    report = poll(sessions, feed_id, allow_private=False)
    assert report.status == "error"
    assert "127.0.0.1" in report.error and "loopback" in report.error
    assert "NEWSLETTER_FEEDS_ALLOW_PRIVATE_ADDRESSES" in report.error
    assert server.requests == []
    assert poll(sessions, feed_id, allow_private=True).status == "ok"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/feed",
        "http://172.16.5.4/feed",
        "http://192.168.1.10/feed",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/feed",
        "http://0.0.0.0/feed",
        "http://100.64.0.1/feed",
        "http://[::1]/feed",
        "http://[::ffff:127.0.0.1]/feed",
        "http://[::ffff:10.0.0.1]/feed",
        "http://[fe80::1]/feed",
        "http://[fd00::1]/feed",
        "http://224.0.0.1/feed",
        "http://localhost/feed",
    ],
)
def test_check_address_refuses_private_loopback_and_link_local_addresses(url: str) -> None:
    """Address literals (and localhost) that are not on the public internet are refused when private
    addresses are not allowed; resolving a literal sends nothing on the network."""
    with pytest.raises(FeedFetchError, match="private, loopback or link-local"):
        check_address(url, allow_private=False)
    check_address(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/feed",
        "https://[2606:4700:4700::1111]/feed",
        "http://[::ffff:93.184.216.34]/feed",
    ],
)
def test_check_address_accepts_public_addresses(url: str) -> None:
    """A public IPv4 or IPv6 literal, or a public IPv4 in IPv6 form, passes the check (check_address
    makes no connection)."""
    check_address(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.org/feed", "gopher://127.0.0.1/", "http:///feed", "feed"],
)
def test_check_address_accepts_only_http_and_https(url: str) -> None:
    """Other schemes, or no host at all, are refused whatever allow_private says."""
    for allow in (False, True):
        with pytest.raises(FeedFetchError, match="not an http or https URL"):
            check_address(url, allow_private=allow)


PUBLIC_HOST = "feeds.public.example"
PUBLIC_ADDRESS = "93.184.216.34"


class LoopbackOnlyTransport(httpx.BaseTransport):
    """Sends requests for PUBLIC_HOST to the local feed server; records and refuses anything else."""

    def __init__(self, server: FeedServer) -> None:
        self.port = server.port
        self.inner = httpx.HTTPTransport()
        self.asked: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(str(request.url))
        if request.url.host != PUBLIC_HOST:
            raise httpx.ConnectError(f"test transport: no connection to {request.url.host}")
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def public_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_address resolves PUBLIC_HOST to a public address; other names must be literals (or
    localhost), so no DNS query leaves the machine."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host == PUBLIC_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port))]
        if host != "localhost":
            kwargs["flags"] = socket.AI_NUMERICHOST
        return socket.getaddrinfo(host, port, *args, **kwargs)

    fake = SimpleNamespace(
        getaddrinfo=getaddrinfo, gaierror=socket.gaierror, IPPROTO_TCP=socket.IPPROTO_TCP
    )
    monkeypatch.setattr(fetch_module, "socket", fake)


@pytest.mark.usefixtures("public_resolver")
@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/feed.xml",
        "http://192.168.1.10/feed.xml",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:{port}/feed.xml",
        "http://localhost:{port}/feed.xml",
        "http://[::1]:{port}/feed.xml",
        "http://[::ffff:127.0.0.1]:{port}/feed.xml",
    ],
)
def test_a_redirect_from_a_public_host_to_a_private_address_is_refused_before_connecting(
    server: FeedServer, target: str
) -> None:
    """The first hop (a public name) is fetched; its redirect to a private, loopback or link-local
    address is refused by check_address before any connection: the transport never sees the second
    URL, and the local server, which would have answered at 127.0.0.1, never gets the request."""
    location = target.format(port=server.port)
    server.route("/start", location=location)
    server.route(FEED, body=rss2(items(1)))
    transport = LoopbackOnlyTransport(server)
    with pytest.raises(FeedFetchError, match="private, loopback or link-local"):
        fetch_feed(
            f"http://{PUBLIC_HOST}/start", allow_private=False, timeout=2, transport=transport
        )
    assert transport.asked == [f"http://{PUBLIC_HOST}/start"]
    assert [r.path for r in server.requests] == ["/start"]


@pytest.mark.usefixtures("public_resolver")
def test_the_redirect_harness_follows_a_redirect_between_public_urls(server: FeedServer) -> None:
    """Control for the test above: with the same resolver and transport, a redirect to another public
    URL is followed, so the refusals there come from the address check and not from the harness."""
    server.route("/start", location=f"http://{PUBLIC_HOST}{FEED}")
    server.route(FEED, body=rss2(items(1)))
    transport = LoopbackOnlyTransport(server)
    result = fetch_feed(
        f"http://{PUBLIC_HOST}/start", allow_private=False, timeout=2, transport=transport
    )
    assert b"Post 0" in result.body and result.url == f"http://{PUBLIC_HOST}{FEED}"
    assert [r.path for r in server.requests] == ["/start", FEED]


# --------------------------------------------------------------------------------------- health


def test_failures_back_off_and_the_fifth_in_a_row_pauses_the_feed(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Each failure doubles the wait (capped at six hours) and counts; the fifth pauses the feed with a
    reason naming the error, so it is no longer due; resuming and a good poll clear it all."""
    server.route(FEED, body=b"down", status=500, content_type="text/plain")
    feed_id = register(sessions, server.url(FEED), interval=3600)
    waits = []
    now = T0
    for failure in range(1, PAUSE_AFTER_FAILURES + 1):
        report = poll(sessions, feed_id, now=now)
        feed = feed_row(sessions, feed_id)
        assert feed.consecutive_failures == failure
        assert feed.next_poll_at is not None
        waits.append(feed.next_poll_at - now)
        if failure < PAUSE_AFTER_FAILURES:
            assert report.status == "error" and feed.paused_reason is None
        now += timedelta(hours=7)
    assert waits == [timedelta(hours=h) for h in (1, 2, 4, 6, 6)]
    assert report.status == "paused" and PAUSE_AFTER_FAILURES == 5
    assert feed.paused_reason == "paused after 5 failed polls in a row: HTTP 500 from 127.0.0.1"
    with sessions() as session:
        assert feed_id not in feed_ops.due_feed_ids(session=session, now=now + timedelta(days=30))

    server.route(FEED, body=rss2(items(2)))
    with sessions.begin() as session:
        feed_ops.set_feed_paused(session=session, feed_id=feed_id, reason=None)
    report = poll(sessions, feed_id, now=now)
    feed = feed_row(sessions, feed_id)
    assert report.status == "ok" and report.backlog == 2
    assert (feed.consecutive_failures, feed.last_error, feed.paused_reason) == (0, "", None)
    assert feed.next_poll_at == now + timedelta(hours=1)


def test_a_good_poll_resets_the_failure_count(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Two failures then a success: the count starts over and the normal interval applies."""
    feed_id = watched(server, sessions)
    server.route(FEED, status=500)
    poll(sessions, feed_id, now=T0)
    poll(sessions, feed_id, now=T0)
    assert feed_row(sessions, feed_id).consecutive_failures == 2
    server.route(FEED, body=rss2(items(1)))
    poll(sessions, feed_id, now=T0)
    feed = feed_row(sessions, feed_id)
    assert (feed.consecutive_failures, feed.last_status, feed.last_error) == (0, "ok", "")
    assert feed.next_poll_at == T0 + timedelta(seconds=900)


def test_overlong_validators_are_dropped_and_the_poll_goes_on(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A 1,000-character ETag and a 200-character Last-Modified do not fit their columns (VARCHAR 400
    and 100): the posts are stored, the validators dropped, and the next poll is unconditional.
    (Regression: PostgreSQL raised out of poll_feed.)"""
    server.route(FEED, body=rss2(items(2)), etag='"' + "e" * 1000 + '"', last_modified="M" * 200)
    feed_id = register(sessions, server.url(FEED))
    report = poll(sessions, feed_id)
    assert report.status == "ok" and report.backlog == 2
    feed = feed_row(sessions, feed_id)
    assert (feed.etag, feed.last_modified, feed.last_status) == (None, None, "ok")
    assert poll(sessions, feed_id).status == "ok"
    again = server.requests_for(FEED)[-1].headers
    assert "if-none-match" not in again and "if-modified-since" not in again


# --------------------------------------------------------------------------------------- backlog


def test_first_poll_of_a_feed_with_50_old_entries_announces_none(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A new feed's 50 existing entries are stored as seen (notify False), none announced; the entry
    published after that is new and announced."""
    server.route(FEED, body=rss2(items(50)))
    feed_id = register(sessions, server.url(FEED))
    report = poll(sessions, feed_id)
    assert (report.new, report.backlog, report.announce, report.skipped) == (0, 50, [], 0)
    posts = stored(sessions)
    assert len(posts) == 50 and not any(p.notify for p in posts)
    assert all(p.status is PostStatus.PUBLISHED for p in posts)

    newer = Item(
        "Fresh", link="http://example.org/fresh", guid="fresh", published=T0 + timedelta(1)
    )
    server.route(FEED, body=rss2([newer, *items(50)]))
    report = poll(sessions, feed_id)
    fresh = stored(sessions)[0]
    assert (report.new, report.backlog, report.updated) == (1, 0, 50)
    assert report.announce == [fresh.id] and fresh.title == "Fresh" and fresh.notify


def test_send_latest_mails_the_newest_n_of_the_first_poll(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """send_latest=3: the three newest of 50 entries are announced, the other 47 recorded as seen."""
    server.route(FEED, body=rss2(list(reversed(items(50)))))  # document order must not matter
    feed_id = register(sessions, server.url(FEED), send_latest=3)
    report = poll(sessions, feed_id)
    assert (report.new, report.backlog) == (3, 47)
    posts = stored(sessions)
    assert [p.title for p in posts if p.notify] == ["Post 0", "Post 1", "Post 2"]
    assert report.announce == [p.id for p in posts[:3]]


# --------------------------------------------------------------------------------------- approval


def test_a_feed_that_requires_approval_holds_new_posts_until_approved(
    server: FeedServer, sessions: sessionmaker[Session], service_env: dict[str, str], redis_url: str
) -> None:
    """New posts of a held feed are HELD and not announced; `newsletter posts approve ID` publishes the
    post and queues its alerts on the broker."""
    feed_id = watched(server, sessions, requires_approval=True)
    server.route(FEED, body=rss2(items(1)))
    report = poll(sessions, feed_id)
    assert (report.new, report.held, report.announce) == (0, 1, [])
    [post] = stored(sessions)
    assert post.status is PostStatus.HELD and post.notify
    env = feed_env(service_env)
    held = newsletter("posts", "list", "--held", env=env).stdout
    assert f"{post.id}\t" in held and "Post 0" in held

    out = newsletter("posts", "approve", str(post.id), env=env).stdout
    assert out.strip() == f"{post.id}\tapproved\tPost 0"
    assert stored(sessions)[0].status is PostStatus.PUBLISHED
    assert queued(redis_url) == [(PLAN_POST_ALERTS, [post.id])]
    again = newsletter("posts", "approve", str(post.id), env=env, check=False)
    assert again.returncode == 1 and "is not held" in again.stderr


# --------------------------------------------------------------------------------------- CLI


def test_poll_all_reports_both_feeds_when_one_is_broken(
    server: FeedServer, sessions: sessionmaker[Session], service_env: dict[str, str], redis_url: str
) -> None:
    """`newsletter feeds poll --all`: the broken feed (500) does not stop the good one, whose posts are
    stored and announced; both are reported and the exit code is 1."""
    server.route("/broken.xml", status=500, body=b"down", content_type="text/plain")
    server.route("/good.xml", body=rss2([]))
    env = feed_env(service_env)
    broken = newsletter("feeds", "add", server.url("/broken.xml"), "--topic", "mexico", env=env)
    good = newsletter("feeds", "add", server.url("/good.xml"), "--topic", "migration", env=env)
    broken_id, good_id = (int(r.stdout.split("\t")[0]) for r in (broken, good))
    assert poll(sessions, good_id).status == "ok"  # so that what follows is new, not backlog
    server.route("/good.xml", body=rss2(items(2)))

    result = newsletter("feeds", "poll", "--all", env=env, check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert f"feed {broken_id}: error: HTTP 500 from 127.0.0.1" in lines
    assert f"feed {good_id}: 2 new, 0 updated" in lines
    posts = stored(sessions)
    assert [p.title for p in posts] == ["Post 0", "Post 1"]
    assert sorted(args[0] for _, args in queued(redis_url)) == sorted(p.id for p in posts)
    listing = newsletter("feeds", "list", env=env).stdout
    assert f"{broken_id}\terror\t1\tmexico\t" in listing and "HTTP 500" in listing


def test_the_demo_feed_from_the_sample_posts(
    server: FeedServer, database_url: str, service_env: dict[str, str], redis_url: str
) -> None:
    """The sample posts as an RSS 2.0 feed with topic names as categories, added with the CLI with one
    --map per topic and --send-latest 3, then polled: 9 posts with the sample's topics, the 3 newest
    announced (and queued), the other 6 recorded as seen."""
    factory = migrated_sessions(database_url)
    with factory.begin() as session:
        for slug, name, description in DEMO_TOPICS:
            add_topic(session=session, slug=slug, name=name, description=description)
    names = {slug: name for slug, name, _ in DEMO_TOPICS}
    sample = parse_sample_posts(sample_text())
    assert len(sample) == 9
    demo = [
        Item(
            post.title,
            link=f"http://example.org/demo/posts/{n}",
            guid=f"http://example.org/demo/posts/{n}",
            guid_is_permalink=True,
            summary="".join(f"<p>{p}</p>" for p in post.summary.split("\n\n") if p),
            published=T0 - timedelta(days=n),
            categories=[names[slug] for slug in post.topics],
        )
        for n, post in enumerate(sample)
    ]
    server.route("/demo.xml", body=rss2(demo, title="Border Security"))
    env = feed_env(service_env)
    maps = [arg for slug, name, _ in DEMO_TOPICS for arg in ("--map", f"{name}={slug}")]
    url = server.url("/demo.xml")
    args = ["feeds", "add", url, "--topic", "border-security", *maps, "--send-latest", "3"]
    added = newsletter(*args, env=env)
    feed_id = int(added.stdout.split("\t")[0])
    result = newsletter("feeds", "poll", str(feed_id), env=env)
    assert result.stdout.strip() == f"feed {feed_id}: 3 new, 0 updated, 6 backlog recorded as seen"

    posts = stored(factory)
    assert [p.title for p in posts] == [post.title for post in sample]
    for post, source in zip(posts, sample, strict=True):
        assert slugs(post) == sorted(source.topics), post.title
        assert post.unmapped_categories == []
    assert [p.notify for p in posts] == [True] * 3 + [False] * 6
    assert sorted(queued(redis_url)) == sorted((PLAN_POST_ALERTS, [p.id]) for p in posts[:3])
    factory.kw["bind"].dispose()


# --------------------------------------------------------------------------------------- relative links


def test_relative_links_in_an_atom_feed_are_stored_absolute(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Atom permits relative links; they resolve against the feed's URL and the entries are stored.
    (Regression: they stayed relative, failed the http(s) check and the entries were skipped.)"""
    feed_id = watched(server, sessions)
    server.route(FEED, body=atom([Item("Relative", link="/posts/r1", guid="urn:r1")]))
    report = poll(sessions, feed_id)
    assert (report.new, report.skipped) == (1, 0)
    assert stored(sessions)[0].link == f"http://127.0.0.1:{server.port}/posts/r1"


# --------------------------------------------------------------------------------------- what a poll costs (#18)


class _Statements:
    """The SQL statements an engine runs while the block is open (BEGIN/COMMIT left out)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.engine = sessions.kw["bind"]
        self.seen: list[str] = []

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = " ".join(statement.split())
        if not words.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            self.seen.append(words)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def test_a_304_poll_runs_one_select_and_one_update_and_nothing_else(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """After a 304 the poller touches almost nothing: one narrow SELECT of the feed's URL and
    validators before the request, one UPDATE of its poll times after it; no post is read."""
    server.route(FEED, body=rss2(items(3)), etag='"v1"')
    feed_id = register(sessions, server.url(FEED))
    poll(sessions, feed_id)
    with _Statements(sessions) as statements:
        report = poll(sessions, feed_id, now=T0)
    assert report.status == "not_modified"
    assert server.requests_for(FEED)[-1].status == 304
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE"], statements
    assert "FROM feeds" in statements[0] and statements[1].startswith("UPDATE feeds SET")
    feed = feed_row(sessions, feed_id)
    assert (feed.last_status, feed.etag, feed.last_polled_at) == ("not_modified", '"v1"', T0)
    assert feed.next_poll_at == T0 + timedelta(seconds=900)


def test_entries_a_changed_feed_repeats_unchanged_are_not_written_again(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A changed feed of one new and two old entries: the new one is inserted, the old ones are
    compared with their posts and left alone (counted as updated, as before); an old entry that
    was edited is still written."""
    feed_id = watched(server, sessions)
    server.route(FEED, body=rss2(items(3)[1:]))
    assert poll(sessions, feed_id).new == 2
    server.route(FEED, body=rss2(items(3)))
    with _Statements(sessions) as statements:
        report = poll(sessions, feed_id)
    assert (report.new, report.updated) == (1, 2)
    assert not [s for s in statements if s.startswith("UPDATE posts")], statements
    assert len([s for s in statements if s.startswith("INSERT INTO posts ")]) == 1

    edited = items(3)
    edited[2] = Item("Post 2, edited", link=edited[2].link, guid=edited[2].guid,
                     summary=edited[2].summary, published=edited[2].published)  # fmt: skip
    server.route(FEED, body=rss2(edited))
    with _Statements(sessions) as statements:
        report = poll(sessions, feed_id)
    assert (report.new, report.updated) == (0, 3)
    assert len([s for s in statements if s.startswith("UPDATE posts")]) == 1
    assert "Post 2, edited" in [p.title for p in stored(sessions)]


def test_polls_in_one_process_share_one_client_and_its_kept_alive_connection(
    sessions: sessionmaker[Session],
) -> None:
    """The poller's default transport is one FeedFetcher per process: three polls of a server
    that keeps connections alive arrive on one TCP connection (one client port)."""
    ports: list[int] = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            ports.append(self.client_address[1])
            if self.headers.get("If-None-Match") == '"k1"':
                self.send_response(304)
                self.send_header("ETag", '"k1"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = rss2(items(1))
            self.send_response(200)
            self.send_header("ETag", '"k1"')
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        feed_id = register(sessions, f"http://127.0.0.1:{httpd.server_address[1]}/feed.xml")
        statuses = [poll(sessions, feed_id).status for _ in range(3)]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert statuses == ["ok", "not_modified", "not_modified"]
    assert len(ports) == 3 and len(set(ports)) == 1, ports
    assert shared_fetcher(allow_private=True) is shared_fetcher(allow_private=True)


def test_a_fetch_that_runs_out_of_time_leaves_the_shared_client_working(
    server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A dripping feed times out on the shared client (its connection ends at the fetch's
    deadline, no watchdog closes the client), and the next feed on the same client is read."""
    slow = register(sessions, server.url("/slow.xml"))
    server.route("/slow.xml", body=rss2(items(1)), headers={f"X-Pad-{n}": "x" for n in range(8)},
                 header_drip=0.2)  # fmt: skip
    started = time.monotonic()
    report = poll(sessions, slow, timeout=0.5)
    assert report.status == "error" and "timed out" in report.error
    assert time.monotonic() - started < 1.2
    server.route(FEED, body=rss2(items(2)))
    fine = register(sessions, server.url(FEED))
    report = poll(sessions, fine, timeout=0.5)
    assert (report.status, report.backlog) == ("ok", 2)
