"""Fixtures for end-to-end tests: a real Chromium (Python Playwright, sync API) and a screenshot folder.

The services (database, Redis, product processes) come from tests/integration/conftest.py. The browser is
the one `NEWSLETTER_TEST_CHROMIUM` names (`make test` sets it); without it the tests skip with the reason,
except under CI=true, where they fail. Screenshots go to `$NEWSLETTER_TEST_OUTPUT_DIR/e2e/` (else to the
test's tmp_path); a failing test also leaves `failure.png` of the page it was on.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.integration.conftest import database_url, redis_url, service_env, start  # noqa: F401

#: Flags for Chromium in a container as root with no network beyond loopback (shared/SERVICES.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _unavailable(message: str) -> None:
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(f"{message} (CI=true: end-to-end tests are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium binary to drive: `NEWSLETTER_TEST_CHROMIUM`, which must exist and be executable."""
    path = os.environ.get("NEWSLETTER_TEST_CHROMIUM", "")
    if not path:
        _unavailable("NEWSLETTER_TEST_CHROMIUM is not set; `make test` finds Chromium and sets it")
    elif not os.access(path, os.X_OK):
        _unavailable(f"NEWSLETTER_TEST_CHROMIUM={path} is not an executable file")
    return path


@pytest.fixture
def browser(chromium_path: str) -> Iterator[Browser]:
    """A headless Chromium for one test, closed afterwards."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where this run's screenshots go; earlier runs' numbered screenshots are removed first."""
    base = os.environ.get("NEWSLETTER_TEST_OUTPUT_DIR")
    folder = Path(base) / "e2e" if base else tmp_path / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("[0-9][0-9]-*.png"), *folder.glob("failure*.png")]:
        old.unlink()
    return folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class PageFactory:
    """Opens pages, each in a browser context of its own (viewport, time zone, locale...)."""

    def __init__(self, browser: Browser) -> None:
        self._browser = browser
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []

    def __call__(self, **context_options: Any) -> Page:
        context = self._browser.new_context(**context_options)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = context.new_page()
        self.pages.append(page)
        return page


@pytest.fixture
def new_page(
    request: pytest.FixtureRequest, browser: Browser, screenshots: Path
) -> Iterator[PageFactory]:
    """`new_page(timezone_id=..., viewport=...)`: a fresh page; after a failed test the last page
    opened is saved as `failure.png` beside the screenshots."""
    factory = PageFactory(browser)
    yield factory
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and factory.pages and not factory.pages[-1].is_closed():
        try:
            factory.pages[-1].screenshot(path=screenshots / "failure.png", full_page=True)
        except Exception as exc:  # a best-effort diagnostic must not hide the real failure
            print(f"could not save failure.png: {exc}")
    for context in factory.contexts:
        context.close()
