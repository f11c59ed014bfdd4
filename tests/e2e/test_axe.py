"""The accessibility harness itself: axe-core finds what it should, and the subscribe page passes it.

Every other end-to-end test relies on `tests/e2e/axe.py`; these tests show that it can fail (a page with a
known violation is reported) and that the reader's first page passes at a phone and a desktop width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.axe import axe_violations, check_widths, horizontal_overflow
from tests.e2e.conftest import PageFactory
from tests.integration.conftest import free_port, newsletter, wait_until_serving


def test_axe_reports_an_image_without_alt_text_and_a_page_too_wide(new_page: PageFactory) -> None:
    page = new_page(viewport={"width": 375, "height": 700})
    page.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="600" height="10"></main></body></html>'
    )
    assert "image-alt" in {violation["id"] for violation in axe_violations(page)}
    assert horizontal_overflow(page) > 200
    with pytest.raises(AssertionError, match="image-alt"):
        check_widths(page, None, "a page with a known violation", widths=(375,))


def test_subscribe_page_passes_axe_at_phone_and_desktop_width(
    service_env: dict[str, str], start: Any, new_page: PageFactory, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base)
    newsletter("db", "upgrade", env=env)
    newsletter(
        "topics", "add", "mexico", "Mexico", "--description", "U.S.-Mexico relations", env=env
    )
    web = start(["web", "--port", str(port)], env)
    wait_until_serving(f"{base}/healthz", web)
    check_widths(new_page(), f"{base}/", "the subscribe page")
