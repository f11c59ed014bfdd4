"""axe-core in Chromium: the accessibility check every end-to-end page goes through.

`make test` installs axe-core from npm into `tests/e2e/node_modules` (pinned in `tests/e2e/package.json`)
and names the script in `NEWSLETTER_TEST_AXE`. `assert_accessible(page, "what")` injects it into the page,
runs every WCAG 2.x A/AA rule plus axe's best practices, and fails with one line per violation and the
elements it found. `check_widths(page, url, "what")` loads a page at a phone (375 px) and a desktop
(1280 px) width, runs axe at each and checks that nothing pushes the page sideways.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

HERE = Path(__file__).resolve().parent
#: The widths every page is checked at: a small phone and a desktop.
WIDTHS = (375, 1280)
#: Rule sets axe runs: WCAG 2.0/2.1/2.2 A and AA, and axe's best practices (landmarks, headings, ...).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_script() -> Path:
    """The axe-core script: `NEWSLETTER_TEST_AXE`, else the copy `npm ci` put in tests/e2e/node_modules."""
    named = os.environ.get("NEWSLETTER_TEST_AXE")
    path = Path(named) if named else HERE / "node_modules" / "axe-core" / "axe.min.js"
    if not path.is_file():
        message = f"axe-core not found at {path}; `make test` installs it (npm ci in tests/e2e)"
        if os.environ.get("CI") in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def axe_violations(page: Page, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; its violations (empty when the page passes)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, not as a <script> tag: the product's
        # Content-Security-Policy (script-src 'self') rightly refuses inline scripts.
        page.evaluate(axe_script().read_text(encoding="utf-8") + "\n;undefined")
    context: dict[str, Any] = {"exclude": [[selector] for selector in exclude or []]}
    result = page.evaluate(
        "([context, tags]) => axe.run(context, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        [context, TAGS],
    )
    return list(result["violations"])


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per violation: rule, impact, help, and the first few offending elements."""
    lines = []
    for violation in violations:
        targets = [" ".join(map(str, node["target"])) for node in violation["nodes"][:5]]
        lines.append(
            f"{violation['id']} ({violation.get('impact')}): {violation['help']} — {len(violation['nodes'])} "
            f"element(s): {'; '.join(targets)}"
        )
    return "\n".join(lines)


def assert_accessible(page: Page, what: str, *, exclude: list[str] | None = None) -> None:
    """Fail the test with a readable list when axe-core finds any violation on the page."""
    violations = axe_violations(page, exclude=exclude)
    assert not violations, f"axe-core on {what} ({page.url}):\n{describe(violations)}"


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0 when nothing scrolls sideways)."""
    return int(
        page.evaluate(
            "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - document.documentElement.clientWidth"
        )
    )


def check_widths(
    page: Page, url: str | None, what: str, *, widths: tuple[int, ...] = WIDTHS
) -> None:
    """At each width: load `url` (or keep the current page when None), run axe, and refuse sideways scroll."""
    for width in widths:
        page.set_viewport_size({"width": width, "height": 900})
        if url is not None:
            page.goto(url)
        assert_accessible(page, f"{what} at {width} px")
        overflow = horizontal_overflow(page)
        assert overflow <= 0, (
            f"{what} at {width} px scrolls sideways by {overflow} px ({page.url}); "
            f"too wide: {too_wide(page)}"
        )


def too_wide(page: Page) -> list[str]:
    """The innermost elements that reach past the viewport's right edge (tag#id.class and right)."""
    found: list[str] = page.evaluate(
        """() => {
          const w = document.documentElement.clientWidth, out = [];
          for (const e of document.querySelectorAll('body *')) {
            const r = e.getBoundingClientRect();
            if (r.right > w + 0.5 && ![...e.children].some(c => c.getBoundingClientRect().right > w + 0.5))
              out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') +
                ' right=' + Math.round(r.right));
          }
          return out.slice(0, 8);
        }"""
    )
    return found
