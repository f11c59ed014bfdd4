"""The sign-up intake (subscriptions/intake.py) on a real Redis and a real database.

The door (one Lua script per sign-up) and the applier (consumer group, one transaction per batch,
exactly once by the consent's unique `intake_key`), including the crashes between its steps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.intake import GROUP, Door, Entry, Intake, apply_entries
from subscriptions.models import Consent, Subscriber, Topic
from subscriptions.supervisor import free_port
from subscriptions.web.app import create_app
from tests import webforms
from tests.factories import add_demo_topics, make_settings, migrated_sessions


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    factory = migrated_sessions(database_url)
    with factory.begin() as session:
        add_demo_topics(session)
    yield factory
    bind = factory.kw["bind"]
    bind.dispose()


@pytest.fixture
def intake(redis_url: str) -> Intake:
    made = Intake.from_url(redis_url, prefix="t")
    assert made is not None
    return made


def entry(n: int, *, topics: tuple[str, ...] = ("mexico",)) -> Entry:
    return Entry(
        email=f"r{n}@example.org",
        topics=list(topics),
        frequency="daily",
        timezone="UTC",
        ip="192.0.2.1",
        source="test",
        user_agent="pytest",
        wording="I agree.",
        at=datetime(2026, 11, 27, 12, 0, tzinfo=UTC).isoformat(),
    )


def admit(intake: Intake, item: Entry, *, nonce: str, ip_limit: int = 100) -> Door:
    return intake.admit(
        item,
        nonce_key=f"t:once:{nonce}",
        nonce_ttl=60,
        ip_key="t:rl:ip",
        ip_limit=ip_limit,
        address_key=f"t:rl:address:{item.email}",
        address_limit=5,
        window_seconds=3600,
    ).door


def consents(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count(Consent.id))) or 0)


def test_the_door_refuses_a_replay_and_each_limit_and_queues_only_what_it_accepts(
    intake: Intake,
) -> None:
    assert admit(intake, entry(1), nonce="a") is Door.ACCEPTED
    assert admit(intake, entry(2), nonce="a") is Door.REPLAYED
    # The same sign-up on the same form (a double click) is not a replay, and is not queued again.
    assert admit(intake, entry(1), nonce="a") is Door.ADMITTED_BEFORE
    for n in range(2, 6):
        assert admit(intake, entry(1), nonce=f"n{n}") is Door.ACCEPTED
    assert admit(intake, entry(1), nonce="n6") is Door.ADDRESS_LIMITED  # the sixth for one address
    assert admit(intake, entry(3), nonce="x", ip_limit=6) is Door.IP_LIMITED  # the seventh hit
    assert intake.backlog() == 5


def test_only_the_first_sign_up_after_an_apply_asks_for_a_worker(
    intake: Intake, sessions: sessionmaker[Session]
) -> None:
    kicks = [
        intake.admit(
            entry(n),
            nonce_key=f"t:once:{n}",
            nonce_ttl=60,
            ip_key="t:rl:ip",
            ip_limit=100,
            address_key=f"t:rl:a{n}",
            address_limit=5,
            window_seconds=3600,
        ).kick
        for n in range(10)
    ]
    assert kicks == [True] + [False] * 9
    done = intake.apply_pending(sessions)
    assert (done.applied, done.skipped, len(done.confirmations)) == (10, 0, 10)
    assert intake.backlog() == 0 and consents(sessions) == 10
    # The applier cleared the kick: the next sign-up asks for a worker again.
    assert intake.admit(
        entry(99),
        nonce_key="t:once:99",
        nonce_ttl=60,
        ip_key="t:rl:ip",
        ip_limit=100,
        address_key="t:rl:a99",
        address_limit=5,
        window_seconds=3600,
    ).kick


def test_a_batch_committed_but_not_acknowledged_is_not_applied_twice(
    intake: Intake, sessions: sessionmaker[Session], redis_url: str
) -> None:
    for n in range(3):
        admit(intake, entry(n), nonce=str(n))
    intake.apply_pending(sessions, max_batches=0)  # creates the group, reads nothing
    # A worker reads the batch and commits it, then dies before XACK.
    client = redis.Redis.from_url(redis_url)
    [(_, items)] = client.xreadgroup(GROUP, "crashed", {intake.stream: ">"}, count=10)
    batch = [(i.decode(), Entry.loads(f[b"p"])) for i, f in items]
    with sessions.begin() as session:
        assert apply_entries(session, batch).applied == 3
    # Another worker takes the dead consumer's entries over: all three are skipped.
    done = intake.apply_pending(sessions, reclaim_idle_ms=0)
    assert (done.applied, done.skipped, done.confirmations) == (0, 3, [])
    assert consents(sessions) == 3 and intake.backlog() == 0


def test_entries_read_by_a_worker_that_died_before_committing_are_applied_by_another(
    intake: Intake, sessions: sessionmaker[Session], redis_url: str
) -> None:
    for n in range(3):
        admit(intake, entry(n), nonce=str(n))
    intake.apply_pending(sessions, max_batches=0)
    client = redis.Redis.from_url(redis_url)
    client.xreadgroup(GROUP, "crashed", {intake.stream: ">"}, count=10)
    # Not yet idle for long enough: a live consumer's entries are left alone.
    assert intake.apply_pending(sessions).applied == 0
    done = intake.apply_pending(sessions, reclaim_idle_ms=0)
    assert done.applied == 3 and consents(sessions) == 3 and intake.backlog() == 0


def test_an_unreadable_entry_is_set_aside_and_the_rest_applied(
    intake: Intake, sessions: sessionmaker[Session], redis_url: str
) -> None:
    admit(intake, entry(1), nonce="1")
    client = redis.Redis.from_url(redis_url)
    client.xadd(intake.stream, {"p": b"{not json"})
    client.xadd(intake.stream, {"p": b'{"email": "x@example.org"}'})  # fields missing
    admit(intake, entry(2), nonce="2")
    done = intake.apply_pending(sessions)
    assert (done.applied, done.dropped) == (2, 2)
    assert consents(sessions) == 2 and intake.backlog() == 0
    dead = client.xrange(intake.dead_stream)
    assert len(dead) == 2 and all(b"unreadable entry" in f[b"reason"] for _, f in dead)


def test_a_sign_up_that_fails_in_the_database_does_not_hold_back_its_batch(
    intake: Intake, sessions: sessionmaker[Session], redis_url: str
) -> None:
    admit(intake, entry(1), nonce="1")
    client = redis.Redis.from_url(redis_url)
    # Valid JSON with every field, but a frequency the database cannot take.
    client.xadd(intake.stream, {"p": entry(2).dumps().replace('"daily"', '"hourly"')})
    admit(intake, entry(3), nonce="3")
    done = intake.apply_pending(sessions)
    assert (done.applied, done.dropped) == (2, 1)
    assert consents(sessions) == 2
    [(_, fields)] = client.xrange(intake.dead_stream)
    assert fields[b"reason"] == b"ValueError"


def test_a_topic_archived_before_the_apply_is_left_out(
    intake: Intake, sessions: sessionmaker[Session]
) -> None:
    admit(intake, entry(1, topics=("mexico", "refugees")), nonce="1")
    admit(intake, entry(2, topics=("refugees",)), nonce="2")
    with sessions.begin() as session:
        session.execute(
            update(Topic).where(Topic.slug == "refugees").values(archived_at=datetime.now(UTC))
        )
    done = intake.apply_pending(sessions)
    assert (done.applied, done.dropped) == (1, 1)
    with sessions() as session:
        [consent] = session.scalars(select(Consent)).all()
        assert consent.topics == ["mexico"]


def test_two_appliers_at_once_apply_every_sign_up_once(
    intake: Intake, sessions: sessionmaker[Session], redis_url: str
) -> None:
    for n in range(600):
        admit(intake, entry(n), nonce=str(n), ip_limit=10_000)
    intake.apply_pending(sessions, max_batches=0)
    results = []

    def run(name: str) -> None:
        mine = Intake.from_url(redis_url, prefix="t")
        assert mine is not None
        results.append(mine.apply_pending(sessions, consumer=name, batch=50))

    threads = [threading.Thread(target=run, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.applied for r in results) == 600 and sum(r.skipped for r in results) == 0
    assert consents(sessions) == 600 and intake.backlog() == 0
    with sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 600


def test_with_redis_down_the_web_applies_the_sign_up_itself(
    tmp_path: Path,
    database_url: str,
    sessions: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(
        tmp_path, database_url=database_url, broker_url=dead, form_min_seconds=0
    )
    app = create_app(settings)
    try:
        client = TestClient(app, base_url="http://127.0.0.1:8000")
        answer = webforms.subscribe(client, "reader@example.org", ["mexico"])
        assert answer.status_code == 200 and "Check your email" in answer.text
        with sessions() as session:
            reader = session.scalar(select(Subscriber))
            assert reader is not None and reader.email == "reader@example.org"
        assert "sign-up intake unavailable (ConnectionError); applying here" in caplog.text
    finally:
        app.state.runtime.engine.dispose()
