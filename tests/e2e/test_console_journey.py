"""An editor's whole journey through the console in a real Chromium, against real web and worker
processes, Redis and the database.

The first admin made with `newsletter editors create` → sign in → create a topic on the console's
topics page → readers of it (through the reader operations) and three posts (the CLI) → compose a
digest of two posts → preview it as a reader (HTML and text side by side) → send a test copy → send
it → the progress bar, polled by /static/admin-progress.js, moves to 100% while the worker (started
only now, so the bar cannot start full) sends → the final report → the reader's audit page. Every
step is a numbered screenshot; the database and the outbox are checked along the way.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Digest, DigestStatus, Frequency, Subscriber, Topic
from tests.e2e.conftest import PageFactory
from tests.e2e.test_reader_journey import DESKTOP, Journey
from tests.factories import active_reader
from tests.integration.conftest import (
    REPO,
    free_port,
    newsletter,
    wait_for_files,
    wait_until_serving,
)

ADMIN = "chief@example.org"
PASSWORD = "a long enough console password"
READERS = ["ana@example.org", "ben@example.org", "cy@example.org"]


def create_admin(env: dict[str, str]) -> None:
    """`newsletter editors create` as an operator runs it: the password on stdin, never echoed."""
    made = subprocess.run(
        [sys.executable, "-m", "subscriptions.cli", "editors", "create", ADMIN, "--role",
         "admin", "--name", "Chief Editor", "--password-stdin"],
        env=env, cwd=REPO, input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout + made.stderr
    assert made.stdout.strip().endswith(f"{ADMIN}\tadmin")
    listed = newsletter("editors", "list", env=env).stdout
    assert f"{ADMIN}\tadmin\tChief Editor\tnever\tactive" in listed


def test_editor_composes_previews_sends_and_audits_a_digest(
    tmp_path: Path,
    service_env: dict[str, str],
    start: Any,
    new_page: PageFactory,
    screenshots: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base)
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    create_admin(env)
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    web = start(["web", "--port", str(port)], env)
    wait_until_serving(f"{base}/healthz", web)

    engine = create_db_engine(env["NEWSLETTER_DATABASE_URL"])
    sessions = session_factory(engine)
    journey = Journey(screenshots)
    page = journey.watch(new_page(viewport=DESKTOP, locale="en-US"))
    try:
        # 1. Sign in (the console sends a signed-out editor to the sign-in page first).
        page.goto(f"{base}/admin/digests")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        journey.shot(page, "sign-in")
        page.get_by_label("Email address").fill(ADMIN)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Digests")).to_be_visible()
        expect(page.locator("form.signout")).to_contain_text(f"{ADMIN} (admin)")

        # 2. A topic, on the console's topics page.
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Topics").click()
        expect(page.get_by_role("heading", name="Topics", exact=True)).to_be_visible()
        page.get_by_label("Name", exact=True).fill("Mexico")
        page.get_by_label("Slug").fill("mexico")
        page.get_by_label("Description").fill("U.S.-Mexico relations")
        page.get_by_role("button", name="Create topic").click()
        expect(page.get_by_role("link", name="Mexico", exact=True)).to_be_visible()
        journey.shot(page, "topic-created")
        with sessions() as session:
            assert session.scalar(select(Topic.name).where(Topic.slug == "mexico")) == "Mexico"

        # 3. Readers of it (the reader operations, as the confirmed sign-up leaves them) and posts.
        with sessions.begin() as session:
            for address in READERS:
                active_reader(session, address, ["mexico"], Frequency.WEEKLY)
        for title in ("Elections in Mexico", "Remittances hit a record", "Not this one"):
            slug = title.lower().replace(" ", "-")
            newsletter(
                "posts", "add", title, "--link", f"https://example.org/{slug}",
                "--topic", "mexico", "--summary", f"What to know: {title}.", env=env,
            )  # fmt: skip

        # 4. Compose a digest of two posts.
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Digests").click()
        page.get_by_role("link", name="Compose a digest").click()
        expect(page.get_by_role("heading", name="Compose a digest")).to_be_visible()
        page.get_by_label("Subject").fill("Mexico this week")
        page.get_by_label("Introduction (Markdown)").fill("Two stories *worth* your time.")
        page.get_by_role("checkbox", name="Elections in Mexico").check()
        page.get_by_role("checkbox", name="Remittances hit a record").check()
        page.get_by_role("checkbox", name="Readers of Mexico").check()
        journey.shot(page, "compose")
        page.get_by_role("button", name="Save draft").click()
        expect(page.get_by_role("status").first).to_have_text("Draft saved.")
        expect(page.get_by_role("heading", name="Mexico this week")).to_be_visible()
        expect(page.locator("#digest-status")).to_have_text("draft")
        journey.shot(page, "draft")
        with sessions() as session:
            digest = session.scalars(select(Digest)).one()
            digest_id = digest.id
            assert digest.status is DigestStatus.DRAFT and len(digest.options["post_ids"]) == 2

        # 5. Preview as a reader: HTML in a sandboxed frame beside the text.
        page.locator("#preview-email").fill(READERS[1])
        page.get_by_role("button", name="Preview", exact=True).click()
        expect(page.get_by_role("heading", name=f"Preview as {READERS[1]}")).to_be_visible()
        expect(page.locator("#preview-subject")).to_have_text("Mexico this week")
        frame = page.frame_locator("#preview-html")
        expect(frame.get_by_role("link", name="Elections in Mexico")).to_be_visible()
        expect(frame.get_by_role("link", name="Remittances hit a record")).to_be_visible()
        expect(frame.locator("em", has_text="worth")).to_be_visible()
        expect(page.locator("#preview-text")).to_contain_text("Elections in Mexico")
        expect(page.locator("#preview-text")).not_to_contain_text("Not this one")
        assert page.locator("#preview-html").get_attribute("sandbox") == "allow-same-origin"
        # Full height (nothing cut off), a phone's width beside the desktop's.
        for frame_id in ("#preview-phone", "#preview-html"):
            box = page.locator(frame_id)
            expect(box).to_have_attribute("style", re.compile(r"height: \d+px"))
            inner = page.frame_locator(frame_id).locator("html")
            content = inner.evaluate("e => e.scrollHeight")
            assert box.bounding_box()["height"] >= content, frame_id  # type: ignore[index]
        assert page.locator("#preview-phone").evaluate("e => e.clientWidth") == 375
        journey.shot(page, "preview")
        page.get_by_role("link", name="Dark").click()
        dark = page.frame_locator("#preview-phone").locator("body")
        assert dark.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(17, 17, 17)"
        journey.shot(page, "preview-dark")

        # 6. A test copy to the editor's own address (the default).
        page.get_by_role("link", name="Back to the digest").click()
        expect(page.get_by_label("Send a test copy to")).to_have_value(ADMIN)
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_role("status").first).to_have_text("Test copy sent.")
        test_copy = wait_for_files(outbox, 1, timeout=10)
        assert "[TEST] Mexico this week" in test_copy[0].read_text()

        # 7. Send, after a confirmation that repeats subject and count. No worker runs yet: the
        # page shows 0% and must move by itself.
        expect(page.locator("#recipient-count")).to_have_text("3")
        page.get_by_role("button", name="Send now").click()
        expect(page.locator("#confirm-question")).to_contain_text(
            "“Mexico this week” to 3 readers?"
        )
        journey.shot(page, "confirm-send")
        page.get_by_role("button", name="Yes, send to 3 readers").click()
        expect(page.get_by_role("status").first).to_contain_text("Sending started")
        bar = page.locator("#progress-bar")
        expect(bar).to_have_js_property("value", 0)
        expect(page.locator("#progress-text")).to_have_attribute("aria-live", "polite")
        journey.shot(page, "sending-0")
        start(["worker", "--concurrency", "1"], env)
        expect(page.locator('[data-field="percent"]')).to_have_text("100", timeout=60_000)
        expect(bar).to_have_js_property("value", 3)
        expect(page.locator("#digest-status")).to_have_text("sent")
        expect(page.locator('[data-field="planned"]')).to_have_text("3")
        expect(page.locator('[data-field="sent"]')).to_have_text("3")
        expect(page.locator('[data-field="failed"]')).to_have_text("0")
        expect(page.locator('[data-field="waiting"]')).to_have_text("0")
        expect(page.locator('[data-field="phase"]')).to_have_text("sent")
        expect(page.locator('[data-report="sent"]')).to_have_text("3")
        expect(page.get_by_role("button", name="Send now")).to_be_hidden()
        expect(page.get_by_role("button", name="Cancel this digest")).to_be_hidden()
        journey.shot(page, "sent-100")
        assert len(wait_for_files(outbox, 1 + len(READERS), timeout=20)) == 1 + len(READERS)
        with sessions() as session:
            assert session.get(Digest, digest_id).status is DigestStatus.SENT  # type: ignore[union-attr]
            reader_id = session.scalar(select(Subscriber.id).where(Subscriber.email == READERS[1]))

        # 8. The digest list shows it sent, with its counts.
        page.get_by_role("link", name="All digests").click()
        row = page.get_by_role("row", name="Mexico this week")
        expect(row).to_contain_text("sent")
        journey.shot(page, "digests")

        # 9. The reader's audit page: the digest is among the emails planned for them, sent.
        page.goto(f"{base}/admin/readers/{reader_id}/audit")
        expect(page.get_by_role("heading", name=f"Audit: {READERS[1]}")).to_be_visible()
        planned = page.get_by_role("row", name="editorial Mexico this week")
        expect(planned).to_contain_text("sent")
        carried = page.get_by_role("row").filter(has_text="Elections in Mexico")
        expect(carried).to_have_class("outcome-sent")
        journey.shot(page, "reader-audit")

        assert journey.errors == [], "errors in the browser"
    finally:
        engine.dispose()
        print(f"screenshots in {screenshots}: {', '.join(journey.shots)}")
