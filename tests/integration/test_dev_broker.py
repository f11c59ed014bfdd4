"""CLI commands run beside `newsletter dev` hand their tasks to dev's embedded broker.

A real `newsletter dev` (embedded Redis, web, worker, beat) in a folder of its own; `newsletter posts
approve` run in the same folder, without NEWSLETTER_BROKER_URL, must get the alert into the outbox
within seconds (beat's sweeper would take a minute). A `var/dev.json` left by a dead dev is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import posts
from subscriptions.models import Frequency
from tests.factories import active_reader, add_demo_topics, migrated_sessions
from tests.integration.conftest import free_port, newsletter
from tests.integration.test_feeds import queued

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'newsletter.db'}",
        NEWSLETTER_EMAIL_URL=f"outbox://{tmp_path / 'outbox'}",
        NEWSLETTER_FROM="Institute Updates <news@example.org>",
        C_FORCE_ROOT="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _held_post(sessions: sessionmaker[Session], title: str) -> int:
    with sessions.begin() as session:
        return posts.add_post(
            session=session,
            title=title,
            link=f"https://example.org/{title.lower().replace(' ', '-')}",
            topics=["mexico"],
            held=True,
        ).id


def _outbox(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "outbox"
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def test_a_cli_approve_beside_dev_reaches_its_worker_at_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    sessions = migrated_sessions(env["NEWSLETTER_DATABASE_URL"])
    with sessions.begin() as session:
        add_demo_topics(session)
        active_reader(session, "reader@example.org", ["mexico"], Frequency.IMMEDIATE)
    post_id = _held_post(sessions, "Mexico votes")
    port = free_port()
    log = tmp_path / "dev.log"
    dev = subprocess.Popen(
        [sys.executable, "-m", "subscriptions.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while b"is running at" not in log.read_bytes():
            assert dev.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        recorded = json.loads((tmp_path / "var" / "dev.json").read_text())
        assert recorded["pid"] == dev.pid
        assert recorded["broker_url"].startswith("redis://127.0.0.1:")
        assert (tmp_path / "var" / "dev.json").stat().st_mode & 0o777 == 0o600
        before = len(_outbox(tmp_path))  # confirmation and welcome emails, if any

        started = time.monotonic()
        out = newsletter("posts", "approve", str(post_id), env=env, cwd=tmp_path).stdout
        assert out.strip() == f"{post_id}\tapproved\tMexico votes"
        while len(_outbox(tmp_path)) == before:
            # Beat's sweepers first run a minute after dev starts: 20 s means the task was sent.
            assert time.monotonic() - started < 20, f"no alert in 20 s:\n{log.read_text()}"
            time.sleep(0.25)
        [alert] = _outbox(tmp_path)[before:]
        text = alert.read_text(errors="replace")
        assert "reader@example.org" in text and "Mexico votes" in text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        sessions.kw["bind"].dispose()
    assert not (tmp_path / "var" / "dev.json").exists(), "dev did not remove var/dev.json"


def test_a_dev_file_left_by_a_dead_dev_is_ignored(tmp_path: Path, redis_url: str) -> None:
    """The file names a live Redis (the test's) but a dead process: the command must not use it."""
    env = _env(tmp_path)
    sessions = migrated_sessions(env["NEWSLETTER_DATABASE_URL"])
    with sessions.begin() as session:
        add_demo_topics(session)
    post_id = _held_post(sessions, "Left behind")
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev.json").write_text(
        json.dumps({"broker_url": redis_url, "pid": gone.pid})
    )
    newsletter("posts", "approve", str(post_id), env=env, cwd=tmp_path)
    assert queued(redis_url) == []
    # The same file naming a live process (this one) is used: the task lands on that broker.
    (tmp_path / "var" / "dev.json").write_text(
        json.dumps({"broker_url": redis_url, "pid": os.getpid()})
    )
    newsletter("posts", "hold", str(post_id), env=env, cwd=tmp_path)
    newsletter("posts", "approve", str(post_id), env=env, cwd=tmp_path)
    assert [name for name, _ in queued(redis_url)] == ["newsletter.plan_post_alerts"]
    sessions.kw["bind"].dispose()
