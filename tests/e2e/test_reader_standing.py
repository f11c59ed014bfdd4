"""Every reader page tells the reader where they stand, in a real Chromium, with axe-core on each.

One reader goes through every page a reader can meet, against a real web process, worker and Redis:
a form sent back too fast (one more button), check-your-email with the address and a resend, the
rate-limit page, confirm, confirmed, already confirmed, the preference centre, the unsubscribe page
with its pause, leaving and its undo, link revocation, erasure and signing up again, a suppressed
address, the invalid and expired link pages, the 404 page, and dark mode. Each page is checked by
axe-core at 375 and 1280 px (`tests/e2e/axe.py`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest import mock

from playwright.sync_api import Page, expect
from sqlalchemy import select

from subscriptions import privacy, readers
from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Subscriber, SubscriberStatus, Subscription
from subscriptions.tokens import Purpose, TokenSigner
from tests.e2e.axe import check_widths
from tests.e2e.conftest import PageFactory
from tests.e2e.test_reader_journey import _link, _text, _wait_for_email
from tests.factories import SECRET
from tests.integration.conftest import free_port, newsletter, wait_until_serving

ADDRESS = "Standing.Reader@Example.org"
STORED = "standing.reader@example.org"


def _subscribe(page: Page, base: str, address: str) -> None:
    """The subscribe form, filled in and sent at once (faster than the fill time)."""
    page.goto(f"{base}/")
    page.get_by_label("Email address").fill(address)
    page.get_by_role("checkbox", name="Mexico").check()
    page.get_by_role("checkbox", name="Refugees").check()
    page.get_by_role("radio", name="Weekly digest").check()
    page.get_by_role("button", name="Subscribe").click()


def test_every_reader_page_says_where_the_reader_stands(
    service_env: dict[str, str], start: Any, new_page: PageFactory
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(
        service_env,
        NEWSLETTER_BASE_URL=base,
        NEWSLETTER_FORM_MIN_SECONDS="30",  # every form in this test comes back "too fast"
        NEWSLETTER_RATE_LIMIT_PER_ADDRESS="3",
    )
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter("topics", "add", "mexico", "Mexico", env=env)
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    wait_until_serving(f"{base}/healthz", web)
    engine = create_db_engine(env["NEWSLETTER_DATABASE_URL"])
    sessions = session_factory(engine)
    with sessions.begin() as session:  # an address that complained about our email once
        readers.suppress(session=session, email="angry@example.org", reason="complaint")

    def reader(address: str = STORED) -> Subscriber | None:
        with sessions() as session:
            return session.scalar(select(Subscriber).where(Subscriber.email == address))

    def topic_count(subscriber_id: int) -> int:
        with sessions() as session:
            return len(
                session.scalars(
                    select(Subscription).where(Subscription.subscriber_id == subscriber_id)
                ).all()
            )

    page = new_page(locale="en-US")
    try:
        check_widths(page, f"{base}/", "the subscribe page")

        # 1. Too fast: never "check your email" for nothing; one more button does it.
        _subscribe(page, base, ADDRESS)
        expect(page.get_by_role("heading", name="One more step")).to_be_visible()
        expect(page.locator("main")).to_contain_text(ADDRESS)
        check_widths(page, None, "one more step")
        assert reader() is None
        page.get_by_role("button", name="Yes, subscribe me").click()

        # 2. Check your email: the address as typed, and "send it again" (rate-limited).
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        expect(page.locator("main .address")).to_have_text(ADDRESS)
        check_widths(page, None, "check your email")
        first = _wait_for_email(outbox, "Confirm your subscription to Institute Updates")
        page.get_by_role("button", name="Send the email again").click()
        expect(page.get_by_role("status")).to_contain_text("We sent the email again")
        check_widths(page, None, "check your email, sent again")
        page.get_by_role("button", name="Send the email again").click()  # the 3rd of 3 an hour
        expect(page.get_by_role("status")).to_contain_text("We sent the email again")
        page.get_by_role("button", name="Send the email again").click()
        expect(page.get_by_role("heading", name="Too many requests")).to_be_visible()
        main = page.locator("main")
        expect(main).to_contain_text("This address was signed up too many times in the last hour")
        expect(main).to_contain_text("Please try again in")
        check_widths(page, None, "the rate-limit page")

        # 3. Confirm, confirmed (with the way to preferences), and the link used again.
        confirm_url = _link(_text(first), base, "/confirm/")
        check_widths(page, confirm_url, "the confirm page")
        page.get_by_role("button", name="Yes, subscribe me").click()
        expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
        check_widths(page, None, "the confirmed page")
        page.get_by_role("link", name="Change your topics").click()
        expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
        check_widths(page, None, "the preference centre")
        page.goto(confirm_url)
        expect(page.get_by_role("heading", name="You have already confirmed")).to_be_visible()
        check_widths(page, confirm_url, "already confirmed")
        page.get_by_role("link", name="Change your topics").click()
        expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
        found = reader()
        assert found is not None and found.status is SubscriberStatus.ACTIVE
        subscriber_id = found.id
        assert topic_count(subscriber_id) == 2

        # 4. Unsubscribe: a pause first, then leaving, then the undo.
        welcome = _wait_for_email(outbox, "Welcome to Institute Updates")
        unsubscribe_url = _link(_text(welcome), base, "/unsubscribe/")
        check_widths(page, unsubscribe_url, "the unsubscribe page")
        page.get_by_label("Pause all email for").select_option("2")
        page.get_by_role("button", name="Pause instead").click()
        expect(page.get_by_role("heading", name="Email is paused")).to_be_visible()
        check_widths(page, None, "paused instead")
        found = reader()
        assert found is not None and found.paused_until is not None
        assert found.status is SubscriberStatus.ACTIVE and topic_count(subscriber_id) == 2
        page.goto(unsubscribe_url)
        page.get_by_role("button", name="Unsubscribe", exact=True).click()
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        check_widths(page, None, "unsubscribed, with the undo")
        assert topic_count(subscriber_id) == 0
        # Later, the email's link: still unsubscribed, and the undo is still offered.
        check_widths(page, unsubscribe_url, "the unsubscribe link of a reader who left")
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        page.get_by_role("button", name="Undo: subscribe me again").click()
        expect(page.get_by_role("heading", name="You are subscribed again")).to_be_visible()
        check_widths(page, None, "subscribed again")
        found = reader()
        assert found is not None and found.status is SubscriberStatus.ACTIVE
        assert topic_count(subscriber_id) == 2
        page.go_back()
        page.get_by_role("button", name="Undo: subscribe me again").click()
        expect(page.get_by_role("heading", name="This can no longer be undone")).to_be_visible()
        check_widths(page, None, "undo no longer possible")

        # 5. Revoke every link: the old ones say so; erase; then sign up again from scratch.
        manage_url = _link(_text(welcome), base, "/manage/")
        page.goto(manage_url)
        page.get_by_role("button", name="Revoke all my links").click()
        expect(page.get_by_role("heading", name="Your old links no longer work")).to_be_visible()
        check_widths(page, None, "links revoked")
        check_widths(page, manage_url, "a revoked link")
        fresh = _wait_for_email(outbox, "Your Institute Updates preferences")
        page.goto(_link(_text(fresh), base, "/manage/"))
        page.get_by_label("Erase everything you hold about me").check()
        page.get_by_role("button", name="Erase me").click()
        expect(page.get_by_role("heading", name="Everything is erased")).to_be_visible()
        check_widths(page, None, "erased")
        assert reader() is None
        with sessions() as session:
            assert readers.blocking_suppression(session=session, email=STORED) is None
        # A new page (a new browser): the per-address limit of this hour is spent, the network's not.
        again = new_page(locale="en-US")
        _subscribe(again, base, "Standing.Reader@example.org")
        again.get_by_role("button", name="Yes, subscribe me").click()
        heading = again.get_by_role("heading", level=1)
        expect(heading).to_have_text("Too many requests")  # 3 an hour for this address: spent

        # 6. A complained address is told that it cannot sign up, and whom to write to.
        _subscribe(again, base, "Angry@Example.org")
        again.get_by_role("button", name="Yes, subscribe me").click()
        expect(again.get_by_role("heading", name="We cannot sign up this address")).to_be_visible()
        expect(again.get_by_role("link", name="news@example.org")).to_be_visible()
        check_widths(again, None, "sign-up not possible")
        assert reader("angry@example.org") is None

        # 7. The other pages: manage-link request and answer, bad and expired links, 404.
        check_widths(page, f"{base}/manage", "ask for a preferences link")
        page.get_by_label("Email address").fill("someone@example.org")
        page.get_by_role("button", name="Email me a link").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        check_widths(page, None, "preferences link sent")
        check_widths(page, f"{base}/confirm/not-a-token", "an invalid link")
        with mock.patch("time.time", return_value=time.time() - 30 * 86400):
            old = TokenSigner(SECRET).make(
                Purpose.CONFIRM, subscriber_id=999_999, version=1, consent_id=999_999
            )
        check_widths(page, f"{base}/confirm/{old}", "an expired link")
        expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
        check_widths(page, f"{base}/no-such-page", "the 404 page")

        # 8. Dark mode: the pages follow the system setting, and still pass axe (contrast).
        dark = new_page(color_scheme="dark")
        check_widths(dark, f"{base}/", "the subscribe page in dark mode")
        background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 18, 18)", background
        check_widths(dark, unsubscribe_url, "a page in dark mode")
        light = new_page(color_scheme="light")
        light.goto(f"{base}/")
        assert light.evaluate("getComputedStyle(document.body).backgroundColor") == (
            "rgb(255, 255, 255)"
        )
    finally:
        engine.dispose()


def test_an_erased_reader_signs_up_again_and_a_bot_in_the_honeypot_does_not(
    service_env: dict[str, str], start: Any, new_page: PageFactory
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base)
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter("topics", "add", "mexico", "Mexico", env=env)
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    engine = create_db_engine(env["NEWSLETTER_DATABASE_URL"])
    sessions = session_factory(engine)
    with sessions.begin() as session:
        signup = readers.subscribe(
            session=session,
            email="back@example.org",
            topics=["mexico"],
            frequency=readers.Frequency.DAILY,
            timezone="UTC",
        )
        assert signup.subscriber_id is not None
        privacy.erase_reader(session=session, subscriber_id=signup.subscriber_id)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    wait_until_serving(f"{base}/healthz", web)
    try:
        # A bot that fills the hidden honeypot gets the usual page, and nothing happens.
        bot = new_page()
        bot.goto(f"{base}/")
        bot.evaluate("document.getElementById('website').value = 'http://spam.example'")
        bot.get_by_label("Email address").fill("bot@example.org")
        bot.get_by_role("checkbox", name="Mexico").check()
        bot.get_by_role("button", name="Subscribe").click()
        expect(bot.get_by_role("heading", name="Check your email")).to_be_visible()
        expect(bot.locator("main .address")).to_have_text("bot@example.org")

        page = new_page()
        _subscribe(page, base, "Back@Example.org")
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        message = _wait_for_email(outbox, "Confirm your subscription to Institute Updates")
        assert message["To"] == "back@example.org"
        with sessions() as session:
            emails = set(session.scalars(select(Subscriber.email)))
        assert emails == {"back@example.org"}  # the bot's address was never stored
        assert len(list(outbox.glob("*.eml"))) == 1
    finally:
        engine.dispose()


def test_a_form_sent_again_from_the_answer_page_shows_check_your_email_and_sends_one_email(
    service_env: dict[str, str], start: Any, new_page: PageFactory
) -> None:
    """A hurried reader reloads the "Check your email" page (or double-clicks, or goes Back and
    sends): the browser sends the same form, token and all, again and shows the second answer. It
    must say "Check your email" again, and one confirmation must arrive, not two."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base, NEWSLETTER_FORM_MIN_SECONDS="0")
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter("topics", "add", "mexico", "Mexico", env=env)
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    wait_until_serving(f"{base}/healthz", web)
    page = new_page()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(f"{base}/")
    page.get_by_label("Email address").fill("Hurried@Example.org")
    page.get_by_role("checkbox", name="Mexico").check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.reload()  # Chromium sends the POST again, form token included
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    expect(page.locator("main .address")).to_have_text("Hurried@Example.org")
    assert posts == [f"{base}/subscribe"] * 2, posts  # the browser did send it twice
    message = _wait_for_email(outbox, "Confirm your subscription to Institute Updates")
    assert message["To"] == "hurried@example.org"
    time.sleep(3)  # the worker applies sign-ups within a second; a second one would be here by now
    confirmations = [
        p for p in outbox.glob("*.eml") if "hurried@example.org" in p.read_text(errors="replace")
    ]
    assert len(confirmations) == 1, confirmations
    check_widths(page, None, "a double click's answer")
