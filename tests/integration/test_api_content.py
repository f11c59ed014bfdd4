"""JSON API for content: /api/v1/topics, /feeds, /posts (list, search, hold, approve), /suppressions.

Real database and Redis; tokens made by the real operation. Every endpoint is called without a
token, with a wrong one and with a revoked one; roles, validation problems and pagination are checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from subscriptions import editors, posts, readers
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Frequency,
    Subscriber,
    SubscriberStatus,
    delivery_posts,
)
from subscriptions.queue import PLAN_POST_ALERTS, POLL_FEED
from tests.consoles import Console
from tests.factories import active_reader

#: (method, path, JSON body) for every endpoint of this module; {id} is an existing item's id.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/topics", None),
    ("POST", "/api/v1/topics", {"slug": "russia", "name": "Russia"}),
    ("GET", "/api/v1/topics/{topic}", None),
    ("PATCH", "/api/v1/topics/{topic}", {"name": "Renamed"}),
    ("GET", "/api/v1/feeds", None),
    ("POST", "/api/v1/feeds", {"url": "https://example.org/new.xml", "topic": "mexico"}),
    ("GET", "/api/v1/feeds/{feed}", None),
    ("PATCH", "/api/v1/feeds/{feed}", {"poll_interval_seconds": 600}),
    ("POST", "/api/v1/feeds/{feed}/poll", None),
    ("POST", "/api/v1/feeds/{feed}/pause", {"reason": "x"}),
    ("POST", "/api/v1/feeds/{feed}/resume", None),
    ("GET", "/api/v1/posts", None),
    ("GET", "/api/v1/posts/{post}", None),
    ("POST", "/api/v1/posts/{post}/hold", None),
    ("POST", "/api/v1/posts/{post}/approve", None),
    ("GET", "/api/v1/suppressions", None),
    ("POST", "/api/v1/suppressions", {"email": "a@example.org", "reason": "asked"}),
    ("DELETE", "/api/v1/suppressions/{suppression}", None),
]


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    yield made
    made.close()


def seed(console: Console) -> dict[str, int]:
    """A feed, a post and a suppression: the ids ENDPOINTS' paths name."""
    api = console.api("admin")
    feed = api.post(
        "/api/v1/feeds", json={"url": "https://example.org/feed.xml", "topic": "mexico"}
    )
    suppression = api.post(
        "/api/v1/suppressions", json={"email": "gone@example.org", "reason": "asked by phone"}
    )
    with console.sessions.begin() as session:
        post = posts.add_post(
            session=session, title="A post", link="https://example.org/p/1", topics=["mexico"]
        )
    topic = api.get("/api/v1/topics").json()["items"][0]["id"]
    return {
        "topic": topic,
        "feed": feed.json()["id"],
        "post": post.id,
        "suppression": suppression.json()["id"],
    }


def call(client: TestClient, method: str, path: str, body: dict[str, Any] | None) -> Any:
    return client.request(method, path, json=body)


def is_problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def test_every_endpoint_refuses_no_token_a_wrong_one_and_a_revoked_one(console: Console) -> None:
    ids = seed(console)
    with console.sessions.begin() as session:
        info, revoked = editors.create_token(session=session, name="old", role="admin")
        editors.revoke_token(session=session, token_id=info.id)
    for method, path, body in ENDPOINTS:
        url = path.format(**ids)
        client = console.client()
        answer = is_problem(call(client, method, url, body), 401)
        assert "Bearer" in answer["detail"]
        for token in ("wrong-token", revoked):
            client.headers["Authorization"] = f"Bearer {token}"
            is_problem(call(client, method, url, body), 401)
        client.headers["Authorization"] = f"Basic {revoked}"
        is_problem(call(client, method, url, body), 401)


def test_an_editor_token_does_content_but_only_an_admin_removes_a_suppression(
    console: Console,
) -> None:
    ids = seed(console)
    editor = console.api("editor")
    for method, path, body in ENDPOINTS:
        if method == "DELETE":
            continue
        answer = call(editor, method, path.format(**ids), body)
        assert answer.status_code < 400 or answer.status_code == 409, (path, answer.text)
    url = f"/api/v1/suppressions/{ids['suppression']}"
    body = is_problem(editor.delete(url), 403)
    assert "admin" in body["detail"]
    assert console.api("admin").delete(url).status_code == 204
    is_problem(console.api("admin").delete(url), 404)


def test_topics_create_rename_describe_archive_and_count_readers(console: Console) -> None:
    api = console.api("editor")
    made = api.post(
        "/api/v1/topics", json={"slug": "russia", "name": "Russia", "description": "East."}
    )
    assert made.status_code == 201, made.text
    topic = made.json()
    assert topic | {"id": 0} == {
        "id": 0,
        "slug": "russia",
        "name": "Russia",
        "description": "East.",
        "archived": False,
        "readers": 0,
        "posts": 0,
        "translations": {},
    }
    with console.sessions.begin() as session:
        active_reader(session, "reader@example.org", ["russia"])
    url = f"/api/v1/topics/{topic['id']}"
    assert api.get(url).json()["readers"] == 1
    changed = api.patch(url, json={"name": "Russia and Ukraine", "description": "Updated."})
    assert changed.json()["name"] == "Russia and Ukraine"
    assert changed.json()["description"] == "Updated."
    archived = api.patch(url, json={"archived": True}).json()
    assert archived["archived"] is True and archived["readers"] == 1  # nothing deleted
    live = api.get("/api/v1/topics", params={"include_archived": "false"}).json()
    assert "russia" not in [t["slug"] for t in live["items"]]
    with console.sessions() as session:
        reader = session.scalar(select(Subscriber).where(Subscriber.email == "reader@example.org"))
        assert reader is not None and reader.status is SubscriberStatus.ACTIVE
        assert len(reader.subscriptions) == 1
    # New posts cannot carry an archived topic.
    refused = api.post(
        "/api/v1/posts",
        json={"title": "T", "link": "https://example.org/r", "topics": ["russia"]},
    )
    is_problem(refused, 422)
    assert api.patch(url, json={"archived": False}).json()["archived"] is False


def test_topic_validation_problems_name_the_field(console: Console) -> None:
    api = console.api("editor")
    cases = [
        ({"slug": "Not A Slug", "name": "x"}, "body.slug"),
        ({"slug": "ok", "name": ""}, "body.name"),
        ({"slug": "ok"}, "body.name"),
        ({"slug": "ok", "name": "x\x00y"}, "body.name"),
        ({"slug": "mexico", "name": "Again"}, "slug"),  # the operation's own check
    ]
    for body, field in cases:
        problem = is_problem(api.post("/api/v1/topics", json=body), 422)
        assert field in [e["field"] for e in problem["errors"]], (body, problem)
    is_problem(api.patch("/api/v1/topics/999999", json={"name": "x"}), 404)
    is_problem(api.get("/api/v1/topics/999999"), 404)
    is_problem(api.get("/api/v1/topics/0"), 422)
    is_problem(api.patch("/api/v1/topics/1", json={"name": "x" * 201}), 422)


def test_lists_are_paginated(console: Console) -> None:
    api = console.api("editor")
    for n in range(5):
        api.post("/api/v1/topics", json={"slug": f"t{n}", "name": f"T{n}"})
        api.post("/api/v1/feeds", json={"url": f"https://example.org/{n}.xml", "topic": "mexico"})
        api.post("/api/v1/suppressions", json={"email": f"s{n}@example.org", "reason": "test"})
    with console.sessions.begin() as session:
        for n in range(7):
            posts.add_post(
                session=session, title=f"P{n}", link=f"https://example.org/p/{n}", topics=["mexico"]
            )
    for path, total in [
        ("/api/v1/topics", 9),
        ("/api/v1/feeds", 5),
        ("/api/v1/posts", 7),
        ("/api/v1/suppressions", 5),
    ]:
        first = api.get(path, params={"limit": 2}).json()
        assert (first["total"], first["limit"], first["offset"]) == (total, 2, 0)
        assert len(first["items"]) == 2
        rest = api.get(path, params={"limit": 200, "offset": 2}).json()
        assert len(rest["items"]) == total - 2
        seen = [i["id"] for i in first["items"] + rest["items"]]
        assert len(set(seen)) == total, path
        assert api.get(path, params={"offset": total}).json()["items"] == []
        for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "x"}):
            problem = is_problem(api.get(path, params=bad), 422)
            assert problem["errors"][0]["field"].startswith("query.")


def test_feeds_add_map_poll_pause_and_resume(console: Console, redis_url: str) -> None:
    api = console.api("editor")
    made = api.post(
        "/api/v1/feeds",
        json={
            "url": "https://example.org/feed.xml",
            "topic": "mexico",
            "category_map": {"Refugees": "refugees"},
            "poll_interval_seconds": 300,
            "requires_approval": True,
        },
    )
    assert made.status_code == 201, made.text
    feed = made.json()
    assert feed["category_map"] == {"refugees": "refugees"}
    assert feed["requires_approval"] is True and feed["paused"] is False
    assert feed["last_polled_at"] is None and feed["consecutive_failures"] == 0
    url = f"/api/v1/feeds/{feed['id']}"
    changed = api.patch(
        url, json={"topic": "migration", "category_map": {"Border": "border-security"}}
    ).json()
    assert changed["default_topic"] == "migration"
    assert changed["category_map"] == {"border": "border-security"}
    assert changed["poll_interval_seconds"] == 300  # left out: kept
    problem = is_problem(api.patch(url, json={"category_map": {"x": "no-such-topic"}}), 422)
    assert "no-such-topic" in problem["detail"]
    assert api.get(url).json()["category_map"] == {"border": "border-security"}  # nothing changed

    queue = redis.Redis.from_url(redis_url)
    before = queue.llen("newsletter")
    polled = api.post(f"{url}/poll")
    assert polled.status_code == 202 and polled.json() == {"queued": True}
    assert queue.llen("newsletter") == before + 1
    message = queue.lindex("newsletter", 0)
    assert message is not None and POLL_FEED.encode() in message

    paused = api.post(f"{url}/pause", json={"reason": "site moving"}).json()
    assert paused["paused"] is True and paused["paused_reason"] == "site moving"
    resumed = api.post(f"{url}/resume").json()
    assert resumed["paused"] is False and resumed["paused_reason"] is None
    is_problem(api.post("/api/v1/feeds/999999/poll"), 404)
    is_problem(api.post("/api/v1/feeds/999999/pause", json={}), 404)


def test_feed_validation_problems_name_the_field(console: Console) -> None:
    api = console.api("editor")
    cases = [
        ({"url": "ftp://example.org/x", "topic": "mexico"}, "url"),
        ({"url": "https://example.org/x", "topic": "nope"}, "topic"),
        (
            {"url": "https://example.org/x", "topic": "mexico", "poll_interval_seconds": 5},
            "body.poll_interval_seconds",
        ),
        ({"topic": "mexico"}, "body.url"),
    ]
    for body, field in cases:
        problem = is_problem(api.post("/api/v1/feeds", json=body), 422)
        assert field in [e["field"] for e in problem["errors"]], (body, problem)
    api.post("/api/v1/feeds", json={"url": "https://example.org/x", "topic": "mexico"})
    again = api.post("/api/v1/feeds", json={"url": "https://example.org/x", "topic": "mexico"})
    assert is_problem(again, 422)["errors"][0]["field"] == "url"


def test_posts_search_hold_approve_and_the_digests_that_carried_one(
    console: Console, redis_url: str
) -> None:
    with console.sessions.begin() as session:
        first = posts.add_post(
            session=session,
            title="Border wall funding",
            link="https://example.org/wall",
            topics=["border-security"],
        )
        posts.add_post(
            session=session,
            title="Refugee caps",
            link="https://example.org/caps_100",
            topics=["refugees"],
            held=True,
        )
    api = console.api("editor")
    titles = lambda **q: [p["title"] for p in api.get("/api/v1/posts", params=q).json()["items"]]  # noqa: E731
    assert titles(q="WALL") == ["Border wall funding"]
    assert titles(q="caps_100") == ["Refugee caps"]
    assert titles(q="%") == []  # LIKE wildcards are searched for literally
    assert titles(q="_") == ["Refugee caps"]
    assert titles(topic="refugees") == ["Refugee caps"]
    assert titles(status="held") == ["Refugee caps"]
    assert titles(status="published", topic="refugees") == []
    is_problem(api.get("/api/v1/posts", params={"status": "draft"}), 422)

    url = f"/api/v1/posts/{first.id}"
    held = api.post(f"{url}/hold")
    assert held.status_code == 200 and held.json()["status"] == "held"
    is_problem(api.post(f"{url}/hold"), 409)
    queue = redis.Redis.from_url(redis_url)
    before = queue.llen("newsletter")
    approved = api.post(f"{url}/approve")
    assert approved.json()["status"] == "published"
    assert queue.llen("newsletter") == before + 1
    assert PLAN_POST_ALERTS.encode() in (queue.lindex("newsletter", 0) or b"")
    is_problem(api.post(f"{url}/approve"), 409)
    is_problem(api.post("/api/v1/posts/999999/hold"), 404)

    assert api.get(url).json()["digests"] == []
    digest_id = carry(console, first.id)
    detail = api.get(url).json()
    assert [
        (d["digest_id"], d["emails"], d["sent"], d["failed"], d["pending"])
        for d in detail["digests"]
    ] == [(digest_id, 3, 1, 1, 1)]
    is_problem(api.get("/api/v1/posts/999999"), 404)


def carry(console: Console, post_id: int) -> int:
    """A sent digest whose three deliveries carried the post: one sent, one failed, one pending."""
    with console.sessions.begin() as session:
        digest = Digest(kind=DigestKind.DAILY, status=DigestStatus.SENDING, subject="Daily")
        session.add(digest)
        session.flush()
        statuses = [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.PENDING]
        for n, status in enumerate(statuses):
            reader = Subscriber(email=f"r{n}@example.org", status=SubscriberStatus.ACTIVE)
            session.add(reader)
            session.flush()
            delivery = Delivery(digest_id=digest.id, subscriber_id=reader.id, status=status)
            session.add(delivery)
            session.flush()
            session.execute(insert(delivery_posts).values(delivery_id=delivery.id, post_id=post_id))
        return digest.id


def test_suppressions_add_search_and_remove(console: Console) -> None:
    api = console.api("editor")
    with console.sessions.begin() as session:
        readers.subscribe(
            session=session,
            email="reader@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
    made = api.post(
        "/api/v1/suppressions", json={"email": "Reader@Example.org", "reason": "asked by phone"}
    )
    assert made.status_code == 201, made.text
    entry = made.json()
    assert entry["reason"] == "editor" and "asked by phone" in entry["detail"]
    assert len(entry["hash_prefix"]) == 12
    again = api.post("/api/v1/suppressions", json={"email": "reader@example.org", "reason": "x"})
    assert again.status_code == 200 and again.json()["id"] == entry["id"]
    with console.sessions() as session:
        reader = session.scalar(select(Subscriber).where(Subscriber.email == "reader@example.org"))
        assert reader is not None and reader.status is SubscriberStatus.SUPPRESSED

    found = api.get("/api/v1/suppressions", params={"email": "READER@example.org"}).json()
    assert [s["id"] for s in found["items"]] == [entry["id"]]
    assert api.get("/api/v1/suppressions", params={"email": "other@example.org"}).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }
    problem = is_problem(api.get("/api/v1/suppressions", params={"email": "not an address"}), 422)
    assert problem["errors"][0]["field"] == "email"
    for body, field in [
        ({"email": "bad", "reason": "x"}, "email"),
        ({"email": "a@example.org", "reason": ""}, "body.reason"),
        ({"email": "a@example.org"}, "body.reason"),
    ]:
        problem = is_problem(api.post("/api/v1/suppressions", json=body), 422)
        assert field in [e["field"] for e in problem["errors"]], (body, problem)

    admin = console.api("admin")
    assert admin.delete(f"/api/v1/suppressions/{entry['id']}").status_code == 204
    assert api.get("/api/v1/suppressions").json()["total"] == 0
    with console.sessions() as session:
        reader = session.scalar(select(Subscriber).where(Subscriber.email == "reader@example.org"))
        # Nothing resumes by itself: the reader may sign up again and confirm.
        assert reader is not None and reader.status is SubscriberStatus.UNSUBSCRIBED
        assert reader.subscriptions == []
