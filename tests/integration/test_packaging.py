"""An installed wheel (not an editable checkout) finds the top-level templates/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import REPO


@pytest.mark.timeout(300)
def test_wheel_carries_templates_and_finds_them_when_installed(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("topic_newsletter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ["subscriptions/_templates/web/subscribe.html", "subscriptions/_templates/email/confirm.txt",
                     "subscriptions/_templates/static/style.css", "subscriptions/migrations/versions/0001_initial_schema.py",
                     "subscriptions/demo/sample-posts.txt", "subscriptions/locales/es/LC_MESSAGES/messages.mo",
                     "subscriptions/locales/es/LC_MESSAGES/messages.po"]:  # fmt: skip
        assert expected in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import subscriptions.templating as t; from subscriptions.demo import sample_text;"
        "print(t.__file__); print(t.builtin_templates()); print(len(sample_text()) > 0);"
        "from subscriptions.i18n import gettext_for; print(gettext_for('es')('Check your email'))"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(target)), "the installed copy, not the checkout, was imported"
    assert out[1] == str(target / "subscriptions" / "_templates")
    assert out[2] == "True"
    assert out[3] == "Revisa tu correo", "the wheel carries the compiled Spanish catalog"
