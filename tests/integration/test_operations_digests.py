"""Each digest operation through its three entry points: the console (a signed-in editor, CSRF
forms), the API (a bearer token) and the CLI. They must store the same result and queue the same
tasks on the real Redis broker (read back from its queue), because they call one function."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from subscriptions import digests, notices
from subscriptions.models import Delivery, DeliveryStatus, Digest, DigestStatus, Subscriber
from subscriptions.queue import SEND_DIGEST, SEND_EDITORIAL
from tests import webforms
from tests.entrypoints import EntryPoints
from tests.factories import active_reader
from tests.integration.test_admin_digests import confirmed
from tests.integration.test_api_digests import add_posts


@pytest.fixture
def ways(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[EntryPoints]:
    ways = EntryPoints(tmp_path, database_url, redis_url)
    with ways.sessions.begin() as session:
        active_reader(session, "first@example.org", ["mexico"])
        active_reader(session, "second@example.org", ["mexico", "refugees"])
        active_reader(session, "refugee@example.org", ["refugees"])
    ways.queued()
    yield ways
    ways.close()


def drafts(ways: EntryPoints, count: int = 3) -> list[int]:
    """`count` identical drafts of two Mexico posts (audience: their readers, 2 of them)."""
    posts = add_posts(ways, f"Elections {count}", f"Trade {count}")
    with ways.sessions.begin() as session:
        return [
            digests.create_editorial(session=session, subject="This week", post_ids=posts).id
            for _ in range(count)
        ]


def stored(ways: EntryPoints, digest_id: int) -> dict[str, Any]:
    """What a digest row holds, without its id and its timestamps."""
    with ways.sessions() as session:
        d = session.get(Digest, digest_id)
        assert d is not None
        return {
            "kind": d.kind,
            "status": d.status,
            "subject": d.subject,
            "intro": d.intro_markdown,
            "options": d.options,
            "scheduled": d.scheduled_at is not None,
            "finished": d.finished_at is not None,
        }


def test_compose_stores_the_same_draft_from_the_console_the_api_and_the_cli(
    ways: EntryPoints,
) -> None:
    posts = add_posts(ways, "Elections", "Trade")
    fields = {"subject": "This  week", "intro": "Hello *all*.\r\nBye."}
    answer = webforms.post_form(
        ways.web,
        "/admin/digests/new",
        "/admin/digests/new",
        fields | {"posts": [str(p) for p in posts], "audience": ["mexico", "refugees"]},
    )
    assert answer.status_code == 303, answer.text
    found = re.search(r"/admin/digests/(\d+)", answer.headers["location"])
    assert found
    by_console = int(found.group(1))
    answer = ways.http.post(
        "/api/v1/digests",
        json={
            "subject": "This  week",
            "intro_markdown": "Hello *all*.\r\nBye.",
            "posts": posts,
            "audience": ["mexico", "refugees"],
        },
    )
    assert answer.status_code == 201, answer.text
    by_api = answer.json()["id"]
    result = ways.cli(
        "digest", "create", "--subject", "This  week", "--intro", "Hello *all*.\r\nBye.",
        "--post", str(posts[0]), "--post", str(posts[1]),
        "--audience", "mexico", "--audience", "refugees",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    by_cli = int(result.output.split("\t")[0])

    made = [stored(ways, i) for i in (by_console, by_api, by_cli)]
    assert made[0] == made[1] == made[2]
    assert made[0]["status"] is DigestStatus.DRAFT and made[0]["subject"] == "This week"
    assert made[0]["intro"] == "Hello *all*.\nBye."  # one line ending, whoever sent it
    assert ways.queued() == []

    # The same refusal from each, and nothing stored.
    refused = webforms.post_form(
        ways.web, "/admin/digests/new", "/admin/digests/new", {"subject": "S"}
    )
    assert refused.status_code == 400 and "choose posts, or topics" in refused.text
    refused = ways.http.post("/api/v1/digests", json={"subject": "S"})
    assert refused.status_code == 422 and "choose posts, or topics" in refused.text
    result = ways.cli("digest", "create", "--subject", "S")
    assert result.exit_code == 1 and "choose posts, or topics" in result.output
    with ways.sessions() as session:
        assert session.query(Digest).count() == 3


def test_preview_renders_the_same_email_for_the_same_default_reader_everywhere(
    ways: EntryPoints,
) -> None:
    (digest_id,) = drafts(ways, 1)
    page = ways.web.get(f"/admin/digests/{digest_id}/preview")
    assert page.status_code == 200, page.text
    api = ways.http.get(f"/api/v1/digests/{digest_id}/preview")
    assert api.status_code == 200, api.text
    shown = api.json()
    result = ways.cli("digest", "preview", str(digest_id), "--html", str(ways.cwd / "p.html"))
    assert result.exit_code == 0, result.output

    # One default reader: the first active one, named by nobody.
    assert shown["reader"] == "first@example.org"
    assert "rendered as first@example.org" in result.output
    assert f'<strong id="preview-subject">{shown["subject"]}</strong>' in page.text
    assert f"Subject: {shown['subject']}\n\n{shown['text']}" in result.output
    assert (ways.cwd / "p.html").read_text() == shown["html"]
    text = re.search(r'<pre id="preview-text" tabindex="0">(.*?)</pre>', page.text, re.S)
    assert text and "Elections 1" in text.group(1) and "Elections 1" in shown["text"]

    # Another reader by name, the same in all three; an unknown one is refused by all three.
    api = ways.http.get(f"/api/v1/digests/{digest_id}/preview?email=Second@Example.org")
    assert api.json()["reader"] == "second@example.org"
    result = ways.cli("digest", "preview", str(digest_id), "--reader", "Second@Example.org")
    assert result.exit_code == 0 and api.json()["text"] in result.output
    page = ways.web.get(f"/admin/digests/{digest_id}/preview?email=nobody@example.org")
    assert page.status_code == 400
    assert (
        ways.http.get(f"/api/v1/digests/{digest_id}/preview?email=nobody@example.org").status_code
        == 404
    )
    assert (
        ways.cli("digest", "preview", str(digest_id), "--reader", "nobody@example.org").exit_code
        == 1
    )
    assert ways.queued() == []


def test_test_copies_go_to_an_editor_from_all_three_and_to_no_one_else(ways: EntryPoints) -> None:
    (digest_id,) = drafts(ways, 1)
    outbox = ways.cwd / "outbox"
    answer = webforms.post_form(
        ways.web,
        f"/admin/digests/{digest_id}",
        f"/admin/digests/{digest_id}/test",
        {"to": "admin@example.org"},
    )
    assert answer.status_code == 303, answer.text
    answer = ways.http.post(f"/api/v1/digests/{digest_id}/test", json={"to": "admin@example.org"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"to": "admin@example.org", "as_reader": "first@example.org"}
    result = ways.cli("digest", "send", str(digest_id), "--test-to", "admin@example.org")
    assert result.exit_code == 0, result.output
    assert "test copy sent to admin@example.org (rendered as first@example.org)" in result.output

    sent = sorted(outbox.glob("*.eml"))
    assert len(sent) == 3
    bodies = [p.read_text() for p in sent]
    assert all("To: admin@example.org" in b and "[TEST]" in b for b in bodies)

    # An address that is no editor's: refused by each, nothing sent.
    answer = webforms.post_form(
        ways.web,
        f"/admin/digests/{digest_id}",
        f"/admin/digests/{digest_id}/test",
        {"to": "first@example.org"},
    )
    assert answer.status_code == 400 and "only to an editor" in answer.text
    answer = ways.http.post(f"/api/v1/digests/{digest_id}/test", json={"to": "first@example.org"})
    assert answer.status_code == 422 and "only to an editor" in answer.text
    result = ways.cli("digest", "send", str(digest_id), "--test-to", "first@example.org")
    assert result.exit_code == 1 and "only to an editor" in result.output
    assert len(list(outbox.glob("*.eml"))) == 3
    assert stored(ways, digest_id)["status"] is DigestStatus.DRAFT
    assert ways.queued() == []


def test_send_now_commits_the_digest_due_then_queues_it_once_from_each(ways: EntryPoints) -> None:
    console, api, cli = drafts(ways)
    # A stale count is refused by each: nothing changes, nothing is queued.
    page = f"/admin/digests/{console}"
    stale = webforms.post_form(
        ways.web, page, f"{page}/send", {"confirm": "yes", "expected_count": "3"}
    )
    assert stale.status_code == 400 and "the audience is 2 readers now, not 3" in stale.text
    answer = ways.http.post(f"/api/v1/digests/{api}/send", json={"expected_count": 3})
    assert answer.status_code == 409 and "the audience is 2 readers now, not 3" in answer.text
    result = ways.cli("digest", "send", str(cli), "--yes", "--expect-count", "3")
    assert result.exit_code == 1 and "the audience is 2 readers now, not 3" in result.output
    assert {stored(ways, i)["status"] for i in (console, api, cli)} == {DigestStatus.DRAFT}
    assert ways.queued() == []

    answer = confirmed(ways.web, page, f"{page}/send", {}, 2)
    assert answer.status_code == 303, answer.text
    assert ways.queued() == [(SEND_EDITORIAL, [console])]
    answer = ways.http.post(f"/api/v1/digests/{api}/send", json={"expected_count": 2})
    assert answer.status_code == 202, answer.text
    assert ways.queued() == [(SEND_EDITORIAL, [api])]
    result = ways.cli("digest", "send", str(cli), "--yes", "--expect-count", "2")
    assert result.exit_code == 0, result.output
    assert ways.queued() == [(SEND_EDITORIAL, [cli])]

    made = [stored(ways, i) for i in (console, api, cli)]
    assert made[0] == made[1] == made[2]
    assert made[0]["status"] is DigestStatus.SCHEDULED and made[0]["scheduled"]
    with ways.sessions() as session:
        due = session.scalars(select(Digest.scheduled_at).where(Digest.id.in_([console, api, cli])))
        assert all(
            abs(datetime.now(UTC) - d.replace(tzinfo=UTC)) < timedelta(minutes=2) for d in due
        )


def test_schedule_stores_the_same_time_from_each_and_queues_nothing(ways: EntryPoints) -> None:
    console, api, cli = drafts(ways)
    at = "2030-01-01T09:00"
    page = f"/admin/digests/{console}"
    answer = confirmed(ways.web, page, f"{page}/schedule", {"at": at}, 2)
    assert answer.status_code == 303, answer.text
    answer = ways.http.post(
        f"/api/v1/digests/{api}/schedule", json={"at": at + "Z", "expected_count": 2}
    )
    assert answer.status_code == 200, answer.text
    result = ways.cli(
        "digest", "schedule", str(cli), "--at", at + "+00:00", "--yes", "--expect-count", "2"
    )
    assert result.exit_code == 0, result.output
    made = [stored(ways, i) for i in (console, api, cli)]
    assert made[0] == made[1] == made[2] and made[0]["status"] is DigestStatus.SCHEDULED
    with ways.sessions() as session:
        times = set(
            session.scalars(select(Digest.scheduled_at).where(Digest.id.in_([console, api, cli])))
        )
    assert {t.replace(tzinfo=UTC) for t in times} == {datetime(2030, 1, 1, 9, tzinfo=UTC)}
    assert ways.queued() == []


def test_cancel_agrees_and_a_second_cancel_is_refused_by_each(ways: EntryPoints) -> None:
    console, api, cli = drafts(ways)

    def cancel_all() -> tuple[int, int, int]:
        answer = webforms.post_form(
            ways.web, f"/admin/digests/{console}", f"/admin/digests/{console}/cancel", {}
        )
        return (
            answer.status_code,
            ways.http.post(f"/api/v1/digests/{api}/cancel").status_code,
            ways.cli("digest", "cancel", str(cli)).exit_code,
        )

    assert cancel_all() == (303, 200, 0)
    made = [stored(ways, i) for i in (console, api, cli)]
    assert made[0] == made[1] == made[2]
    assert made[0]["status"] is DigestStatus.CANCELLED and made[0]["finished"]
    assert cancel_all() == (400, 409, 1)
    assert ways.queued() == []


def test_settling_unknown_outcomes_agrees_and_a_resend_queues_the_sender(
    ways: EntryPoints,
) -> None:
    ids = drafts(ways)
    with ways.sessions.begin() as session:
        readers = list(session.scalars(select(Subscriber.id)))
        for digest_id in ids:
            session.get(Digest, digest_id).status = DigestStatus.SENDING  # type: ignore[union-attr]
            for reader in readers:
                session.add(
                    Delivery(
                        digest_id=digest_id,
                        subscriber_id=reader,
                        status=DeliveryStatus.UNKNOWN,
                        last_error="connection dropped after the request left",
                    )
                )
    console, api, cli = ids
    answer = webforms.post_form(
        ways.web,
        f"/admin/digests/{console}",
        f"/admin/digests/{console}/unknown",
        {"action": "resend"},
    )
    assert answer.status_code == 303, answer.text
    assert ways.queued() == [(SEND_DIGEST, [console])]
    answer = ways.http.post(f"/api/v1/digests/{api}/unknown", json={"action": "resend"})
    assert answer.status_code == 200 and answer.json()["changed"] == 3, answer.text
    assert ways.queued() == [(SEND_DIGEST, [api])]
    result = ways.cli("digest", "unknown", str(cli), "--resend", "--yes")
    assert result.exit_code == 0 and "3 deliveries queued again" in result.output
    assert ways.queued() == [(SEND_DIGEST, [cli])]
    with ways.sessions() as session:
        for digest_id in ids:
            statuses = session.scalars(
                select(Delivery.status).where(Delivery.digest_id == digest_id)
            ).all()
            assert statuses == [DeliveryStatus.PENDING] * 3
            assert session.get(Digest, digest_id).status is DigestStatus.SENDING  # type: ignore[union-attr]


def test_pausing_sending_keeps_the_reason_the_same_way_from_the_console_and_the_cli(
    ways: EntryPoints,
) -> None:
    """Pausing all sending has no API; the console and the CLI clean the reason one way."""

    def paused() -> str | None:
        with ways.sessions() as session:
            return notices.sending_paused(session=session)

    reason = "  provider\n review   of the account " + "x" * 600
    answer = webforms.post_form(
        ways.web,
        "/admin/settings",
        "/admin/settings/sending",
        {"action": "pause", "reason": reason},
    )
    assert answer.status_code == 200, answer.text
    by_console = paused()
    result = ways.cli("sending", "resume")
    assert result.exit_code == 0 and "sending resumed" in result.output and paused() is None
    result = ways.cli("sending", "pause", "--reason", reason)
    assert result.exit_code == 0, result.output
    assert paused() == by_console
    assert by_console is not None and by_console.startswith("provider review of the account xx")
    assert len(by_console) == 500
    answer = webforms.post_form(
        ways.web, "/admin/settings", "/admin/settings/sending", {"action": "resume"}
    )
    assert "Sending resumed." in answer.text and paused() is None
    # No reason: who paused it.
    webforms.post_form(ways.web, "/admin/settings", "/admin/settings/sending", {"action": "pause"})
    assert paused() == "paused by admin@example.org"
    assert ways.queued() == []
