"""Real services for integration tests: a database (SQLite file or PostgreSQL), Redis, processes.

`NEWSLETTER_TEST_DATABASE_URL` picks PostgreSQL (each test gets a database of its own);
`NEWSLETTER_TEST_REDIS_URL` names a Redis. `make test` starts both. Without them a test that needs
one is skipped with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from subscriptions.supervisor import free_port
from tests.factories import SECRET

REPO = Path(__file__).resolve().parents[2]


def _missing(what: str) -> None:
    message = f"{what} is not set; `make test` starts the services and sets it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    base = os.environ.get("NEWSLETTER_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'newsletter.db'}"
        return
    url = make_url(base)
    name = f"nl_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The test Redis, emptied: each test starts with no queued task and no rate-limit counter."""
    url = os.environ.get("NEWSLETTER_TEST_REDIS_URL")
    if not url:
        _missing("NEWSLETTER_TEST_REDIS_URL")
        raise AssertionError("unreachable")
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def service_env(tmp_path: Path, database_url: str, redis_url: str) -> dict[str, str]:
    """Environment for the product's processes: real database, real Redis, an outbox in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_BROKER_URL=redis_url,
        NEWSLETTER_EMAIL_URL=f"outbox://{tmp_path / 'outbox'}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_ENVIRONMENT="test",
        NEWSLETTER_FROM="Institute Updates <news@example.org>",
        NEWSLETTER_SITE_NAME="Institute Updates",
        NEWSLETTER_FORM_MIN_SECONDS="0",
        C_FORCE_ROOT="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def newsletter(
    *args: str, env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "subscriptions.cli", *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"newsletter {' '.join(args)} failed: {result.stderr}")
    return result


class Process:
    """A product process started for a test and stopped after it, whatever happens."""

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "subscriptions.cli", *args],
            env=env,
            cwd=cwd or REPO,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """`start(args, env)` runs a CLI process for the test's lifetime."""
    processes: list[Process] = []

    def _start(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        process = Process(args, env, tmp_path / f"{args[0]}-{len(processes)}.log", cwd)
        processes.append(process)
        return process

    yield _start
    for process in reversed(processes):
        process.stop()


def wait_until_serving(url: str, process: Process, timeout: float = 60) -> None:
    """Wait for `url` to answer, failing early with the process's output if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.output()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout} s:\n{process.output()}")


def wait_for_files(folder: Path, count: int, timeout: float = 60) -> list[Path]:
    """Wait until `folder` holds `count` .eml files."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        if len(files) >= count:
            return files
        time.sleep(0.2)
    raise AssertionError(
        f"expected {count} emails in {folder}, found {len(list(folder.glob('*.eml'))) if folder.exists() else 0}"
    )


__all__ = ["Process", "free_port", "newsletter", "wait_for_files", "wait_until_serving"]
