"""The sending pipeline with real Celery worker processes: crashes, concurrency, a Redis restart, and
the fleet-wide rate limit.

A Resend stand-in (idempotent: Idempotency-Key) receives the mail. Workers are killed with SIGKILL in
the middle of a 20,000-reader digest and restarted, the broker's Redis is restarted, and in the end the
stand-in must have received exactly one email per reader, and the ledger must say so too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from subscriptions.models import Delivery, DeliveryStatus
from subscriptions.queue import TaskQueue
from subscriptions.supervisor import embedded_redis_binary, free_port
from tests.factories import SECRET, add_demo_topics, migrated_sessions
from tests.integration.test_delivery import add_readers, plan_alert
from tests.providerserver import ProviderServer


class OwnRedis:
    """A Redis of this test's own, so the test can restart it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or embedded_redis_binary()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("test Redis did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.stop()


def _env(database_url: str, redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_BROKER_URL=redis_url,
        NEWSLETTER_EMAIL_URL=f"resend+http://test-token@127.0.0.1:{port}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_ENVIRONMENT="test",
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM="Institute Updates <news@example.org>",
        NEWSLETTER_CLAIM_TIMEOUT_SECONDS="5",
        C_FORCE_ROOT="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _ledger(sessions: Any) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        ).all()
    return {status.value: int(n) for status, n in rows}


def _open_work(ledger: dict[str, int]) -> int:
    return ledger.get(DeliveryStatus.PENDING.value, 0) + ledger.get(DeliveryStatus.CLAIMED.value, 0)


@pytest.mark.timeout(600)
def test_killed_workers_and_a_restarted_redis_still_send_exactly_once(
    tmp_path: Path, database_url: str, own_redis: OwnRedis, start: Any
) -> None:
    readers = 20_000
    sessions = migrated_sessions(database_url)
    with sessions.begin() as session:
        add_demo_topics(session)
        emails = add_readers(session, readers)
    plan_alert(sessions)
    with ProviderServer(token="test-token") as server:
        env = _env(database_url, own_redis.url, server.port, NEWSLETTER_RATE_REQUESTS_PER_SECOND="100000",
                   NEWSLETTER_RATE_MESSAGES_PER_SECOND="1000000")  # fmt: skip
        workers = [
            start(["worker", "--concurrency", "1"], env),
            start(["worker", "--concurrency", "1"], env),
        ]
        queue = TaskQueue(own_redis.url)
        kills, redis_restarted = 0, False
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            queue.send("newsletter.dispatch")
            time.sleep(1.0)
            received = len(server.accepted)
            if kills < 3 and received > 3_000 + 5_000 * kills:
                victim = workers[kills % 2]
                os.killpg(victim.popen.pid, signal.SIGKILL)  # no goodbye: a crash
                victim.popen.wait()
                workers[kills % 2] = start(["worker", "--concurrency", "1"], env)
                kills += 1
            if not redis_restarted and received > 10_000:
                own_redis.stop()
                time.sleep(1)
                own_redis.start()
                queue = TaskQueue(own_redis.url)
                redis_restarted = True
            if _open_work(_ledger(sessions)) == 0:
                break
        ledger = _ledger(sessions)
        assert kills == 3 and redis_restarted
        assert ledger == {"sent": readers}, ledger
        counts = {e: server.delivered_to(e) for e in emails}
        assert sum(counts.values()) == readers
        assert set(counts.values()) == {1}, "someone got no email or two"


@pytest.mark.timeout(300)
def test_three_workers_never_exceed_the_rate_limit(
    tmp_path: Path, database_url: str, own_redis: OwnRedis, start: Any
) -> None:
    limit = 200
    readers = 1_200
    sessions = migrated_sessions(database_url)
    with sessions.begin() as session:
        add_demo_topics(session)
        add_readers(session, readers)
    plan_alert(sessions)
    with ProviderServer(token="test-token") as server:
        env = _env(
            database_url,
            own_redis.url,
            server.port,
            NEWSLETTER_RATE_MESSAGES_PER_SECOND=str(limit),
            NEWSLETTER_RATE_REQUESTS_PER_SECOND="1000",
        )
        for _ in range(3):
            start(["worker", "--concurrency", "1"], env)
        queue = TaskQueue(own_redis.url)
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and len(server.accepted) < readers:
            for _ in range(3):  # enough senders for three workers
                queue.send("newsletter.send_digest", 1)
            time.sleep(1.0)
        times = sorted(a.at for a in server.accepted)
    assert len(times) == readers
    # Over every one-second window, starting at each arrival: never more than the limit.
    busiest, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    assert busiest <= limit, f"{busiest} messages in one second, over the limit of {limit}"
    elapsed = times[-1] - times[0]
    assert elapsed >= (readers - limit) / limit * 0.95  # and the limit was actually what paced it
