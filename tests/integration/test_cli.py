"""The `newsletter` command line, run as a user runs it, in fresh processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import webforms
from tests.integration.conftest import free_port, newsletter, wait_for_files

COMMANDS = ["beat", "db", "demo", "dev", "posts", "topics", "web", "worker"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(C_FORCE_ROOT="1", PYTHONUNBUFFERED="1", **extra)
    return env


def test_help_lists_every_command_with_a_description() -> None:
    out = newsletter("--help", env=_clean_env()).stdout
    for command in COMMANDS:
        line = re.search(rf"^\s+{command}\s+(\S.*)$", out, re.M)
        assert line, f"{command} missing from --help"
    for group, subs in {
        "db": ["upgrade"],
        "topics": ["add", "list"],
        "posts": ["add", "list"],
    }.items():
        out = newsletter(group, "--help", env=_clean_env()).stdout
        for sub in subs:
            assert re.search(rf"^\s+{sub}\s+\S", out, re.M), f"{group} {sub} missing"
    for command in ["dev", "web", "worker", "beat", "demo"]:
        assert "Usage:" in newsletter(command, "--help", env=_clean_env()).stdout


def test_bad_settings_give_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = _clean_env(NEWSLETTER_EMAIL_URL="postmak://x@y")
    result = newsletter("topics", "list", env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "NEWSLETTER_EMAIL_URL: unknown scheme 'postmak' (known: outbox, smtp" in result.stderr
    assert "Traceback" not in result.stderr

    env = _clean_env(NEWSLETTER_ENVIRONMENT="production", NEWSLETTER_SECRET_KEY="changeme")
    result = newsletter("db", "upgrade", env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "NEWSLETTER_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_topics_posts_and_demo(database_url: str, tmp_path: Path) -> None:
    env = _clean_env(NEWSLETTER_DATABASE_URL=database_url)
    newsletter("db", "upgrade", env=env, cwd=tmp_path)
    newsletter(
        "topics",
        "add",
        "border-security",
        "Border Security",
        "--description",
        "Borders",
        env=env,
        cwd=tmp_path,
    )
    again = newsletter(
        "topics", "add", "border-security", "Twice", env=env, cwd=tmp_path, check=False
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = newsletter("topics", "add", "Bad Slug!", "Bad", env=env, cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "slug" in bad.stderr

    out = newsletter("demo", env=env, cwd=tmp_path).stdout
    assert "9 new posts" in out
    assert "0 new posts" in newsletter("demo", env=env, cwd=tmp_path).stdout
    lines = newsletter("topics", "list", env=env, cwd=tmp_path).stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "border-security",
        "mexico",
        "migration",
        "refugees",
        "russia",
    ]

    added = newsletter(
        "posts",
        "add",
        "A new post",
        "--link",
        "https://example.org/p/1",
        "--topic",
        "mexico",
        env=env,
        cwd=tmp_path,
    )
    assert "added" in added.stdout
    edited = newsletter(
        "posts",
        "add",
        "A new post, edited",
        "--link",
        "https://example.org/p/1",
        "--topic",
        "mexico",
        env=env,
        cwd=tmp_path,
    )
    assert "updated" in edited.stdout
    listing = newsletter("posts", "list", env=env, cwd=tmp_path).stdout
    assert listing.count("\n") == 10 and "A new post, edited" in listing


@pytest.mark.timeout(180)
def test_dev_serves_the_form_and_mails_the_outbox_then_stops_cleanly(tmp_path: Path) -> None:
    """The README's run command on the embedded default: SQLite, embedded Redis, outbox."""
    port = free_port()
    newsletter("demo", env=_clean_env(), cwd=tmp_path)
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "subscriptions.cli", "dev", "--port", str(port)],
        cwd=tmp_path, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        started = time.monotonic()
        deadline = started + 60
        while b"is running at" not in (tmp_path / "dev.log").read_bytes():
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, "dev did not serve within 60 s"
            time.sleep(0.2)
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "Border Security" in page.text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            token = webforms.form_token(client, "/")
            time.sleep(2.1)  # a person takes longer than the form's minimum fill time
            answer = client.post(
                "/subscribe",
                data={
                    "csrf_token": token,
                    "email": "reader@example.org",
                    "topics": ["mexico"],
                    "frequency": "daily",
                },
            )
        assert answer.status_code == 200
        [eml] = wait_for_files(tmp_path / "var" / "outbox", 1)
        assert b"reader@example.org" in eml.read_bytes()
        children = _children(dev.pid)
        assert len(children) >= 4  # redis, web, worker, beat
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)], "children left running"


def test_dev_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = newsletter("dev", "--port", str(port), env=_clean_env(), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "taken" in result.stderr


def test_dev_stops_everything_when_a_child_dies(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "subscriptions.cli", "dev", "--port", str(port)],
        cwd=tmp_path, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"is running at" not in (tmp_path / "dev.log").read_bytes():
            assert dev.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        children = _children(dev.pid)
        web = next(
            pid
            for pid in children
            if b" web " in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        )
        os.kill(web, signal.SIGKILL)
        code = dev.wait(timeout=30)
    finally:
        if dev.poll() is None:
            dev.kill()
        log.close()
    assert code != 0
    assert "web exited" in (tmp_path / "dev.log").read_text()
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_digest_schedule_prints_the_count_and_asks_or_takes_yes_with_the_expected_count(
    database_url: str, tmp_path: Path
) -> None:
    """The CLI confirms a send like the console: it prints the recipient count and asks; `--yes`
    needs `--expect-count N` and is refused (nothing changed) when the count is no longer N."""
    from sqlalchemy import select as sql_select

    from subscriptions.db import create_db_engine, session_factory
    from subscriptions.models import Digest, DigestStatus, Post
    from tests.factories import active_reader

    env = _clean_env(NEWSLETTER_DATABASE_URL=database_url)
    newsletter("db", "upgrade", env=env, cwd=tmp_path)
    newsletter("demo", env=env, cwd=tmp_path)
    engine = create_db_engine(database_url)
    sessions = session_factory(engine)
    try:
        with sessions.begin() as session:
            active_reader(session, "mx1@example.org", ["mexico"])
            active_reader(session, "mx2@example.org", ["mexico", "russia"])
            active_reader(session, "ru@example.org", ["russia"])
        newsletter(
            "posts", "add", "Mexico votes", "--link", "https://example.org/mv", "--topic",
            "mexico", env=env, cwd=tmp_path,
        )  # fmt: skip
        with sessions() as session:
            post_id = session.scalar(sql_select(Post.id).where(Post.title == "Mexico votes"))
        created = newsletter(
            "digest", "create", "--subject", "Mexico now", "--post", str(post_id),
            env=env, cwd=tmp_path,
        ).stdout  # fmt: skip
        digest_id = created.split("\t")[0]
        at = ("--at", "2030-01-01T09:00+00:00")

        def run(*extra: str, answer: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "subscriptions.cli", "digest", "schedule", digest_id,
                 *at, *extra],
                env=env, cwd=tmp_path, input=answer, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        def status() -> DigestStatus:
            with sessions() as session:
                found = session.scalar(sql_select(Digest.status).where(Digest.id == int(digest_id)))
                assert found is not None
                return found

        declined = run(answer="n\n")
        assert f'Digest {digest_id} "Mexico now": 2 recipients' in declined.stdout
        assert "by topic: Mexico 2" in declined.stdout and "daily 2" in declined.stdout
        assert 'Schedule for 2030-01-01T09:00+00:00 "Mexico now" to 2 readers?' in declined.stdout
        assert declined.returncode == 1 and status() is DigestStatus.DRAFT
        bare = run("--yes")
        assert bare.returncode == 2 and "--expect-count" in bare.stderr
        stale = run("--yes", "--expect-count", "3")
        assert stale.returncode == 1 and "the audience is 2 readers now, not 3" in stale.stderr
        assert status() is DigestStatus.DRAFT
        asked = run(answer="y\n")
        assert asked.returncode == 0, asked.stderr
        assert status() is DigestStatus.SCHEDULED
    finally:
        engine.dispose()
