"""A reader's whole journey in a real Chromium, against a real web process, worker and Redis.

Subscribe on `/` → confirmation email in the outbox → confirm with the one button → welcome email with
manage and one-click unsubscribe links (and the List-Unsubscribe headers) → change a topic's frequency in
the preference centre → unsubscribe from the welcome email's link. The database is checked after every
step, and every page visited is saved as a numbered screenshot.
"""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page, Response, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Subscriber, SubscriberStatus, Subscription, Topic
from tests.e2e.conftest import PageFactory
from tests.integration.conftest import free_port, newsletter, wait_for_files, wait_until_serving

ADDRESS = "Lector@Example.org"
STORED_ADDRESS = "lector@example.org"
#: Not the server's default (UTC): only the browser's Intl API can have put it in the form.
BROWSER_ZONE = "America/Mexico_City"
DESKTOP = {"width": 1024, "height": 800}


def _read_email(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, f"no text part in {message['Subject']!r}"
    return str(part.get_content())


def _link(text: str, base: str, path: str) -> str:
    """The one absolute link to `base` + `path` + a token in an email's text."""
    found = re.findall(rf"{re.escape(base)}{re.escape(path)}[A-Za-z0-9_.~=-]+", text)
    assert len(set(found)) == 1, f"expected one {path} link to {base} in:\n{text}"
    return str(found[0])


def _wait_for_email(outbox: Path, subject: str) -> EmailMessage:
    """The outbox message with `subject`, waiting for the worker to write it."""
    count = 1
    while True:
        files = wait_for_files(outbox, count, timeout=30)
        for path in files:
            message = _read_email(path)
            if message["Subject"] == subject:
                return message
        count = len(files) + 1


class Journey:
    """The browser side of the journey: numbered screenshots and console errors."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shots: list[str] = []
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        """Record the page's script errors, console errors and failed requests (but /favicon.ico,
        which the product does not serve and browsers ask for on their own)."""
        page.on("pageerror", lambda e: self.errors.append(f"script error: {e}"))
        page.on("console", self._console)
        page.on("response", self._response)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        # A failed request is also logged as "Failed to load resource": _response names its URL.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.errors.append(f"{response.status} from {response.request.method} {response.url}")

    def shot(self, page: Page, name: str) -> None:
        filename = f"{len(self.shots) + 1:02d}-{name}.png"
        page.screenshot(path=self.folder / filename, full_page=True)
        self.shots.append(filename)


def test_reader_subscribes_confirms_changes_preferences_and_unsubscribes(
    tmp_path: Path,
    service_env: dict[str, str],
    start: Any,
    new_page: PageFactory,
    screenshots: Path,
) -> None:
    """Subscribe, confirm, manage and unsubscribe through the pages and emails a reader sees."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base)
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter(
        "topics", "add", "mexico", "Mexico", "--description", "U.S.-Mexico relations", env=env
    )
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    newsletter("topics", "add", "border-security", "Border Security", env=env)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    wait_until_serving(f"{base}/healthz", web)

    engine = create_db_engine(env["NEWSLETTER_DATABASE_URL"])
    sessions = session_factory(engine)

    @contextmanager
    def reader() -> Iterator[tuple[Session, Subscriber]]:
        with sessions() as session:
            found = session.scalar(select(Subscriber).where(Subscriber.email == STORED_ADDRESS))
            assert found is not None, f"no reader {STORED_ADDRESS} in the database"
            yield session, found

    def frequencies(session: Session, subscriber: Subscriber) -> dict[str, str]:
        rows = session.execute(
            select(Topic.slug, Subscription.frequency)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == subscriber.id)
        )
        return {slug: frequency.value for slug, frequency in rows}

    journey = Journey(screenshots)
    page = journey.watch(new_page(timezone_id=BROWSER_ZONE, viewport=DESKTOP, locale="en-US"))
    try:
        # 1. The subscribe form: address, two of three topics, a frequency other than the default.
        page.goto(f"{base}/")
        expect(page.get_by_role("heading", name="Subscribe")).to_be_visible()
        expect(page.locator("#timezone")).to_have_value(BROWSER_ZONE)
        journey.shot(page, "subscribe")
        page.get_by_label("Email address").fill(ADDRESS)
        page.get_by_role("checkbox", name="Mexico").check()
        page.get_by_role("checkbox", name="Refugees").check()
        page.get_by_role("radio", name="Immediately, one email per post").check()
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        journey.shot(page, "check-email")

        # 2. The confirmation email (the worker applies the sign-up behind the answer, then sends
        # it); a GET of its link changes nothing, the button confirms.
        confirmation = _wait_for_email(outbox, "Confirm your subscription to Institute Updates")
        with reader() as (session, found):
            assert found.status is SubscriberStatus.PENDING
            assert frequencies(session, found) == {}  # nothing until the reader confirms
        assert confirmation["To"] == STORED_ADDRESS
        confirm_url = _link(_text(confirmation), base, "/confirm/")
        page.goto(confirm_url)
        expect(page.get_by_role("heading", name="Confirm your subscription")).to_be_visible()
        journey.shot(page, "confirm")
        with reader() as (_, found):
            assert found.status is SubscriberStatus.PENDING
        buttons = page.locator("main button")
        expect(buttons).to_have_count(1)
        buttons.click()
        expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
        journey.shot(page, "confirmed")
        with reader() as (session, found):
            assert found.status is SubscriberStatus.ACTIVE
            assert found.timezone == BROWSER_ZONE  # set by the hidden field's Intl script
            assert frequencies(session, found) == {"mexico": "immediate", "refugees": "immediate"}

        # 3. The welcome email: manage and unsubscribe links, and the one-click list headers.
        welcome = _wait_for_email(outbox, "Welcome to Institute Updates")
        assert welcome["To"] == STORED_ADDRESS
        text = _text(welcome)
        manage_url = _link(text, base, "/manage/")
        unsubscribe_url = _link(text, base, "/unsubscribe/")
        assert welcome["List-Unsubscribe"] == f"<{unsubscribe_url}>"
        assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # 4. The preference centre: Refugees becomes weekly.
        page.goto(manage_url)
        expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
        expect(page.locator("main")).to_contain_text(STORED_ADDRESS)
        mexico = page.get_by_role("combobox", name="Mexico")
        refugees = page.get_by_role("combobox", name="Refugees")
        expect(mexico).to_have_value("immediate")
        expect(refugees).to_have_value("immediate")
        expect(page.get_by_role("combobox", name="Border Security")).to_have_value("off")
        expect(page.get_by_label("Digests arrive in the morning of this time zone")).to_have_value(
            BROWSER_ZONE
        )
        journey.shot(page, "manage")
        refugees.select_option("weekly")
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_role("status")).to_have_text("Your preferences are saved.")
        expect(page.get_by_role("combobox", name="Refugees")).to_have_value("weekly")
        journey.shot(page, "manage-saved")
        with reader() as (session, found):
            assert found.status is SubscriberStatus.ACTIVE
            assert found.timezone == BROWSER_ZONE
            assert frequencies(session, found) == {"mexico": "immediate", "refugees": "weekly"}

        # 5. The welcome email's unsubscribe link: the page (a GET) changes nothing, the button does.
        page.goto(unsubscribe_url)
        expect(page.get_by_role("heading", name="Unsubscribe", exact=True)).to_be_visible()
        journey.shot(page, "unsubscribe")
        with reader() as (session, found):
            assert found.status is SubscriberStatus.ACTIVE
            assert frequencies(session, found) == {"mexico": "immediate", "refugees": "weekly"}
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        journey.shot(page, "unsubscribed")
        with reader() as (session, found):
            assert found.status is SubscriberStatus.UNSUBSCRIBED
            assert found.unsubscribed_at is not None
            assert frequencies(session, found) == {}

        # 6. A 320 px wide phone: the subscribe form fits without scrolling sideways.
        phone = journey.watch(
            new_page(timezone_id=BROWSER_ZONE, viewport={"width": 320, "height": 640})
        )
        phone.goto(f"{base}/")
        expect(phone.get_by_role("button", name="Subscribe")).to_be_visible()
        journey.shot(phone, "subscribe-320px")
        scroll_width = phone.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= 320, f"the subscribe page is {scroll_width} px wide at 320 px"

        assert journey.errors == [], "errors in the browser"
    finally:
        engine.dispose()
        print(f"screenshots in {screenshots}: {', '.join(journey.shots)}")
