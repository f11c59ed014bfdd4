"""The "subscribe here" box on a publisher's page in another site, in a real Chromium.

The publisher's pages are served by a small HTTP server of the test at `http://blog.test:<port>`
(Chromium maps that host name to 127.0.0.1 with `--host-resolver-rules`), a site other than the
newsletter's `http://127.0.0.1:<port>`. A reader subscribes from them with the plain HTML form, with
the optional script, and through the framed form; the worker sends each a confirmation email. A page
on a site that is not allowed cannot frame the form. axe-core checks every reader page on the way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from subscriptions.web.embed import snippets
from subscriptions.web.reader import CONSENT_WORDING
from tests.e2e.axe import check_widths
from tests.e2e.conftest import CHROMIUM_ARGS
from tests.e2e.test_reader_journey import _read_email
from tests.integration.conftest import free_port, newsletter, wait_for_files, wait_until_serving

PUBLISHER_HOST = "blog.test"
OTHER_HOST = "elsewhere.test"


class Publisher:
    """The publisher's site: a few pages with the console's snippets pasted in."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = pages
        self.port = free_port()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.pages.get(self.path.partition("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = PUBLISHER_HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _article(title: str, box: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><main><h1>{title}</h1>"
        "<p>Today, the number of Mexicans crossing the border illegally has dropped.</p>"
        f"{box}</main></body></html>"
    )


@pytest.fixture
def browser_with_hosts(chromium_path: str) -> Iterator[Browser]:
    """Chromium that resolves the publisher's host names to 127.0.0.1."""
    rules = f"MAP {PUBLISHER_HOST} 127.0.0.1, MAP {OTHER_HOST} 127.0.0.1"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        try:
            yield launched
        finally:
            launched.close()


def _page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(**options)
    context.set_default_timeout(10_000)
    return context.new_page()


def _confirmation_to(outbox: Path, address: str, count: int) -> None:
    files = wait_for_files(outbox, count, timeout=30)
    recipients = [_read_email(f)["To"] for f in files]
    assert address in recipients, f"no email to {address}: {recipients}"


def test_a_reader_subscribes_from_the_publishers_page_with_and_without_the_script(
    service_env: dict[str, str], start: Any, browser_with_hosts: Browser
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    publisher = Publisher({})
    env = dict(
        service_env,
        NEWSLETTER_BASE_URL=base,
        NEWSLETTER_EMBED_ORIGINS=publisher.url(""),
        # A person filling a one-field box is quick: the box is not held to the fill time.
        NEWSLETTER_FORM_MIN_SECONDS="5",
    )
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter("topics", "add", "mexico", "Mexico", env=env)
    newsletter("topics", "add", "migration", "Migration", env=env)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    made = snippets(base, ["mexico", "migration"], "weekly", CONSENT_WORDING)
    publisher.pages.update(
        {
            "/plain": _article("A post with the plain box", made.form),
            "/scripted": _article("A post with the scripted box", made.form + made.script),
            "/framed": _article("A post with the framed box", made.frame),
        }
    )
    wait_until_serving(f"{base}/healthz", web)
    try:
        # 1. The plain HTML form: one field, one button, then our "check your email" page.
        page = _page(browser_with_hosts)
        page.goto(publisher.url("/plain"))
        page.get_by_label("please subscribe here").fill("Plain.Reader@Example.org")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        assert page.url == f"{base}/subscribe"
        expect(page.locator("main")).to_contain_text("Plain.Reader@Example.org")
        back = page.get_by_role("link", name="Back to the page you were reading")
        expect(back).to_contain_text(f"{PUBLISHER_HOST}:{publisher.port}")
        check_widths(page, None, "check your email after the box")
        _confirmation_to(outbox, "plain.reader@example.org", 1)
        back.click()
        assert page.url.startswith(publisher.url("/"))

        # 2. With the script: the answer appears under the box; the reader never leaves the post.
        scripted = _page(browser_with_hosts, timezone_id="America/Mexico_City")
        scripted.goto(publisher.url("/scripted"))
        scripted.get_by_label("please subscribe here").fill("Script.Reader@Example.org")
        scripted.get_by_role("button", name="Subscribe").click()
        expect(scripted.get_by_role("status")).to_have_text(
            "Check your email: We sent a link to Script.Reader@Example.org."
            " Open it to confirm your subscription."
        )
        assert scripted.url == publisher.url("/scripted")
        _confirmation_to(outbox, "script.reader@example.org", 2)

        # 3. The framed form on the allowed site: the answer shows inside the frame.
        framed = _page(browser_with_hosts)
        framed.goto(publisher.url("/framed"))
        frame = framed.frame_locator("iframe")
        frame.get_by_label("please subscribe here").fill("Framed.Reader@Example.org")
        frame.get_by_role("button", name="Subscribe").click()
        expect(frame.get_by_role("heading", name="Check your email")).to_be_visible()
        expect(frame.locator("main")).to_contain_text("Framed.Reader@Example.org")
        _confirmation_to(outbox, "framed.reader@example.org", 3)
        check_widths(framed, f"{base}/embed/form?topic=mexico,migration", "the framed form")

        # 4. The same page on a site not on the list: the browser refuses to show the frame,
        # and a plain form from there is refused by the service.
        other = _page(browser_with_hosts)
        other.goto(publisher.url("/framed", host=OTHER_HOST))
        other.wait_for_timeout(500)
        child = other.frames[1]
        assert child.url.startswith("chrome-error://") or child.locator("form").count() == 0
        other.goto(publisher.url("/plain", host=OTHER_HOST))
        other.get_by_label("please subscribe here").fill("nobody@example.org")
        other.get_by_role("button", name="Subscribe").click()
        expect(other.get_by_role("heading", name="Please subscribe on our page")).to_be_visible()
        check_widths(other, None, "a box on a site not allowed")
        assert len(list(outbox.glob("*.eml"))) == 3
    finally:
        publisher.close()
