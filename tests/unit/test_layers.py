"""The layering contract (tests/layers.py) holds for the tree, and fails for each forbidden import."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.layers import modules, violations

ROOT = Path(__file__).resolve().parents[2]


def test_the_tree_keeps_the_layering_contract() -> None:
    names = modules(ROOT)
    assert {"mail.providers.ses", "subscriptions.web.webhooks", "worker.tasks"} <= set(names)
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    base = {
        "mail/__init__.py": "",
        "mail/bodies.py": "from subscriptions.i18n import gettext_for\n",
        "subscriptions/__init__.py": "",
        "subscriptions/i18n.py": "import gettext\n",
        "subscriptions/models.py": "import sqlalchemy\n",
        "subscriptions/cli.py": "from worker import tasks\nfrom subscriptions.web import app\n",
        "subscriptions/web/__init__.py": "",
        "subscriptions/web/app.py": "from subscriptions import models\nfrom mail import bodies\n",
        "worker/__init__.py": "",
        "worker/tasks.py": "from subscriptions import models\nfrom mail import bodies\n",
    }
    for name, text in {**base, **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_tree_that_keeps_the_contract_has_no_violations(tmp_path: Path) -> None:
    """The synthetic tree itself is clean: what the next test adds is what breaks it."""
    assert violations(_tree(tmp_path, {})) == []


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("subscriptions/readers.py", "from worker.tasks import x\n", "the store imports neither"),
        (
            "subscriptions/readers.py",
            "def f():\n    from subscriptions.web import app\n",
            "the store imports neither",
        ),
        (
            "subscriptions/web/previews.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import worker.tasks\n",
            "the web imports no worker module",
        ),
        ("subscriptions/web/hooks.py", "from worker import tasks\n", "the web imports no worker"),
        ("mail/links.py", "from subscriptions.models import Reader\n", "mail imports no store"),
        ("mail/links.py", "from subscriptions import models\n", "mail imports no store"),
        ("mail/links.py", "def f():\n    import worker.tasks\n", "mail imports no worker"),
        ("mail/links.py", "from subscriptions.web.app import x\n", "mail imports no web"),
        ("mail/providers/__init__.py", "from ...worker import tasks\n", "mail imports no worker"),
        ("subscriptions/i18n.py", "from sqlalchemy import select\n", "touch no database"),
        ("subscriptions/i18n.py", "from subscriptions import models\n", "import only each other"),
    ],
)
def test_each_forbidden_import_is_reported(
    tmp_path: Path, path: str, source: str, rule: str
) -> None:
    found = violations(_tree(tmp_path, {path: source}))

    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:")
    assert rule in found[0]


def test_entry_points_may_import_the_worker_and_the_web(tmp_path: Path) -> None:
    """subscriptions.cli imports both in the base tree; the same lines elsewhere in the store break."""
    cli = "from worker import tasks\nfrom subscriptions.web import app\n"
    found = violations(_tree(tmp_path, {"subscriptions/feeds.py": cli}))

    assert [re.sub(r":\d+:", ":", v).split(" (")[0] for v in found] == [
        "subscriptions/feeds.py: subscriptions.feeds imports worker.tasks",
        "subscriptions/feeds.py: subscriptions.feeds imports subscriptions.web.app",
    ]


def test_the_readme_layout_lists_the_tree() -> None:
    """Each path README's "How it works" names exists, and every top-level folder of code is listed."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## How it works\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `([\w./]+/)`", section, flags=re.MULTILINE)
    named = set(re.findall(r"`((?:mail|subscriptions|worker|tests)/[\w./]+)`", section))

    assert [p for p in listed + sorted(named) if not (ROOT / p).exists()] == []
    folders = {p.name + "/" for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - {"tests/"} <= set(listed)
    assert {"mail/", "subscriptions/", "worker/", "templates/", "tests/", "bench/"} <= set(listed)
