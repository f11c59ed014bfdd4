"""Crash-point tests: a real worker SIGKILLed at each step of the send pipeline, on a durable database.

The worker reads NEWSLETTER_TEST_CRASH_AT (worker/crashpoints.py) and kills its own process group
the second time it reaches the named step, in the middle of a 300-reader alert sent in batches of
100. A fresh worker then finishes the work (the reaper runs with a 5-second claim timeout). Every
step runs against the Postmark stand-in (no idempotency key) and the Resend one (Idempotency-Key),
and two more tests restart Redis and stop PostgreSQL with `-m immediate` mid-send. PostgreSQL is
this module's own cluster with fsync and synchronous_commit on (see conftest.py).

What must hold for every reader: exactly one message reached the stand-in, or none and the ledger
says `failed`; `unknown` appears only at the steps after the request left, and only with Postmark;
with Resend the ledger says `sent` for everyone and nobody got two.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Batch, Delivery, Subscriber
from subscriptions.queue import TaskQueue
from tests.crash.conftest import DurablePostgres, OwnRedis
from tests.factories import SECRET, add_demo_topics, migrated_sessions
from tests.integration.conftest import Process
from tests.integration.test_delivery import add_readers, plan_alert
from tests.providerserver import Fault, ProviderServer
from worker.crashpoints import STEPS
from worker.digests.sender import UNKNOWN_AFTER_HAND_OVER

pytestmark = pytest.mark.integration

READERS = 300
#: NEWSLETTER_RATE_MESSAGES_PER_SECOND: the limiter's largest batch is a tenth of it (100).
FAST_RATE = "1000"
#: Steps after which the request may have reached the provider.
AFTER_REQUEST = {"request_left", "answered", "recording"}


@pytest.fixture(scope="session")
def template(durable_pg: DurablePostgres) -> str:
    """A migrated database with 300 Mexico readers and one planned alert, copied by every test."""
    url = durable_pg.create("crash_template")
    sessions = migrated_sessions(url)
    with sessions.begin() as session:
        add_demo_topics(session)
        add_readers(session, READERS)
    plan_alert(sessions)
    bind = sessions.kw["bind"]
    bind.dispose()
    return "crash_template"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        # Nothing to finish gracefully here: a killed group stops in milliseconds, not seconds.
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.stop()


def _env(
    provider: str, database_url: str, redis_url: str, port: int, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    email_url = {
        "postmark": f"postmark+http://test-token@127.0.0.1:{port}",
        "resend": f"resend+http://test-token@127.0.0.1:{port}",
    }[provider]
    env.update(
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_BROKER_URL=redis_url,
        NEWSLETTER_EMAIL_URL=email_url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_ENVIRONMENT="test",
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM="Institute Updates <news@example.org>",
        NEWSLETTER_CLAIM_TIMEOUT_SECONDS="5",
        NEWSLETTER_RATE_MESSAGES_PER_SECOND=FAST_RATE,
        NEWSLETTER_RATE_REQUESTS_PER_SECOND="1000",
        C_FORCE_ROOT="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _worker(processes: list[Process], tmp_path: Path, env: dict[str, str]) -> Process:
    process = Process(
        ["worker", "--concurrency", "1"], env, tmp_path / f"worker-{len(processes)}.log"
    )
    processes.append(process)
    return process


def _ledger(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        ).all()
    return {status.value: int(n) for status, n in rows}


def _rows(sessions: sessionmaker[Session]) -> dict[str, tuple[str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.last_error).join(
                Subscriber, Subscriber.id == Delivery.subscriber_id
            )
        ).all()
    return {email: (status.value, error) for email, status, error in rows}


def _finish(
    sessions: sessionmaker[Session], queue: TaskQueue, *, timeout: float = 60
) -> dict[str, int]:
    """Tick the dispatcher (reaper + senders) until no delivery is pending or claimed."""
    deadline = time.monotonic() + timeout
    ledger = _ledger(sessions)
    while time.monotonic() < deadline:
        ledger = _ledger(sessions)
        if not ledger.get("pending") and not ledger.get("claimed"):
            return ledger
        queue.send("newsletter.dispatch")
        time.sleep(0.5)
    raise AssertionError(f"work left after {timeout} s: {ledger}")


def _wait_dead(process: Process, timeout: float = 60) -> int:
    try:
        return process.popen.wait(timeout=timeout)
    except Exception:
        raise AssertionError(f"the worker did not crash:\n{process.output()}") from None


def _check_every_reader(
    rows: dict[str, tuple[str, str]], server: ProviderServer, *, unknown_allowed: bool
) -> None:
    """One message per reader the ledger calls sent; at most one (truthfully unknown) otherwise."""
    received: dict[str, int] = {}
    for accepted in server.accepted:
        received[accepted.to] = received.get(accepted.to, 0) + 1
    assert len(rows) == READERS
    doubled = {e: n for e, n in received.items() if n > 1}
    assert not doubled, f"{len(doubled)} readers got more than one message"
    for email, (status, error) in rows.items():
        if status == "sent":
            assert received.get(email) == 1, f"{email} is sent in the ledger but got nothing"
        elif status == "unknown":
            assert unknown_allowed, f"{email} is unknown although no request was in flight"
            assert error == UNKNOWN_AFTER_HAND_OVER
            assert received.get(email, 0) <= 1
        else:
            raise AssertionError(f"{email} ended {status}: {error}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("provider", ["postmark", "resend"])
@pytest.mark.parametrize("step", STEPS)
def test_a_worker_killed_at_each_step_loses_nobody_and_sends_nobody_twice(
    step: str,
    provider: str,
    tmp_path: Path,
    durable_pg: DurablePostgres,
    template: str,
    own_redis: OwnRedis,
    processes: list[Process],
) -> None:
    assert durable_pg.settings() == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }
    url = durable_pg.copy_of(template)
    engine = create_db_engine(url)
    sessions = session_factory(engine)
    with ProviderServer(token="test-token") as server:
        if step == "request_left":
            # The second request is accepted and its answer held back while the worker dies.
            server.faults += [Fault(), Fault(hold_after_accepting=3.0)]
        env = _env(provider, url, own_redis.url, server.port)
        doomed = _worker(processes, tmp_path, {**env, "NEWSLETTER_TEST_CRASH_AT": f"{step}:2"})
        queue = TaskQueue(own_redis.url)
        queue.send("newsletter.send_digest", 1)
        code = _wait_dead(doomed)
        assert code == -signal.SIGKILL, doomed.output()
        before = len(server.accepted)
        # Mid-send: one batch of 100 went, and the crash came with the second.
        assert 100 <= before <= 200, before
        _worker(processes, tmp_path, env)
        ledger = _finish(sessions, queue)
        rows = _rows(sessions)
    engine.dispose()
    unknown_allowed = provider == "postmark" and step in AFTER_REQUEST
    _check_every_reader(rows, server, unknown_allowed=unknown_allowed)
    if unknown_allowed:
        # The batch in flight: 100 readers whose message did arrive, reported, not resent.
        assert ledger == {"sent": 200, "unknown": 100}, ledger
    else:
        assert ledger == {"sent": READERS}, ledger
    assert len(server.accepted) == READERS


@pytest.mark.timeout(120)
def test_a_redis_restart_mid_send_loses_nobody_and_reports_no_unknown(
    tmp_path: Path,
    durable_pg: DurablePostgres,
    template: str,
    own_redis: OwnRedis,
    processes: list[Process],
) -> None:
    """Postmark (no idempotency): while the rate limiter paces the send, its Redis (also the broker)
    restarts. A batch waiting for the limiter goes back untried; nothing becomes unknown."""
    url = durable_pg.copy_of(template)
    engine = create_db_engine(url)
    sessions = session_factory(engine)
    with ProviderServer(token="test-token") as server:
        # 100 messages a second (60 after the limiter's margin): about five seconds for 300 readers.
        env = _env("postmark", url, own_redis.url, server.port,
                   NEWSLETTER_RATE_MESSAGES_PER_SECOND="100")  # fmt: skip
        _worker(processes, tmp_path, env)
        queue = TaskQueue(own_redis.url)
        queue.send("newsletter.send_digest", 1)
        deadline = time.monotonic() + 60
        while len(server.accepted) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        own_redis.stop()
        time.sleep(1.0)
        own_redis.start()
        assert len(server.accepted) < READERS, "the send finished before Redis went away"
        ledger = _finish(sessions, TaskQueue(own_redis.url), timeout=90)
        rows = _rows(sessions)
    engine.dispose()
    _check_every_reader(rows, server, unknown_allowed=False)
    assert ledger == {"sent": READERS}, ledger


@pytest.mark.timeout(150)
def test_postgresql_stopped_immediately_mid_send_sends_nobody_twice(
    tmp_path: Path,
    durable_pg: DurablePostgres,
    template: str,
    own_redis: OwnRedis,
    processes: list[Process],
) -> None:
    """Resend (Idempotency-Key): `pg_ctl stop -m immediate` while batches go out, then a restart
    (crash recovery). With durable commits every acknowledged claim, hand-over and record
    survives: each reader gets exactly one message and the ledger says sent."""
    url = durable_pg.copy_of(template)
    engine = create_db_engine(url)
    sessions = session_factory(engine)
    try:
        with ProviderServer(token="test-token") as server:
            env = _env("resend", url, own_redis.url, server.port,
                       NEWSLETTER_RATE_MESSAGES_PER_SECOND="100")  # fmt: skip
            _worker(processes, tmp_path, env)
            queue = TaskQueue(own_redis.url)
            queue.send("newsletter.send_digest", 1)
            deadline = time.monotonic() + 60
            while len(server.accepted) < 60 and time.monotonic() < deadline:
                time.sleep(0.05)
            durable_pg.stop("immediate")
            time.sleep(1.0)
            durable_pg.start()
            assert len(server.accepted) < READERS, "the send finished before PostgreSQL stopped"
            engine.dispose()
            ledger = _finish(sessions, queue, timeout=90)
            rows = _rows(sessions)
            with sessions() as session:
                open_batches = session.scalar(
                    select(func.count()).select_from(Batch).where(Batch.status != "done")
                )
    finally:
        engine.dispose()
    _check_every_reader(rows, server, unknown_allowed=False)
    assert ledger == {"sent": READERS}, ledger
    assert open_batches == 0
    assert {a.to for a in server.accepted} == set(rows)


def test_the_crash_switch_refuses_unknown_steps_and_is_inert_when_unset() -> None:
    """A misspelt step must not silently test nothing; without the variable nothing happens."""
    import subprocess
    import sys

    env = {**os.environ, "NEWSLETTER_TEST_CRASH_AT": "claimd"}
    result = subprocess.run(
        [sys.executable, "-c", "import worker.crashpoints"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "unknown step 'claimd'" in result.stderr
    assert "NEWSLETTER_TEST_CRASH_AT" not in os.environ
    from worker.crashpoints import crash_point

    for step in STEPS:
        crash_point(step)  # this process lives on
