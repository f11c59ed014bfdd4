"""A sign-up answered "check your email" survives a Redis crash before the worker applies it.

Redis runs exactly as `newsletter dev` runs it (`embedded_redis_argv`: append-only file, everysec), is
killed with SIGKILL between the web's answer and any worker, and started again on the same folder and
port; then a real worker applies the sign-up and sends the confirmation.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from subscriptions import supervisor as sv
from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Subscriber, SubscriberStatus
from tests import webforms
from tests.factories import SECRET
from tests.integration.conftest import free_port, newsletter, wait_for_files, wait_until_serving

pytestmark = pytest.mark.timeout(120)


def test_a_sign_up_in_redis_survives_a_redis_crash_and_is_applied_after_the_restart(
    tmp_path: Path, database_url: str, start: Any
) -> None:
    supervisor = sv.Supervisor()
    folder = tmp_path / "redis"
    redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    try:
        broker = sv.start_embedded_redis(supervisor, folder, env, port=redis_port)
        env.update(
            NEWSLETTER_DATABASE_URL=database_url,
            NEWSLETTER_BROKER_URL=broker,
            NEWSLETTER_EMAIL_URL=f"outbox://{tmp_path / 'outbox'}",
            NEWSLETTER_SECRET_KEY=SECRET,
            NEWSLETTER_ENVIRONMENT="test",
            NEWSLETTER_FORM_MIN_SECONDS="0",
            C_FORCE_ROOT="1",
            PYTHONUNBUFFERED="1",
        )
        newsletter("db", "upgrade", env=env)
        newsletter("topics", "add", "mexico", "Mexico", env=env)
        port = free_port()
        web = start(["web", "--port", str(port)], env)
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", web)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            answer = webforms.subscribe(client, "survivor@example.org", ["mexico"], "daily")
        assert answer.status_code == 200 and "Check your email" in answer.text
        client_ = redis.Redis.from_url(broker)
        assert sum(client_.xlen(key) for key in client_.scan_iter("*signups")) == 1
        client_.close()

        # A crash, not a clean shutdown: no chance to write anything more.
        [old] = supervisor.children
        os.kill(old.process.pid, signal.SIGKILL)
        old.process.wait(timeout=10)
        supervisor.children.clear()
        assert sv.start_embedded_redis(supervisor, folder, env, port=redis_port) == broker

        start(["worker", "--concurrency", "1"], env)
        [eml] = wait_for_files(tmp_path / "outbox", 1, timeout=60)
        assert b"survivor@example.org" in eml.read_bytes()
        engine = create_db_engine(database_url)
        with session_factory(engine)() as session:
            reader = session.scalar(select(Subscriber))
            assert reader is not None and reader.email == "survivor@example.org"
            assert reader.status is SubscriberStatus.PENDING
        engine.dispose()
    finally:
        supervisor.stop()
