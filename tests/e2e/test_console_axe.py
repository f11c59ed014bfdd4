"""Every console page passes axe-core at a phone (375 px) and a desktop (1280 px) width, with no
sideways scroll, filled with the long URLs, titles and addresses that pushed pages sideways
before; the skip link is the first Tab stop; the dashboard chart's labels are legible on a phone.

CONSOLE_PAGES names every page; a new console page is added there (the test fails on a GET route
of the console that is missing from it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect
from sqlalchemy import select

from subscriptions import digests as digest_ops
from subscriptions import feeds as feed_ops
from subscriptions import suppressions as suppression_ops
from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Feed, Frequency, Subscriber, Topic
from subscriptions.posts import add_post
from subscriptions.web.app import create_app
from tests.e2e.axe import check_widths
from tests.e2e.conftest import PageFactory
from tests.e2e.test_console_journey import ADMIN, PASSWORD, create_admin
from tests.factories import active_reader
from tests.integration.conftest import free_port, newsletter, wait_until_serving

LONG = "a-very-long-address-part-that-does-not-break-on-its-own-" * 2
#: Every console page, as a path template filled from the seeded ids.
CONSOLE_PAGES = [
    "/admin",
    "/admin/topics",
    "/admin/topics/{topic}",
    "/admin/feeds",
    "/admin/feeds/{feed}",
    "/admin/posts",
    "/admin/posts/{post}",
    "/admin/suppressions",
    "/admin/digests",
    "/admin/digests/new",
    "/admin/digests/{digest}",
    "/admin/digests/{digest}/preview",
    "/admin/readers",
    "/admin/readers/import",
    "/admin/readers/{reader}",
    "/admin/readers/{reader}/audit",
    "/admin/readers/{reader}/erase",
    "/admin/settings",
    "/admin/team",
    "/admin/embed",
]
#: Console routes that are not pages (JSON, a download, posts only).
NOT_PAGES = {
    "/admin/readers/export",
    "/admin/digests/{digest_id}/progress",
    "/admin/digests/{digest_id}/audience",
    "/admin/login",
}


def test_the_list_names_every_console_page(tmp_path: Path) -> None:
    from fastapi.routing import APIRoute

    from tests.factories import make_settings

    app = create_app(make_settings(tmp_path))
    routes = {
        r.path
        for r in app.routes
        if isinstance(r, APIRoute) and "GET" in r.methods and r.path.startswith("/admin")
    }
    listed = {p.replace("{topic}", "{topic_id}") for p in CONSOLE_PAGES}
    normalized = {
        p.replace("{feed}", "{feed_id}")
        .replace("{post}", "{post_id}")
        .replace("{digest}", "{digest_id}")
        .replace("{reader}", "{reader_id}")
        for p in listed
    }
    missing = routes - normalized - NOT_PAGES
    assert not missing, f"console pages without an axe check: {sorted(missing)}"


def seed(database_url: str) -> dict[str, int]:
    """Readers, a feed, posts, a suppression and a draft digest, with long unbreakable text."""
    engine = create_db_engine(database_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as session:
            for n in range(3):
                active_reader(session, f"reader{n}@example.org", ["mexico"], Frequency.WEEKLY)
            active_reader(session, f"{LONG[:60]}@example.org", ["mexico", "refugees"])
            active_reader(session, "russia@example.org", ["russia"])
            feed_ops.add_feed(
                session=session, url=f"https://example.org/feeds/{LONG}{LONG}.xml", topic="mexico"
            )
            posts = []
            for title in ("Elections in Mexico", f"Remittances {LONG}"):
                info = add_post(
                    session=session,
                    title=title,
                    link=f"https://example.org/posts/{LONG}{LONG}{len(posts)}",
                    topics=["mexico"],
                    summary=f"<p>About {title}.</p>",
                )
                posts.append(info.id)
            suppression_ops.add_suppression(
                session=session, email=f"{LONG[:60]}@example.net", detail=f"asked {LONG}"
            )
            digest = digest_ops.create_editorial(
                session=session, subject=f"Mexico this week {LONG}", post_ids=posts
            )
        with sessions() as session:
            return {
                "topic": session.scalar(select(Topic.id).where(Topic.slug == "mexico")) or 0,
                "feed": session.scalar(select(Feed.id)) or 0,
                "post": posts[-1],
                "digest": digest.id,
                "reader": session.scalar(
                    select(Subscriber.id).where(Subscriber.email.like("a-very%"))
                )
                or 0,
            }
    finally:
        engine.dispose()


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login")
    page.get_by_label("Email address").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_every_console_page_passes_axe_at_phone_and_desktop_width(
    service_env: dict[str, str], start: Any, new_page: PageFactory
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base)
    newsletter("db", "upgrade", env=env)
    newsletter("demo", env=env)
    create_admin(env)
    ids = seed(env["NEWSLETTER_DATABASE_URL"])
    web = start(["web", "--port", str(port)], env)
    wait_until_serving(f"{base}/healthz", web)
    page = new_page()
    check_widths(page, f"{base}/admin/login", "the sign-in page")
    sign_in(page, base)
    for path in CONSOLE_PAGES:
        check_widths(page, base + path.format(**ids), path)

    # The count follows the audience boxes as they are ticked, then the saved audience.
    page.goto(f"{base}/admin/digests/{ids['digest']}")
    expect(page.locator("#recipient-count")).to_have_text("4")
    page.get_by_text("Change the audience").click()
    page.get_by_role("checkbox", name="Every active reader (all topics), every post").check()
    expect(page.locator("#audience-would")).to_have_text("With this audience: 5 readers.")
    page.get_by_role("checkbox", name="Every active reader (all topics), every post").uncheck()
    expect(page.locator("#audience-would")).to_have_text("With this audience: 4 readers.")

    # The send confirmation (a page answered to a POST).
    page.goto(f"{base}/admin/digests/{ids['digest']}")
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#confirm-question")).to_contain_text("to 4 readers?")
    check_widths(page, None, "the send confirmation")

    # The skip link is the first Tab stop and takes the keyboard to the main content.
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{base}/admin/digests")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "content"

    # A table that scrolls sideways on a phone is reachable by keyboard, and named.
    page.goto(f"{base}/admin/feeds")
    region = page.locator(".table-wrap").first
    assert region.evaluate("e => e.scrollWidth > e.clientWidth")
    region.focus()
    expect(region).to_be_focused()
    expect(region).to_have_attribute("aria-label", "Feeds: table")

    # The chart's labels are legible on a phone: at least 10 px tall, none cut off.
    page.goto(f"{base}/admin")
    svg = page.locator("svg.chart").bounding_box()
    assert svg is not None
    for box in page.locator("svg.chart text").evaluate_all(
        "ts => ts.map(t => { const r = t.getBoundingClientRect();"
        " return [r.left, r.right, r.height, t.textContent]; })"
    ):
        left, right, height, text = box
        assert height >= 10, (text, height)
        assert svg["x"] - 0.5 <= left and right <= svg["x"] + svg["width"] + 0.5, text
