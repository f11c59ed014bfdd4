"""Console pages for content: topics, feeds, posts and suppressions, through the real sign-in form.

Every page and form is tried without a session; every form without its CSRF token; the one admin-only
action as an editor. Real database and Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from subscriptions import feeds, posts, readers, suppressions, topics
from subscriptions.models import Feed, Frequency, Post, PostStatus, Suppression, Topic
from subscriptions.queue import PLAN_POST_ALERTS, POLL_FEED
from tests.consoles import Console
from tests.integration.test_api_content import carry
from tests.webforms import post_form


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    yield made
    made.close()


def seed(console: Console) -> dict[str, int]:
    """A feed, a post and a suppression to point the pages at."""
    with console.sessions.begin() as session:
        feed = feeds.add_feed(session=session, url="https://example.org/feed.xml", topic="mexico")
        post = posts.add_post(
            session=session, title="A post", link="https://example.org/p/1", topics=["mexico"]
        )
        entry, _ = suppressions.add_suppression(
            session=session, email="gone@example.org", detail="asked"
        )
        topic = session.scalar(select(Topic.id).where(Topic.slug == "mexico"))
        assert topic is not None
    return {"topic": topic, "feed": feed.id, "post": post.id, "suppression": entry.id}


PAGES = [
    "/admin/topics",
    "/admin/topics/{topic}",
    "/admin/feeds",
    "/admin/feeds/{feed}",
    "/admin/posts",
    "/admin/posts/{post}",
    "/admin/suppressions",
]
#: (form action, the page its form is on, fields)
FORMS = [
    ("/admin/topics", "/admin/topics", {"slug": "russia", "name": "Russia"}),
    ("/admin/topics/{topic}", "/admin/topics/{topic}", {"name": "Mexico!", "description": ""}),
    ("/admin/topics/{topic}/archive", "/admin/topics/{topic}", {"archived": "yes"}),
    (
        "/admin/feeds",
        "/admin/feeds",
        {"url": "https://example.org/b.xml", "topic": "mexico", "interval": "900"},
    ),
    ("/admin/feeds/{feed}", "/admin/feeds/{feed}", {"topic": "mexico", "interval": "600"}),
    ("/admin/feeds/{feed}/poll", "/admin/feeds/{feed}", {}),
    ("/admin/feeds/{feed}/pause", "/admin/feeds/{feed}", {"reason": "x"}),
    ("/admin/feeds/{feed}/resume", "/admin/feeds/{feed}", {}),
    ("/admin/posts/{post}/hold", "/admin/posts/{post}", {}),
    ("/admin/posts/{post}/approve", "/admin/posts/{post}", {}),
    ("/admin/suppressions", "/admin/suppressions", {"email": "x@example.org", "reason": "r"}),
    ("/admin/suppressions/{suppression}/remove", "/admin/suppressions", {}),
]


def snapshot(console: Console) -> tuple[object, ...]:
    """What the content forms can change."""
    with console.sessions() as session:
        return (
            tuple(session.execute(select(Topic.name, Topic.archived_at).order_by(Topic.id))),
            tuple(
                session.execute(
                    select(Feed.poll_interval_seconds, Feed.paused_reason).order_by(Feed.id)
                )
            ),
            tuple(session.scalars(select(Post.status).order_by(Post.id))),
            session.scalar(select(func.count()).select_from(Suppression)),
        )


def test_pages_and_forms_need_a_session(console: Console) -> None:
    ids = seed(console)
    client = console.client()
    for path in PAGES:
        answer = client.get(path.format(**ids))
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/admin/login?next=/admin/")
    before = snapshot(console)
    for action, _, data in FORMS:
        answer = client.post(action.format(**ids), data=data)
        assert answer.status_code == 303, action
        assert answer.headers["location"].startswith("/admin/login")
    assert snapshot(console) == before


def test_every_form_refuses_a_missing_or_forged_csrf_token(console: Console) -> None:
    ids = seed(console)
    client = console.signed_in(role="admin")
    before = snapshot(console)
    for action, _, data in FORMS:
        for token in (None, "forged"):
            fields = dict(data) if token is None else {**data, "csrf_token": token}
            answer = client.post(action.format(**ids), data=fields)
            assert answer.status_code == 400, (action, answer.status_code)
            assert "expired" in answer.text or "Please try again" in answer.text
    assert snapshot(console) == before
    assert redis.Redis.from_url(console.settings.broker_url or "").llen("newsletter") == 0


def test_every_page_renders_for_an_editor(console: Console) -> None:
    ids = seed(console)
    client = console.signed_in("editor@example.org", role="editor")
    for path in PAGES:
        answer = client.get(path.format(**ids))
        assert answer.status_code == 200, (path, answer.text)
        assert 'name="csrf_token"' in answer.text
    for path in ("/admin/topics/999999", "/admin/feeds/999999", "/admin/posts/999999"):
        assert client.get(path).status_code == 404
    assert client.get("/admin/posts?page=0").status_code == 400
    # A feed whose default topic was archived still shows it, so saving keeps it.
    with console.sessions.begin() as session:
        topics.set_topic_archived(session=session, topic_id=ids["topic"], archived=True)
    page = client.get(f"/admin/feeds/{ids['feed']}").text
    assert '<option value="mexico" selected>mexico (archived' in page
    assert client.get("/admin/posts?status=draft").status_code == 400
    for query in ("q=a%00b", "topic=a%00b", "email=a%00b@example.org"):
        path = "/admin/suppressions" if query.startswith("email") else "/admin/posts"
        assert client.get(f"{path}?{query}").status_code == 400, query


def test_topics_create_rename_describe_archive_and_bring_back(console: Console) -> None:
    client = console.signed_in(role="editor")
    page = client.get("/admin/topics").text
    assert "Border Security" in page and "receives no more posts" in page

    bad = post_form(client, "/admin/topics", "/admin/topics", {"slug": "Bad Slug", "name": "X"})
    assert bad.status_code == 400 and "lower-case letters" in bad.text
    assert 'value="X"' in bad.text  # what was typed is kept

    made = post_form(
        client, "/admin/topics", "/admin/topics", {"slug": "russia", "name": "Rus\x00sia"}
    )
    assert made.status_code == 303 and made.headers["location"].endswith("notice=topic-created")
    assert "Topic created." in client.get(made.headers["location"]).text
    with console.sessions() as session:
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "russia"))
    url = f"/admin/topics/{topic_id}"
    saved = post_form(client, url, url, {"name": "Russia and Ukraine", "description": "East."})
    assert saved.status_code == 303
    page = client.get(url).text
    assert "Russia and Ukraine" in page and "East." in page
    empty = post_form(client, url, url, {"name": " ", "description": ""})
    assert empty.status_code == 400 and "1 to 200 characters" in empty.text

    archived = post_form(client, url, f"{url}/archive", {"archived": "yes"})
    assert archived.status_code == 303
    page = client.get(archived.headers["location"]).text
    assert "archived" in page and "Bring the topic back" in page
    assert "russia" not in console.app.state.runtime.live_topics()
    assert post_form(client, url, f"{url}/archive", {"archived": "no"}).status_code == 303
    with console.sessions() as session:
        assert session.scalar(select(Topic.archived_at).where(Topic.id == topic_id)) is None


def test_feeds_add_map_poll_pause_and_resume(console: Console, redis_url: str) -> None:
    client = console.signed_in(role="editor")
    bad = post_form(
        client,
        "/admin/feeds",
        "/admin/feeds",
        {"url": "ftp://example.org/x", "topic": "mexico", "interval": "900"},
    )
    assert bad.status_code == 400 and "http or https" in bad.text
    rules = post_form(
        client,
        "/admin/feeds",
        "/admin/feeds",
        {
            "url": "https://example.org/x",
            "topic": "mexico",
            "interval": "900",
            "category_map": "no",
        },
    )
    assert rules.status_code == 400 and "category = topic-slug" in rules.text

    added = post_form(
        client,
        "/admin/feeds",
        "/admin/feeds",
        {
            "url": "https://example.org/feed.xml",
            "topic": "mexico",
            "interval": "300",
            "category_map": "Refugees = refugees\n",
            "requires_approval": "yes",
        },
    )
    assert added.status_code == 303, added.text
    url = added.headers["location"].partition("?")[0]
    page = client.get(added.headers["location"]).text
    assert "Feed added" in page and "refugees = refugees" in page and "never" in page

    saved = post_form(
        client,
        url,
        url,
        {"topic": "migration", "interval": "600", "category_map": "Border = border-security"},
    )
    assert saved.status_code == 303
    with console.sessions() as session:
        feed = session.scalars(select(Feed)).one()
        assert feed.category_map == {"border": "border-security"}
        assert feed.poll_interval_seconds == 600 and feed.requires_approval is False
    unknown = post_form(
        client, url, url, {"topic": "mexico", "interval": "600", "category_map": "x = nope"}
    )
    assert unknown.status_code == 400 and "unknown topic: nope" in unknown.text
    assert "x = nope" in unknown.text  # the rules typed are kept for correcting

    queue = redis.Redis.from_url(redis_url)
    polled = post_form(client, url, f"{url}/poll", {})
    assert polled.headers["location"].endswith("notice=feed-polling")
    assert POLL_FEED.encode() in (queue.lindex("newsletter", 0) or b"")

    paused = post_form(client, url, f"{url}/pause", {"reason": "site moving"})
    assert "Feed paused." in client.get(paused.headers["location"]).text
    assert "paused: site moving" in client.get(url).text
    assert "paused" in client.get("/admin/feeds").text
    resumed = post_form(client, url, f"{url}/resume", {})
    assert resumed.status_code == 303
    with console.sessions() as session:
        assert session.scalars(select(Feed.paused_reason)).one() is None


def test_posts_search_paginate_hold_approve_and_show_their_digests(
    console: Console, redis_url: str
) -> None:
    with console.sessions.begin() as session:
        for n in range(55):
            posts.add_post(
                session=session,
                title=f"Border note {n}",
                link=f"https://example.org/n/{n}",
                topics=["border-security"],
            )
        held = posts.add_post(
            session=session,
            title="Refugee caps",
            link="https://example.org/caps",
            topics=["refugees"],
            held=True,
        )
    client = console.signed_in(role="editor")
    first = client.get("/admin/posts").text
    assert "56 posts, page 1 of 2" in first and "page=2" in first
    assert len(re.findall(r'href="/admin/posts/\d+"', first)) == 50
    second = client.get("/admin/posts?page=2").text
    assert len(re.findall(r'href="/admin/posts/\d+"', second)) == 6
    found = client.get("/admin/posts?q=CAPS").text
    assert "1 post." in found and "Refugee caps" in found
    assert "Refugee caps" in client.get("/admin/posts?status=held").text
    assert "No posts match." in client.get("/admin/posts?topic=mexico").text

    url = f"/admin/posts/{held.id}"
    assert "No digest has carried this post yet." in client.get(url).text
    approved = post_form(client, url, f"{url}/approve", {})
    assert approved.headers["location"].endswith("notice=post-approved")
    queue = redis.Redis.from_url(redis_url)
    assert PLAN_POST_ALERTS.encode() in (queue.lindex("newsletter", 0) or b"")
    again = post_form(client, url, f"{url}/approve", {})
    assert again.status_code == 400 and "is not held" in again.text
    assert post_form(client, url, f"{url}/hold", {}).status_code == 303
    with console.sessions() as session:
        assert session.get(Post, held.id).status is PostStatus.HELD  # type: ignore[union-attr]

    digest_id = carry(console, held.id)
    page = client.get(url).text
    assert f'href="/admin/digests/{digest_id}"' in page
    row = re.search(r"Daily</a>.*?</tr>", page, re.S)
    assert row is not None
    assert re.findall(r'class="num">(\d+)<', row.group(0)) == ["3", "1", "1", "1"]


def test_suppressions_add_search_and_only_an_admin_removes(console: Console) -> None:
    with console.sessions.begin() as session:
        readers.subscribe(
            session=session,
            email="reader@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
    editor = console.signed_in("editor@example.org", role="editor")
    bad = post_form(
        editor, "/admin/suppressions", "/admin/suppressions", {"email": "nope", "reason": "x"}
    )
    assert bad.status_code == 400 and "not valid" in bad.text
    no_reason = post_form(
        editor,
        "/admin/suppressions",
        "/admin/suppressions",
        {"email": "reader@example.org", "reason": ""},
    )
    assert no_reason.status_code == 400 and "give a reason" in no_reason.text
    added = post_form(
        editor,
        "/admin/suppressions",
        "/admin/suppressions",
        {"email": "Reader@example.org", "reason": "asked by phone"},
    )
    assert added.headers["location"].endswith("notice=suppression-added")
    page = editor.get(added.headers["location"]).text
    assert "asked by phone (added by editor@example.org)" in page
    prefix = readers.email_hash("reader@example.org")[:12]
    assert f"{prefix}…" in page and "reader@example.org" not in page.replace('value=""', "")
    assert "Only an admin can remove" in page and "/remove" not in page
    assert prefix in editor.get("/admin/suppressions?email=READER@example.org").text
    assert (
        "That address is not suppressed."
        in editor.get("/admin/suppressions?email=other@example.org").text
    )
    assert editor.get("/admin/suppressions?email=bad").status_code == 400

    with console.sessions() as session:
        entry_id = session.scalars(select(Suppression.id)).one()
    action = f"/admin/suppressions/{entry_id}/remove"
    forbidden = editor.post(action, data={"csrf_token": "x"})
    assert forbidden.status_code == 403
    admin = console.signed_in("admin@example.org", role="admin")
    assert "/remove" in admin.get("/admin/suppressions").text
    removed = post_form(admin, "/admin/suppressions", action, {})
    assert removed.headers["location"].endswith("notice=suppression-removed")
    assert "No suppressed addresses." in admin.get("/admin/suppressions").text
    assert post_form(admin, "/admin/suppressions", action, {}).status_code == 404
