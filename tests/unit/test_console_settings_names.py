"""The console's Settings page names each setting as README's settings table does."""

from __future__ import annotations

import re
from pathlib import Path

from subscriptions.web.admin.settings import shown_settings
from tests.factories import make_settings


def test_the_settings_page_uses_the_readme_names(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(NEWSLETTER_[A-Z_]+)` \|", readme, re.M))
    shown = [variable for variable, _, _ in shown_settings(make_settings(tmp_path))]
    assert "NEWSLETTER_FROM" in shown and "NEWSLETTER_FROM_ADDRESS" not in shown
    assert set(shown) <= documented, set(shown) - documented
