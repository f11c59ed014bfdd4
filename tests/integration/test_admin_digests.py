"""Console digest pages (/admin/digests): sign-in, list, compose, preview, test send, send, schedule,
cancel, the progress endpoint, and a CSRF check on every POST; a send through a real worker."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from subscriptions.models import Digest, DigestKind, DigestStatus
from tests import webforms
from tests.consoles import Console
from tests.integration.conftest import wait_for_files
from tests.integration.test_api_digests import add_posts, add_reader


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    console = Console(tmp_path, database_url, redis_url)
    yield console
    console.close()


def draft(console: Console, client: Any, posts: list[int], **extra: Any) -> int:
    """Compose through the form; the id of the new draft."""
    answer = webforms.post_form(
        client,
        "/admin/digests/new",
        "/admin/digests/new",
        {"subject": "This week", "intro": "Hello *all*.", "posts": [str(p) for p in posts]} | extra,
    )
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/admin/digests/(\d+)\?done=created", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def confirmed(client: Any, page: str, action: str, data: dict[str, Any], count: int) -> Any:
    """Press "Send now" or "Schedule", check the confirmation repeats subject and count, confirm."""
    ask = webforms.post_form(client, page, action, data)
    assert ask.status_code == 200, ask.text
    assert "This week" in ask.text and f'<strong id="confirm-count">{count:,}</strong>' in ask.text
    assert f'name="expected_count" value="{count}"' in ask.text
    token = webforms.TOKEN.search(ask.text)
    assert token
    sure = {"csrf_token": token.group(1), "confirm": "yes", "expected_count": str(count)}
    return client.post(action, data=data | sure)


def status(console: Console, digest_id: int) -> DigestStatus:
    with console.sessions() as session:
        value = session.scalar(select(Digest.status).where(Digest.id == digest_id))
        assert value is not None
        return value


def test_pages_need_a_signed_in_editor(console: Console) -> None:
    client = console.client()
    for path in (
        "/admin/digests",
        "/admin/digests/new",
        "/admin/digests/1",
        "/admin/digests/1/preview",
    ):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login")
    answer = client.get("/admin/digests/1/progress")
    assert answer.status_code == 303
    for action in ("new", "1/test", "1/send", "1/schedule", "1/cancel"):
        answer = client.post(f"/admin/digests/{action}", data={"csrf_token": "x"})
        assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login")


@pytest.mark.parametrize("role", ["editor", "admin"])
def test_compose_list_and_show(console: Console, role: str) -> None:
    client = console.signed_in(role=role)
    add_reader(console, "mx@example.org", ["mexico"])
    posts = add_posts(console, "Elections", "Trade", "Wall")
    page = client.get("/admin/digests/new")
    assert page.status_code == 200 and "Elections" in page.text and "Border Security" in page.text
    digest_id = draft(console, client, posts[:2], audience=["mexico"])
    shown = client.get(f"/admin/digests/{digest_id}?done=created")
    assert shown.status_code == 200
    assert "Draft saved." in shown.text and "Elections" in shown.text and "Wall" not in shown.text
    assert 'data-status="draft"' in shown.text and "readers of Mexico" in shown.text
    listed = client.get("/admin/digests")
    assert listed.status_code == 200 and f"/admin/digests/{digest_id}" in listed.text
    assert client.get("/admin/digests/4242").status_code == 404


def test_compose_errors_keep_what_was_typed(console: Console) -> None:
    client = console.signed_in(role="editor")
    answer = webforms.post_form(
        client, "/admin/digests/new", "/admin/digests/new", {"subject": "Kept subject"}
    )
    assert answer.status_code == 400
    assert "choose posts, or topics and a time window" in answer.text
    assert 'value="Kept subject"' in answer.text
    answer = webforms.post_form(
        client,
        "/admin/digests/new",
        "/admin/digests/new",
        {"subject": "S", "topics": "mexico", "since": "yesterday"},
    )
    assert answer.status_code == 400 and "is not a date and time" in answer.text
    with console.sessions() as session:
        assert session.query(Digest).count() == 0


def test_every_post_checks_its_csrf_token(console: Console, tmp_path: Path) -> None:
    """A missing or replayed token changes nothing, on each of the five forms."""
    client = console.signed_in(role="editor")
    add_reader(console, "mx@example.org", ["mexico"])
    posts = add_posts(console, "Elections")
    digest_id = draft(console, client, posts)
    forms = {
        "new": {"subject": "Forged", "posts": str(posts[0])},
        f"{digest_id}/test": {"to": "editor@example.org"},
        f"{digest_id}/send": {},
        f"{digest_id}/schedule": {"at": "2030-01-01T09:00"},
        f"{digest_id}/cancel": {},
    }
    token = webforms.form_token(client, f"/admin/digests/{digest_id}")
    used = client.post(f"/admin/digests/{digest_id}/schedule", data={"csrf_token": token, "at": ""})
    assert used.status_code == 400  # the token is spent even though the form was refused
    for action, data in forms.items():
        for forged in ({}, {"csrf_token": "forged"}, {"csrf_token": token}):
            answer = client.post(f"/admin/digests/{action}", data=data | forged)
            assert answer.status_code == 400, (action, forged, answer.status_code)
    assert status(console, digest_id) is DigestStatus.DRAFT
    with console.sessions() as session:
        assert session.query(Digest).count() == 1
    assert not list((tmp_path / "outbox").glob("*.eml"))  # no test copy went out


def test_preview_side_by_side_and_test_send(console: Console, tmp_path: Path) -> None:
    client = console.signed_in(email="ed@example.org", role="editor")
    add_reader(console, "mx@example.org", ["mexico"])
    digest_id = draft(console, client, add_posts(console, "Elections"))
    page = client.get(f"/admin/digests/{digest_id}/preview", params={"email": "mx@example.org"})
    assert page.status_code == 200
    assert "Preview as mx@example.org" in page.text
    assert (
        '<iframe id="preview-phone" class="preview-frame" title="HTML version on a phone, light"'
        in page.text
    )
    assert page.text.count('sandbox="allow-same-origin"') == 2  # no scripts in either frame
    assert "allow-scripts" not in page.text
    dark = client.get(
        f"/admin/digests/{digest_id}/preview", params={"email": "mx@example.org", "scheme": "dark"}
    )
    assert dark.status_code == 200 and 'style="color-scheme: dark"' in dark.text
    assert "@media all" in dark.text and "prefers-color-scheme: dark" not in dark.text
    assert "prefers-color-scheme: dark" in page.text  # the light one as sent
    bad = client.get(f"/admin/digests/{digest_id}/preview", params={"scheme": "sepia"})
    assert bad.status_code in (400, 422)
    assert 'srcdoc="&lt;!' in page.text or 'srcdoc="&lt;' in page.text  # the email, escaped
    assert '<pre id="preview-text" tabindex="0">' in page.text and "Elections" in page.text
    missing = client.get(f"/admin/digests/{digest_id}/preview", params={"email": "no@example.org"})
    assert missing.status_code == 400 and "no reader no@example.org" in missing.text

    shown = client.get(f"/admin/digests/{digest_id}")
    assert 'name="to" value="ed@example.org"' in shown.text  # the editor's own address by default
    answer = webforms.post_form(
        client, f"/admin/digests/{digest_id}", f"/admin/digests/{digest_id}/test", {"to": ""}
    )
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=test")
    mail = wait_for_files(tmp_path / "outbox", 1, timeout=5)
    text = mail[0].read_text()
    assert "To: ed@example.org" in text and "[TEST] This week" in text
    assert status(console, digest_id) is DigestStatus.DRAFT


def test_schedule_and_cancel(console: Console) -> None:
    client = console.signed_in(role="editor")
    add_reader(console, "mx@example.org", ["mexico"])
    digest_id = draft(console, client, add_posts(console, "Elections"))
    page = f"/admin/digests/{digest_id}"
    answer = confirmed(client, page, f"{page}/schedule", {"at": "2030-01-02T09:30"}, 1)
    assert answer.status_code == 303
    assert status(console, digest_id) is DigestStatus.SCHEDULED
    assert "scheduled for 2030-01-02 09:30 UTC" in client.get(page).text
    answer = webforms.post_form(client, page, f"{page}/cancel", {})
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=cancelled")
    assert status(console, digest_id) is DigestStatus.CANCELLED
    again = webforms.post_form(
        client, page, f"{page}/send", {"confirm": "yes", "expected_count": "1"}
    )
    assert again.status_code == 400 and "only drafts and scheduled digests change" in again.text
    progress = client.get(f"{page}/progress").json()
    assert progress["status"] == "cancelled" and progress["finished"] is True
    assert client.get("/admin/digests/4242/progress").status_code == 404


def test_send_now_through_a_real_worker_and_progress_to_100(
    tmp_path: Path, service_env: dict[str, str], start: Any, database_url: str, redis_url: str
) -> None:
    console = Console(tmp_path, database_url, redis_url)
    try:
        client = console.signed_in(role="editor")
        for n in range(5):
            add_reader(console, f"reader{n}@example.org", ["mexico"])
        digest_id = draft(console, client, add_posts(console, "Elections", "Trade"))
        start(["worker", "--concurrency", "1"], service_env)
        page = f"/admin/digests/{digest_id}"
        answer = confirmed(client, page, f"{page}/send", {}, 5)
        assert answer.status_code == 303 and answer.headers["location"].endswith("?done=sent")
        shown = client.get(answer.headers["location"]).text
        assert '<script src="/static/admin-progress.js" defer></script>' in shown
        deadline = time.monotonic() + 60
        while True:
            progress = client.get(f"{page}/progress").json()
            if progress["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert progress["status"] == "sent" and progress["percent"] == 100
        assert (progress["planned"], progress["sent"], progress["pending"]) == (5, 5, 0)
        assert progress["report"] == {
            "sent": 5, "failed": 0, "bounced": 0, "complained": 0, "unsubscribed": 0
        }  # fmt: skip
        outbox = Path(service_env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
        assert len(wait_for_files(outbox, 5, timeout=10)) == 5
        final = client.get(page).text
        assert 'max="5" value="5"' in final and 'data-status="sent"' in final
        assert 'id="progress-text" role="status" aria-live="polite"' in final
        assert "Send now" not in final and "Cancel this digest" not in final
        script = client.get("/static/admin-progress.js")
        assert script.status_code == 200 and "fetch(" in script.text
    finally:
        console.close()


def test_the_list_pages_through_every_kind(console: Console) -> None:
    client = console.signed_in(role="editor")
    with console.sessions.begin() as session:
        for n in range(30):
            kind = DigestKind.EDITORIAL if n % 2 else DigestKind.DAILY
            session.add(
                Digest(kind=kind, status=DigestStatus.SENT, subject=f"Digest number {n:02d}")
            )
    first = client.get("/admin/digests")
    assert "Page 1 of 2 (30 digests)" in first.text
    assert "Digest number 29" in first.text and "Digest number 04" not in first.text
    assert 'href="/admin/digests?page=2"' in first.text and "daily" in first.text
    second = client.get("/admin/digests?page=2")
    assert "Digest number 04" in second.text and "Digest number 29" not in second.text
    assert 'href="/admin/digests?page=1"' in second.text
    assert client.get("/admin/digests?page=0").status_code == 400


def test_the_draft_counts_its_recipients_and_the_count_follows_the_audience(
    console: Console,
) -> None:
    """By default the readers of the chosen posts' topics, not every active reader; by topic and
    by frequency; "every active reader" only when picked; the count updates with the audience."""
    client = console.signed_in(role="editor")
    add_reader(console, "mx1@example.org", ["mexico"])
    add_reader(console, "mx2@example.org", ["mexico", "migration"])
    add_reader(console, "border@example.org", ["border-security", "migration"])
    digest_id = draft(console, client, add_posts(console, "Elections"))
    page = f"/admin/digests/{digest_id}"
    shown = client.get(page).text
    assert '<span id="recipient-count">2</span> readers' in shown
    assert '<td>Mexico</td><td class="num">2</td>' in shown
    assert "<td>Migration</td>" not in shown  # only the audience's topics are counted
    assert "readers of Mexico" in shown and "all active readers" not in shown
    would = client.get(f"{page}/audience", params={"everyone": "true"})
    assert would.status_code == 200 and would.json()["total"] == 3  # asked, not changed
    assert '<span id="recipient-count">2</span>' in client.get(page).text
    assert client.get("/admin/digests/4242/audience").status_code == 404
    answer = webforms.post_form(client, page, f"{page}/audience", {"everyone": "1"})
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=audience")
    shown = client.get(page).text
    assert '<span id="recipient-count">3</span> readers' in shown
    assert "all active readers" in shown
    answer = webforms.post_form(client, page, f"{page}/audience", {"audience": "migration"})
    shown = client.get(page).text
    # Readers of Migration get the posts of the topics they follow: mx2 (also Mexico) gets the
    # Mexico post; the Border Security and Migration reader gets nothing, so is not counted.
    assert '<span id="recipient-count">1</span> reader<' in shown
    answer = webforms.post_form(
        client, page, f"{page}/audience", {"audience": "migration", "for_everyone": "1"}
    )
    assert '<span id="recipient-count">2</span> readers' in client.get(page).text


def test_a_send_confirmed_for_a_stale_count_changes_nothing(console: Console) -> None:
    """The confirmation carries the count shown; a reader joining meanwhile makes it stale."""
    client = console.signed_in(role="editor")
    add_reader(console, "mx1@example.org", ["mexico"])
    digest_id = draft(console, client, add_posts(console, "Elections"))
    page = f"/admin/digests/{digest_id}"
    ask = webforms.post_form(client, page, f"{page}/send", {})
    assert ask.status_code == 200 and "“<strong>This week</strong>” to" in ask.text
    assert status(console, digest_id) is DigestStatus.DRAFT  # asking sends nothing
    add_reader(console, "mx2@example.org", ["mexico"])
    token = webforms.TOKEN.search(ask.text)
    assert token
    answer = client.post(
        f"{page}/send",
        data={"csrf_token": token.group(1), "confirm": "yes", "expected_count": "1"},
    )
    assert answer.status_code == 400
    assert "the audience is 2 readers now, not 1" in answer.text
    assert status(console, digest_id) is DigestStatus.DRAFT
