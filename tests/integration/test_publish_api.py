"""The publish API over HTTP: POST /api/v1/posts (bearer tokens) and POST /api/v1/posts/signed (HMAC).

The app runs in-process behind Starlette's TestClient, on the real database and a real Redis, so "the
post's alerts were queued" is read off the broker's list itself. Covers authentication (no, wrong,
revoked token; bad, stale or missing signatures; the hook switched off), idempotency (same GUID or link
again is 200 with the same id, an edit updates, nothing is queued twice), bad payloads (422 problem
details with field errors), and sanitizing of what a CMS sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import editors
from subscriptions.models import EditorToken, Post, PostStatus
from subscriptions.queue import PLAN_POST_ALERTS, QUEUE
from subscriptions.web.app import create_app
from tests.factories import add_demo_topics, make_settings, migrated_sessions

HOOK_SECRET = "hook-secret-for-tests-0123456789"
POSTS = "/api/v1/posts"
SIGNED = "/api/v1/posts/signed"


class Api:
    """The app under test, its database and its broker."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, **settings: Any) -> None:
        self.sessions: sessionmaker[Session] = migrated_sessions(database_url)
        with self.sessions.begin() as session:
            add_demo_topics(session)
        self.settings = make_settings(
            tmp_path, database_url=database_url, broker_url=redis_url, **settings
        )
        self.app = create_app(self.settings)
        self.http = TestClient(self.app, base_url="http://127.0.0.1:8000")
        self.redis = redis.Redis.from_url(redis_url)

    def token(self, name: str = "cms") -> tuple[int, str]:
        with self.sessions.begin() as session:
            info, plain = editors.create_token(session=session, name=name)
        return info.id, plain

    def publish(self, payload: Any, token: str | None = None, **headers: str) -> Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(POSTS, json=payload, headers=headers)

    def queued(self) -> list[tuple[str, list[Any]]]:
        """(task name, args) of every message waiting on the broker."""
        out = []
        for raw in self.redis.lrange(QUEUE, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            out.append((message["headers"]["task"], args))
        return out

    def posts(self) -> list[Post]:
        with self.sessions() as session:
            return list(session.scalars(select(Post).order_by(Post.id)))

    def count_posts(self) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Post)) or 0)

    def close(self) -> None:
        self.http.close()
        self.redis.close()
        self.app.state.runtime.engine.dispose()
        self.sessions.kw["bind"].dispose()


@pytest.fixture
def api(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Api]:
    a = Api(tmp_path, database_url, redis_url)
    yield a
    a.close()


@pytest.fixture
def hook(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Api]:
    """The app with the signed publish hook switched on."""
    a = Api(tmp_path, database_url, redis_url, publish_webhook_secret=HOOK_SECRET)
    yield a
    a.close()


def post(**fields: Any) -> dict[str, Any]:
    """A valid payload, with `fields` changed."""
    payload: dict[str, Any] = {
        "title": "Managing the US-MX border",
        "link": "https://example.org/posts/border",
        "topics": ["border-security", "mexico"],
        "guid": "cms-101",
        "summary": "<p>An infographic.</p>",
        "published_at": "2026-11-27T09:00:00Z",
    }
    payload.update(fields)
    return {k: v for k, v in payload.items() if v is not None}


def assert_problem(response: Response, status: int, case: object = "") -> dict[str, Any]:
    """An RFC 9457 problem with `status`; `case` names what was sent, in failure messages."""
    assert response.status_code == status, (case, response.text)
    assert response.headers["content-type"] == "application/problem+json", case
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"], case
    return body


# --------------------------------------------------------------------------------------- auth


def test_no_token_wrong_token_or_another_scheme_is_401(api: Api) -> None:
    """Without a valid bearer token: 401 problem+json with WWW-Authenticate, nothing stored or queued."""
    _, token = api.token()
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nl_not-a-real-token"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Token {token}"},
        {"Authorization": token},
        {"Authorization": "Bearer " + token.removeprefix("nl_")},
    ]
    for headers in attempts:
        response = api.http.post(POSTS, json=post(), headers=headers)
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer", headers
        assert "Authorization: Bearer" in body["detail"]
    assert api.count_posts() == 0 and api.queued() == []


def test_a_revoked_token_is_refused_at_once(api: Api) -> None:
    """A token works, is revoked, and the next request with it is 401."""
    token_id, token = api.token()
    assert api.publish(post(), token).status_code == 201
    with api.sessions.begin() as session:
        editors.revoke_token(session=session, token_id=token_id)
    assert_problem(api.publish(post(guid="cms-102", link="https://example.org/2"), token), 401)
    assert api.count_posts() == 1


def test_authentication_comes_before_payload_validation(api: Api) -> None:
    """An unauthenticated caller learns nothing about the payload rules: 401, not 422."""
    assert_problem(api.http.post(POSTS, json={"title": ""}), 401)
    assert_problem(api.http.post(POSTS, content=b"not json"), 401)


def test_a_token_records_when_it_was_last_used(api: Api) -> None:
    """The token's last use is stored (editors see which integrations are alive)."""
    token_id, token = api.token()
    api.publish(post(), token)
    with api.sessions() as session:
        row = session.get(EditorToken, token_id)
        assert row is not None and row.last_used_at is not None


# --------------------------------------------------------------------------------------- publish


def test_a_new_post_is_201_stored_and_its_alerts_are_queued(api: Api) -> None:
    """201 with the stored post (normalized link, sorted topics, UTC time); one plan_post_alerts task."""
    _, token = api.token()
    response = api.publish(
        post(
            link="HTTPS://Example.ORG/posts/border/#top",
            topics=["mexico", "border-security"],
            published_at="2026-11-27T10:00:00+01:00",
        ),
        token,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {
        "id": body["id"],
        "title": "Managing the US-MX border",
        "link": "https://example.org/posts/border",
        "topics": ["border-security", "mexico"],
        "status": "published",
        "published_at": body["published_at"],
        "created": True,
    }
    nine_utc = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert datetime.fromisoformat(body["published_at"]) == nine_utc
    [stored] = api.posts()
    assert stored.published_at == nine_utc
    assert (stored.id, stored.identity, stored.feed_id) == (body["id"], "guid:cms-101", None)
    assert api.queued() == [(PLAN_POST_ALERTS, [body["id"]])]


def test_the_same_guid_again_is_200_with_the_same_id_and_updates_the_post(api: Api) -> None:
    """Idempotent on the GUID: a retry is 200 with the same id, an edit changes the title, and neither
    queues the alerts again."""
    _, token = api.token()
    first = api.publish(post(), token)
    assert first.status_code == 201
    retry = api.publish(post(), token)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    assert retry.json()["created"] is False
    edit = api.publish(post(title="Managing the US-MX border (updated)"), token)
    assert edit.status_code == 200 and edit.json()["id"] == first.json()["id"]
    assert edit.json()["title"] == "Managing the US-MX border (updated)"
    assert [p.title for p in api.posts()] == ["Managing the US-MX border (updated)"]
    assert api.queued() == [(PLAN_POST_ALERTS, [first.json()["id"]])]


def test_the_same_link_without_a_guid_is_the_same_post(api: Api) -> None:
    """No GUID: the link is the identity; the same link written differently is still 200, same id."""
    _, token = api.token()
    first = api.publish(post(guid=None, link="https://example.org/p/5"), token)
    again = api.publish(post(guid=None, link="https://EXAMPLE.org/p/5/", title="Edited"), token)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["title"] == "Edited"
    assert api.count_posts() == 1 and len(api.queued()) == 1


def test_the_summary_is_sanitized_and_the_title_made_plain(api: Api) -> None:
    """A CMS is not trusted either: <script>, onerror= and javascript: links are removed."""
    _, token = api.token()
    response = api.publish(
        post(
            title="<b>Bold</b> &amp; <script>alert(1)</script>true",
            summary='<p onclick="x()">Hi <img src=x onerror=alert(2)>'
            '<a href="javascript:alert(3)">a</a><script>alert(4)</script></p>',
        ),
        token,
    )
    assert response.status_code == 201 and response.json()["title"] == "Bold & true"
    [stored] = api.posts()
    assert stored.summary.startswith("<p>Hi ")
    for bad in ("script", "onerror", "onclick", "javascript:", "alert", "<img"):
        assert bad not in stored.summary


def test_a_post_sent_with_hold_waits_and_is_not_queued(api: Api) -> None:
    """hold: true stores the post as held; no alert is queued until an editor approves it."""
    _, token = api.token()
    response = api.publish(post(hold=True), token)
    assert response.status_code == 201 and response.json()["status"] == "held"
    assert api.posts()[0].status is PostStatus.HELD and api.queued() == []


# --------------------------------------------------------------------------------------- bad payloads

BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    ("missing-title", post(title=None), "body.title"),
    ("empty-title", post(title=""), "body.title"),
    ("title-only-markup", post(title="<b></b>"), "title"),
    ("missing-topics", post(topics=None), "body.topics"),
    ("no-topics", post(topics=[]), "body.topics"),
    ("unknown-topic", post(topics=["mexico", "atlantis"]), "topics"),
    ("topics-not-a-list", post(topics="mexico"), "body.topics"),
    ("missing-link", post(link=None), "body.link"),
    ("ftp-link", post(link="ftp://example.org/x"), "link"),
    ("javascript-link", post(link="javascript:alert(1)"), "link"),
    ("relative-link", post(link="/posts/1"), "link"),
    ("naive-time", post(published_at="2026-11-27T09:00:00"), "body.published_at"),
    ("not-a-time", post(published_at="yesterday"), "body.published_at"),
    ("title-too-long", post(title="t" * 1001), "body.title"),
    ("summary-too-long", post(summary="s" * 20_001), "body.summary"),
    ("link-too-long", post(link="https://e.org/" + "l" * 2000), "body.link"),
    ("guid-too-long", post(guid="g" * 1901), "body.guid"),
    ("author-too-long", post(author="a" * 401), "body.author"),
    ("too-many-topics", post(topics=["mexico"] * 51), "body.topics"),
    ("too-many-categories", post(categories=["c"] * 51), "body.categories"),
    ("a-list", [post()], "body"),
]


def test_each_bad_payload_is_422_with_the_field_named(api: Api) -> None:
    """Each invalid payload above: 422 problem+json whose errors name the field; nothing stored or
    queued. (One test over all cases: a database per case would cost more than the cases.)"""
    _, token = api.token()
    for case, payload, field in BAD_PAYLOADS:
        body = assert_problem(api.publish(payload, token), 422, case)
        assert body["title"] == "Unprocessable Content", case
        assert body["errors"] and all(set(e) == {"field", "message"} for e in body["errors"]), case
        assert field in [e["field"] for e in body["errors"]], (case, body["errors"])
    assert api.count_posts() == 0 and api.queued() == []


def test_a_body_that_is_not_json_is_422(api: Api) -> None:
    """A body that does not parse as JSON (text, cut short, empty) is a 422 problem with errors, not a
    500 or an HTML page."""
    _, token = api.token()
    for content in (b"not json", b'{"title": "x",', b""):
        response = api.http.post(
            POSTS,
            content=content,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        body = assert_problem(response, 422, content)
        assert body["errors"], content
    assert api.count_posts() == 0


def test_the_longest_accepted_link_can_be_stored_and_found_again(api: Api) -> None:
    """A 2,000-character link without GUID is stored although "link:" + link exceeds the identity
    column (it is kept as a digest), and sending it again finds the same post. (Regression: PostgreSQL
    raised, a 500.)"""
    _, token = api.token()
    link = "https://example.org/" + "p" * (2000 - len("https://example.org/"))
    assert len(link) == 2000
    first = api.publish(post(guid=None, link=link), token)
    assert first.status_code == 201, first.text
    [stored] = api.posts()
    assert stored.link == link and len(stored.identity) <= 2000
    assert stored.identity.startswith("sha256:")
    again = api.publish(post(guid=None, link=link, title="Edited"), token)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert api.count_posts() == 1 and len(api.queued()) == 1


# --------------------------------------------------------------------------------------- signed


def signed(body: bytes, *, secret: str = HOOK_SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-Newsletter-Timestamp": stamp,
        "X-Newsletter-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def test_a_well_signed_post_is_201_then_200_and_queued_once(hook: Api) -> None:
    """A fresh timestamp and the right HMAC: 201 and queued; the same post again: 200, same id."""
    body = json.dumps(post()).encode()
    first = hook.http.post(SIGNED, content=body, headers=signed(body))
    assert first.status_code == 201, first.text
    again = hook.http.post(SIGNED, content=body, headers=signed(body))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert hook.queued() == [(PLAN_POST_ALERTS, [first.json()["id"]])]


def test_a_bad_stale_or_missing_signature_is_401(hook: Api) -> None:
    """Wrong secret, a changed body, a timestamp over 300 s old (or well ahead), or no headers: 401."""
    body = json.dumps(post()).encode()
    now = time.time()
    cases = {
        "wrong secret": signed(body, secret="another-secret"),
        "body changed": signed(body.replace(b"border", b"BORDER")),
        "stale": signed(body, at=now - 301),
        "from the future": signed(body, at=now + 310),
        "no headers": {"Content-Type": "application/json"},
        "bare hex": {**signed(body), "X-Newsletter-Signature": "sha256="},
        "not a number": {**signed(body), "X-Newsletter-Timestamp": "soon"},
    }
    for name, headers in cases.items():
        response = hook.http.post(SIGNED, content=body, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
    assert hook.count_posts() == 0 and hook.queued() == []
    fresh = hook.http.post(SIGNED, content=body, headers=signed(body, at=now - 290))
    assert fresh.status_code == 201


def test_a_well_signed_bad_payload_is_422(hook: Api) -> None:
    """The signature is checked first; a signed payload that is not a valid post is 422 with errors."""
    body = json.dumps(post(topics=[], published_at="2026-11-27T09:00:00")).encode()
    problem = assert_problem(hook.http.post(SIGNED, content=body, headers=signed(body)), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert {"topics", "published_at"} <= fields, fields
    unknown = json.dumps(post(topics=["atlantis"])).encode()
    problem = assert_problem(hook.http.post(SIGNED, content=unknown, headers=signed(unknown)), 422)
    assert problem["errors"][0]["field"] == "topics"


def test_an_oversized_signed_body_is_413(hook: Api) -> None:
    """More than 256 KiB is refused before any signature work or parsing."""
    body = json.dumps(post(summary="s" * 300_000)).encode()
    assert_problem(hook.http.post(SIGNED, content=body, headers=signed(body)), 413)


def test_the_signed_hook_is_404_without_a_secret(api: Api) -> None:
    """With NEWSLETTER_PUBLISH_WEBHOOK_SECRET unset the signed route does not exist (404 problem)."""
    body = json.dumps(post()).encode()
    problem = assert_problem(api.http.post(SIGNED, content=body, headers=signed(body)), 404)
    assert "NEWSLETTER_PUBLISH_WEBHOOK_SECRET" in problem["detail"]
    assert api.count_posts() == 0
