"""Console sign-in, sessions and roles; API tokens and roles — over HTTP, real database and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from subscriptions import editors, notices
from subscriptions.models import Editor
from subscriptions.throttle import ADDRESS_CAP, PAIR_FREE, LoginThrottle
from tests import webforms
from tests.consoles import PASSWORD, Console


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    yield made
    made.close()


def sign_in(console: Console, email: str, password: str, **extra: str) -> object:
    client = console.client()
    answer = webforms.post_form(
        client, "/admin/login", "/admin/login", {"email": email, "password": password, **extra}
    )
    return client, answer


def test_pages_ask_for_a_sign_in_and_come_back_after_it(console: Console) -> None:
    console.editor("ed@example.org", "editor")
    client = console.client()
    away = client.get("/admin/team?x=1")
    assert (
        away.status_code == 303
        and away.headers["location"] == "/admin/login?next=/admin/team%3Fx%3D1"
    )
    answer = webforms.post_form(
        client,
        "/admin/login?next=/admin/topics",
        "/admin/login",
        {"email": "ED@example.org", "password": PASSWORD, "next": "/admin/topics"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/topics"
    assert client.get("/admin").status_code == 200


def test_wrong_address_and_wrong_password_get_the_same_answer(console: Console) -> None:
    console.editor("ed@example.org")
    _, unknown = sign_in(console, "nobody@example.org", PASSWORD)
    _, wrong = sign_in(console, "ed@example.org", "not the password at all")
    assert unknown.status_code == wrong.status_code == 400  # type: ignore[attr-defined]
    assert "do not match an editor" in unknown.text and "do not match an editor" in wrong.text  # type: ignore[attr-defined]
    assert "nl_admin" not in unknown.headers.get("set-cookie", "")  # type: ignore[attr-defined]


def test_the_session_cookie_is_httponly_samesite_and_secure_on_https(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    https = Console(tmp_path, database_url, redis_url, base_url="https://news.example.org")
    try:
        https.editor("ed@example.org")
        client = TestClient(https.app, base_url="https://news.example.org", follow_redirects=False)
        answer = webforms.post_form(
            client,
            "/admin/login",
            "/admin/login",
            {"email": "ed@example.org", "password": PASSWORD},
        )
        cookie = answer.headers["set-cookie"].lower()
        assert "nl_admin=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert "secure" in cookie and "path=/admin" in cookie
    finally:
        https.close()


def test_sign_in_needs_the_form_token_and_no_open_redirect(console: Console) -> None:
    console.editor("ed@example.org")
    client = console.client()
    client.get("/admin/login")
    refused = client.post("/admin/login", data={"email": "ed@example.org", "password": PASSWORD})
    assert refused.status_code == 400 and "nl_admin" not in refused.headers.get("set-cookie", "")
    _, answer = sign_in(console, "ed@example.org", PASSWORD, next="https://evil.example/")
    assert answer.headers["location"] == "/admin"  # type: ignore[attr-defined]
    _, answer = sign_in(console, "ed@example.org", PASSWORD, next="//evil.example/admin")
    assert answer.headers["location"] == "/admin"  # type: ignore[attr-defined]


class Clock:
    """The sign-in throttle's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _throttled(console: Console, redis_url: str) -> Clock:
    clock = Clock()
    console.app.state.runtime.login_throttle = LoginThrottle(
        redis.Redis.from_url(redis_url), clock=clock
    )
    return clock


def _from(console: Console, ip: str) -> TestClient:
    return TestClient(
        console.app, base_url="http://127.0.0.1:8000", follow_redirects=False, client=(ip, 40000)
    )


def _try(client: TestClient, password: str) -> Any:
    return webforms.post_form(
        client, "/admin/login", "/admin/login", {"email": "ed@example.org", "password": password}
    )


def test_failed_sign_ins_from_one_place_wait_longer_and_longer(
    console: Console, redis_url: str
) -> None:
    console.editor("ed@example.org")
    clock = _throttled(console, redis_url)
    client = _from(console, "203.0.113.9")
    assert [_try(client, "x" * 12).status_code for _ in range(PAIR_FREE)] == [400] * PAIR_FREE
    waits = []
    for _ in range(4):
        refused = _try(client, "x" * 12)
        assert refused.status_code == 429 and "try again later" in refused.text
        waits.append(int(refused.headers["retry-after"]))
        clock.now += waits[-1]
        assert _try(client, "x" * 12).status_code == 400  # a try is let through after the wait
    assert waits == [1, 2, 4, 8]
    # The right password waits too (guessing cannot go on), then works and clears the count.
    assert _try(client, PASSWORD).status_code == 429
    clock.now += 16
    assert _try(client, PASSWORD).status_code == 303
    assert _try(client, "x" * 12).status_code == 400


def test_failures_from_elsewhere_never_lock_the_admin_out(console: Console, redis_url: str) -> None:
    console.editor("ed@example.org")
    clock = _throttled(console, redis_url)
    # A spread-out attack: several places, a few wrong passwords each.
    for place in range(5):
        attacker = _from(console, f"203.0.113.{place + 1}")
        for _ in range(PAIR_FREE):
            answer = _try(attacker, "x" * 12)
            if answer.status_code == 429:  # the address's own short delay
                assert int(answer.headers["retry-after"]) <= ADDRESS_CAP
                clock.now += int(answer.headers["retry-after"])
                answer = _try(attacker, "x" * 12)
            assert answer.status_code == 400
    assert _try(attacker, "x" * 12).status_code == 429  # the last attacker's own pair waits
    admin = _from(console, "198.51.100.20")
    first = _try(admin, PASSWORD)
    # From elsewhere, the right password waits at most the short per-address delay.
    if first.status_code == 429:
        assert int(first.headers["retry-after"]) <= ADDRESS_CAP
        clock.now += ADDRESS_CAP
        first = _try(admin, PASSWORD)
    assert first.status_code == 303
    assert admin.get("/admin").status_code == 200


def test_a_copied_session_cookie_stops_working_when_that_session_signs_out(
    console: Console,
) -> None:
    browser = console.signed_in("ed@example.org", "editor")
    cookie = browser.cookies.get("nl_admin")
    assert cookie
    thief = console.client()
    thief.headers["Cookie"] = f"nl_admin={cookie}"
    assert thief.get("/admin/settings").status_code in (200, 403)  # signed in (an editor)
    assert thief.get("/admin").status_code == 200
    out = webforms.post_form(browser, "/admin", "/admin/logout", {})
    assert out.status_code == 303
    assert thief.get("/admin").status_code == 303
    assert thief.get("/admin/settings").status_code == 303


def test_sign_out_here_and_everywhere(console: Console) -> None:
    first = console.signed_in("ed@example.org", "editor")
    second = console.client()
    webforms.post_form(
        second, "/admin/login", "/admin/login", {"email": "ed@example.org", "password": PASSWORD}
    )
    assert second.get("/admin").status_code == 200
    out = webforms.post_form(first, "/admin", "/admin/logout", {})
    assert out.status_code == 303 and first.get("/admin").status_code == 303
    assert second.get("/admin").status_code == 200  # only that browser
    everywhere = webforms.post_form(second, "/admin", "/admin/logout", {"everywhere": "yes"})
    assert everywhere.status_code == 303
    # A copy of the old cookie no longer works either.
    again = console.client()
    webforms.post_form(
        again, "/admin/login", "/admin/login", {"email": "ed@example.org", "password": PASSWORD}
    )
    assert again.get("/admin").status_code == 200 and second.get("/admin").status_code == 303


def test_editors_cannot_open_the_team_page_admins_manage_editors(console: Console) -> None:
    editor = console.signed_in("ed@example.org", "editor")
    assert editor.get("/admin/team").status_code == 403
    assert editor.post("/admin/team/tokens", data={"name": "x"}).status_code == 403
    admin = console.signed_in("boss@example.org", "admin")
    page = admin.get("/admin/team")
    assert page.status_code == 200 and "ed@example.org" in page.text
    added = webforms.post_form(
        admin,
        "/admin/team",
        "/admin/team/editors",
        {"email": "new@example.org", "name": "New", "role": "editor", "password": "short"},
    )
    assert added.status_code == 400 and "at least 12 characters" in added.text
    added = webforms.post_form(
        admin,
        "/admin/team",
        "/admin/team/editors",
        {"email": "new@example.org", "name": "New", "role": "editor", "password": PASSWORD},
    )
    assert added.status_code == 200 and "new@example.org added as editor" in added.text
    with console.sessions() as session:
        ed = session.scalar(select(Editor).where(Editor.email == "ed@example.org"))
        assert ed is not None
        ed_id = ed.id
    locked = webforms.post_form(
        admin, "/admin/team", f"/admin/team/editors/{ed_id}", {"action": "lock"}
    )
    assert locked.status_code == 200 and "locked out" in locked.text
    assert editor.get("/admin").status_code == 303  # the locked editor's session ended
    _, refused = sign_in(console, "ed@example.org", PASSWORD)
    assert refused.status_code == 400  # type: ignore[attr-defined]


def test_the_last_admin_cannot_lock_or_demote_themselves(console: Console) -> None:
    admin = console.signed_in("boss@example.org", "admin")
    with console.sessions() as session:
        boss_id = session.scalar(select(Editor.id).where(Editor.email == "boss@example.org"))
    for data in ({"action": "lock"}, {"action": "role", "role": "editor"}):
        answer = webforms.post_form(admin, "/admin/team", f"/admin/team/editors/{boss_id}", data)
        assert answer.status_code == 400 and "last admin" in answer.text


def test_tokens_made_on_the_team_page_are_shown_once_and_revocable(console: Console) -> None:
    admin = console.signed_in()
    made = webforms.post_form(
        admin, "/admin/team", "/admin/team/tokens", {"name": "cms", "role": "editor"}
    )
    assert made.status_code == 200
    token = made.text.split('<code id="new-token">')[1].split("</code>")[0]
    assert token.startswith("nl_") and token not in admin.get("/admin/team").text
    api = console.client()
    api.headers["Authorization"] = f"Bearer {token}"
    me = api.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["name"] == "cms" and me.json()["role"] == "editor"
    with console.sessions() as session:
        [info] = [t for t in editors.list_tokens(session=session) if t.name == "cms"]
    revoked = webforms.post_form(admin, "/admin/team", f"/admin/team/tokens/{info.id}/revoke", {})
    assert revoked.status_code == 200 and api.get("/api/v1/me").status_code == 401


# --- the API's tokens ----------------------------------------------------------------------------


def test_api_without_wrong_or_revoked_tokens_is_a_401_problem(console: Console) -> None:
    client = console.client()
    for headers in ({}, {"Authorization": "Bearer nl_wrong"}, {"Authorization": "Basic abc"}):
        answer = client.get("/api/v1/me", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["status"] == 401
    token = console.token("admin")
    with console.sessions.begin() as session:
        [info] = editors.list_tokens(session=session)
        editors.revoke_token(session=session, token_id=info.id)
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_api_tokens_need_the_admin_role_and_are_shown_once(console: Console) -> None:
    editor = console.api("editor")
    refused = editor.post("/api/v1/tokens", json={"name": "x"})
    assert refused.status_code == 403 and refused.json()["title"] == "Forbidden"
    assert editor.get("/api/v1/tokens").status_code == 403
    admin = console.api("admin")
    made = admin.post("/api/v1/tokens", json={"name": "cms", "role": "editor"})
    assert made.status_code == 201 and made.json()["token"].startswith("nl_")
    listed = admin.get("/api/v1/tokens", params={"limit": 2, "offset": 0}).json()
    assert listed["total"] == 3 and len(listed["items"]) == 2 and listed["limit"] == 2
    assert all("token" not in item for item in listed["items"])
    rest = admin.get("/api/v1/tokens", params={"limit": 2, "offset": 2}).json()
    assert [t["name"] for t in rest["items"]][-1] == "cms"
    bad = admin.post("/api/v1/tokens", json={"name": "", "role": "owner"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in bad.json()["errors"]} == {"body.name", "body.role"}
    assert admin.get("/api/v1/tokens", params={"limit": 0}).status_code == 422
    gone = admin.delete(f"/api/v1/tokens/{made.json()['id']}")
    assert gone.status_code == 200 and gone.json()["revoked"] is True
    assert admin.delete("/api/v1/tokens/99999").status_code == 404


def test_the_settings_page_is_for_admins_hides_secrets_and_pauses_sending(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    secretive = Console(
        tmp_path,
        database_url,
        redis_url,
        email_url="postmark://server-token-123@api.postmarkapp.com",
        webhook_postmark="hook-user:hook-pass-789",
        publish_webhook_secret="publish-secret-456",
        metrics_token="metrics-token-321",
    )
    try:
        editor = secretive.signed_in("ed@example.org", "editor")
        assert editor.get("/admin/settings").status_code == 403
        admin = secretive.signed_in("boss@example.org", "admin")
        page = admin.get("/admin/settings")
        assert page.status_code == 200 and "NEWSLETTER_SECRET_KEY" in page.text
        secrets = (secretive.settings.secret_key, "server-token-123", "publish-secret-456")
        for secret in (*secrets, "hook-pass-789", "metrics-token-321"):
            assert secret not in page.text
        assert "set (hidden)" in page.text and "postmark://***@api.postmarkapp.com" in page.text
        assert "<td>7</td>" in page.text  # NEWSLETTER_CONFIRM_TOKEN_DAYS is no secret
        refused = admin.post("/admin/settings/sending", data={"action": "pause"})
        assert refused.status_code == 400 and "Sending is on" in refused.text
        paused = webforms.post_form(
            admin,
            "/admin/settings",
            "/admin/settings/sending",
            {"action": "pause", "reason": "provider review"},
        )
        assert paused.status_code == 200 and "Sending is paused: provider review" in paused.text
        with secretive.sessions() as session:
            assert notices.sending_paused(session=session) == "provider review"
        resumed = webforms.post_form(
            admin, "/admin/settings", "/admin/settings/sending", {"action": "resume"}
        )
        assert "Sending resumed." in resumed.text
        with secretive.sessions() as session:
            assert notices.sending_paused(session=session) is None
    finally:
        secretive.close()
