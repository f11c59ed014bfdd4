"""The digests API (/api/v1/digests): tokens and roles, compose, counts, preview, test send, send,
schedule, cancel, pagination and problems; a send through a real worker process to the outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from subscriptions import editors
from subscriptions.models import Digest, DigestKind, DigestStatus
from subscriptions.posts import add_post
from tests.consoles import Console
from tests.factories import active_reader
from tests.integration.conftest import wait_for_files


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    console = Console(tmp_path, database_url, redis_url)
    yield console
    console.close()


def add_reader(console: Console, email: str, topics: list[str]) -> int:
    """A confirmed reader of `topics`, through the reader operations."""
    with console.sessions.begin() as session:
        return active_reader(session, email, topics)


def add_posts(console: Console, *titles: str, topic: str = "mexico") -> list[int]:
    ids = []
    with console.sessions.begin() as session:
        for title in titles:
            slug = title.lower().replace(" ", "-")
            info = add_post(
                session=session,
                title=title,
                link=f"https://example.org/{slug}",
                topics=[topic],
                summary=f"<p>About {title}.</p>",
            )
            ids.append(info.id)
    return ids


def compose(client: TestClient, posts: list[int], **extra: Any) -> dict[str, Any]:
    answer = client.post(
        "/api/v1/digests",
        json={"subject": "This week on Mexico", "intro_markdown": "Hello *all*.", "posts": posts}
        | extra,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def assert_problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["title"]
    return body


# ------------------------------------------------------------------------------- tokens and roles


ENDPOINTS = [
    ("GET", "/api/v1/digests", None),
    ("POST", "/api/v1/digests", {"subject": "x", "posts": [1]}),
    ("GET", "/api/v1/digests/1", None),
    ("GET", "/api/v1/digests/1/preview?email=a@example.org", None),
    ("POST", "/api/v1/digests/1/test", {"to": "a@example.org"}),
    ("POST", "/api/v1/digests/1/send", {"expected_count": 1}),
    ("POST", "/api/v1/digests/1/schedule", {"at": "2030-01-01T09:00:00Z", "expected_count": 1}),
    ("GET", "/api/v1/digests/1/audience", None),
    ("POST", "/api/v1/digests/1/cancel", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_needs_a_valid_unrevoked_token(
    console: Console, method: str, path: str, body: Any
) -> None:
    """No token, a wrong token and a revoked token all get a 401 problem and change nothing."""
    client = console.client()
    assert_problem(client.request(method, path, json=body), 401)
    client.headers["Authorization"] = "Bearer nl_not-a-real-token"
    assert_problem(client.request(method, path, json=body), 401)
    client.headers["Authorization"] = "Basic dXNlcjpwYXNz"
    assert_problem(client.request(method, path, json=body), 401)
    plain = console.token("editor", "soon revoked")
    with console.sessions.begin() as session:
        token_id = max(t.id for t in editors.list_tokens(session=session))
        editors.revoke_token(session=session, token_id=token_id)
    client.headers["Authorization"] = f"Bearer {plain}"
    answer = client.request(method, path, json=body)
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    with console.sessions() as session:
        assert session.query(Digest).count() == 0


@pytest.mark.parametrize("role", ["editor", "admin"])
def test_editors_and_admins_both_run_digests(console: Console, role: str) -> None:
    """Digests are content work: an editor token can compose, read, schedule and cancel."""
    api = console.api(role)
    add_reader(console, "mx@example.org", ["mexico"])
    posts = add_posts(console, "Elections", "Trade")
    digest = compose(api, posts)
    assert digest["status"] == "draft" and digest["kind"] == "editorial"
    assert digest["post_ids"] == posts
    assert api.get(f"/api/v1/digests/{digest['id']}").json()["subject"] == "This week on Mexico"
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = api.post(
        f"/api/v1/digests/{digest['id']}/schedule", json={"at": at, "expected_count": 1}
    )
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    cancelled = api.post(f"/api/v1/digests/{digest['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


# ------------------------------------------------------------------------------- compose, validate


def test_compose_from_topics_and_a_window(console: Console) -> None:
    api = console.api()
    posts = add_posts(console, "Border wall", topic="border-security")
    add_posts(console, "Elections")
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    digest = compose(api, [], topics=["border-security"], since=since)
    assert digest["post_ids"] == posts
    assert digest["audience"] == "readers of Border Security"
    assert digest["counts"] == {"planned": 0}
    assert digest["progress"]["percent"] == 0 and digest["progress"]["finished"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"posts": [1]}, "body.subject"),
        ({"subject": "", "posts": [1]}, "body.subject"),
        ({"subject": "S" * 201, "posts": [1]}, "body.subject"),
        ({"subject": "S"}, "posts"),
        ({"subject": "S", "posts": [999]}, "posts"),
        ({"subject": "S", "posts": [0]}, "body.posts.0"),
        ({"subject": "S", "posts": ["x"]}, "body.posts.0"),
        ({"subject": "S", "topics": ["mexico"]}, "since"),
        ({"subject": "S", "topics": ["nope"], "since": "2026-01-01T00:00:00Z"}, "topics"),
        ({"subject": "S", "topics": ["Not A Slug"]}, "body.topics.0"),
        ({"subject": "S", "topics": ["mexico"], "since": "2026-01-01T00:00:00"}, "body.since"),
        ({"subject": "S\x00", "posts": [1]}, "body.subject"),
        ({"subject": "S", "intro_markdown": "x" * 20_001, "posts": [1]}, "body.intro_markdown"),
    ],
)
def test_compose_refuses_bad_input_with_the_field(
    console: Console, body: dict[str, Any], field: str
) -> None:
    api = console.api("editor")
    add_posts(console, "Elections")
    problem = assert_problem(api.post("/api/v1/digests", json=body), 422)
    assert field in [e["field"] for e in problem["errors"]], problem
    with console.sessions() as session:
        assert session.query(Digest).count() == 0


def test_unknown_digests_and_wrong_states(console: Console) -> None:
    api = console.api()
    for method, path, body in ENDPOINTS[2:]:
        answer = api.request(method, path.replace("/1", "/4242", 1), json=body)
        assert_problem(answer, 404)
    assert_problem(api.get("/api/v1/digests/0"), 422)
    assert_problem(api.get("/api/v1/digests/99999999999"), 422)
    assert_problem(api.get("/api/v1/digests?kind=monthly"), 422)
    add_reader(console, "mx@example.org", ["mexico"])
    digest = compose(api, add_posts(console, "Elections"))
    path = f"/api/v1/digests/{digest['id']}"
    one = {"expected_count": 1}
    assert_problem(api.post(f"{path}/schedule", json={"at": "2030-01-01T09:00:00"} | one), 422)
    assert_problem(api.post(f"{path}/send"), 422)  # the expected count is required
    assert api.post(f"{path}/cancel").status_code == 200
    assert_problem(api.post(f"{path}/cancel"), 409)
    assert_problem(api.post(f"{path}/send", json=one), 409)
    assert_problem(api.post(f"{path}/schedule", json={"at": "2030-01-01T09:00:00Z"} | one), 409)


def test_send_and_schedule_take_the_expected_count_and_refuse_a_stale_one(
    console: Console,
) -> None:
    """GET audience gives the exact count (by topic, by frequency); send and schedule with another
    count answer 409 and change nothing; with the count, they go."""
    api = console.api("editor")
    add_reader(console, "mx@example.org", ["mexico"])
    add_reader(console, "both@example.org", ["mexico", "refugees"])
    add_reader(console, "ref@example.org", ["refugees"])
    digest = compose(api, add_posts(console, "Elections"))
    assert digest["audience"] == "readers of Mexico"  # the posts' topics, not everyone
    path = f"/api/v1/digests/{digest['id']}"
    count = api.get(f"{path}/audience").json()
    assert count == {"total": 2, "by_topic": {"Mexico": 2}, "by_frequency": {"daily": 2}}
    stale = api.post(f"{path}/send", json={"expected_count": 3})
    problem = assert_problem(stale, 409)
    assert "the audience is 2 readers now, not 3" in problem["detail"]
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert_problem(api.post(f"{path}/schedule", json={"at": at, "expected_count": 1}), 409)
    assert api.get(path).json()["status"] == "draft"
    everyone = compose(api, digest["post_ids"], everyone=True)
    assert everyone["audience"] == "all active readers"
    assert api.get(f"/api/v1/digests/{everyone['id']}/audience").json()["total"] == 3
    done = api.post(f"{path}/schedule", json={"at": at, "expected_count": 2})
    assert done.status_code == 200 and done.json()["status"] == "scheduled"


def test_list_is_paginated_newest_first_with_every_kind(console: Console) -> None:
    api = console.api("editor")
    posts = add_posts(console, "Elections")
    made = [compose(api, posts, subject=f"Digest {n}")["id"] for n in range(5)]
    with console.sessions.begin() as session:
        session.add(Digest(kind=DigestKind.DAILY, status=DigestStatus.SENT, run_key="daily:x"))
    first = api.get("/api/v1/digests?limit=2").json()
    assert first["total"] == 6 and first["limit"] == 2 and first["offset"] == 0
    assert first["items"][0]["kind"] == "daily"
    assert [d["id"] for d in first["items"]][1:] == [made[4]]
    second = api.get("/api/v1/digests?limit=2&offset=2").json()
    assert [d["id"] for d in second["items"]] == [made[3], made[2]]
    assert api.get("/api/v1/digests?limit=2&offset=6").json()["items"] == []
    only = api.get("/api/v1/digests?kind=editorial").json()
    assert only["total"] == 5
    assert_problem(api.get("/api/v1/digests?limit=0"), 422)
    assert_problem(api.get("/api/v1/digests?limit=201"), 422)
    assert_problem(api.get("/api/v1/digests?offset=-1"), 422)


# ------------------------------------------------------------------------- preview and test send


def test_preview_as_a_reader_and_a_test_send(console: Console, tmp_path: Path) -> None:
    api = console.api("editor")
    console.editor("editor@example.org", "editor")  # test copies go to editors only (issue #12)
    add_reader(console, "first@example.org", ["refugees"])
    add_reader(console, "mx@example.org", ["mexico"])
    digest = compose(api, add_posts(console, "Elections", "Trade"))
    path = f"/api/v1/digests/{digest['id']}"
    shown = api.get(f"{path}/preview", params={"email": "MX@example.org"}).json()
    assert shown["reader"] == "mx@example.org"
    assert shown["subject"] == "This week on Mexico"
    assert "Elections" in shown["text"] and "Trade" in shown["text"]
    assert "<em>all</em>" in shown["html"]
    assert api.get(f"{path}/preview").json()["reader"] == "first@example.org"
    assert_problem(api.get(f"{path}/preview", params={"email": "nobody@example.org"}), 404)
    assert_problem(api.get(f"{path}/preview", params={"email": "not an address"}), 422)

    sent = api.post(
        f"{path}/test", json={"to": "Editor@Example.org", "as_reader": "mx@example.org"}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"to": "editor@example.org", "as_reader": "mx@example.org"}
    mail = wait_for_files(tmp_path / "outbox", 1, timeout=5)
    assert "[TEST] This week on Mexico" in mail[0].read_text()
    assert_problem(api.post(f"{path}/test", json={"to": "bad\naddress"}), 422)
    # A test send records nothing.
    assert api.get(path).json()["counts"] == {"planned": 0}


# ------------------------------------------------------------------- send through a real worker


def test_send_through_a_real_worker_reaches_100_percent(
    tmp_path: Path, service_env: dict[str, str], start: Any, database_url: str, redis_url: str
) -> None:
    """POST send → the worker process plans and sends to the outbox → counts reach 100%."""
    console = Console(
        tmp_path, database_url, redis_url, email_url=service_env["NEWSLETTER_EMAIL_URL"]
    )
    try:
        api = console.api("editor")
        for n in range(7):
            add_reader(console, f"reader{n}@example.org", ["mexico"])
        add_reader(console, "other@example.org", ["refugees"])
        digest = compose(api, add_posts(console, "Elections", "Trade"), audience=["mexico"])
        start(["worker", "--concurrency", "1"], service_env)
        answer = api.post(f"/api/v1/digests/{digest['id']}/send", json={"expected_count": 7})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "scheduled"
        deadline = time.monotonic() + 60
        seen = []
        while True:
            body = api.get(f"/api/v1/digests/{digest['id']}").json()
            seen.append(body["progress"]["percent"])
            if body["progress"]["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body["status"] == "sent", body
        assert body["progress"] == {
            "planned": 7, "sent": 7, "failed": 0, "suppressed": 0, "unknown": 0,
            "pending": 0, "percent": 100, "finished": True,
        }  # fmt: skip
        assert body["report"]["sent"] == 7 and body["report"]["bounced"] == 0
        assert seen == sorted(seen)
        outbox = Path(service_env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
        assert len(wait_for_files(outbox, 7, timeout=10)) == 7
        listed = api.get("/api/v1/digests").json()["items"][0]
        assert listed["id"] == digest["id"] and listed["counts"]["sent"] == 7
    finally:
        console.close()


def test_cancel_while_sending_stops_the_rest(console: Console, tmp_path: Path) -> None:
    """A digest cancelled while sending (planned, nothing claimed yet): a sender that was already
    started for it claims nothing, and its deliveries stay pending, never sent."""
    from mail.bodies import DigestRenderer
    from mail.providers import provider_from_url
    from subscriptions.templating import template_environment
    from subscriptions.tokens import TokenSigner
    from worker.digests import planner
    from worker.digests.sender import Sender

    api = console.api("editor")
    for n in range(3):
        add_reader(console, f"reader{n}@example.org", ["mexico"])
    digest = compose(api, add_posts(console, "Elections"))
    path = f"/api/v1/digests/{digest['id']}"
    assert (
        api.post(
            f"{path}/schedule", json={"at": datetime.now(UTC).isoformat(), "expected_count": 3}
        ).status_code
        == 200
    )
    with console.sessions.begin() as session:
        assert planner.plan_editorial(session, digest["id"]).planned == 3
    assert api.get(path).json()["status"] == "sending"
    settings = console.settings
    sender = Sender(
        console.sessions,
        provider_from_url(settings.email),
        DigestRenderer(template_environment(settings, "email")),
        settings,
        TokenSigner(settings.secret_key),
    )
    cancelled = api.post(f"{path}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert sender.send_batch(digest["id"]).claimed == 0
    after = api.get(path).json()
    assert after["status"] == "cancelled" and after["progress"]["finished"] is True
    assert after["counts"] == {"pending": 3, "planned": 3}
    assert not list((tmp_path / "outbox").glob("*.eml"))
    assert_problem(api.post(f"{path}/cancel"), 409)
