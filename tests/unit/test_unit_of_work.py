"""The unit of work every operation runs in: commit first, then the tasks; an error sends nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import registry, sessionmaker

from subscriptions.operations import UnitOfWork
from subscriptions.queue import TaskQueue

meta = MetaData()
things = Table(
    "things", meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True)
)


class Thing:
    def __init__(self, name: str) -> None:
        self.name = name


registry().map_imperatively(Thing, things)


class SeeingQueue(TaskQueue):
    """A queue that records each task and whether the row it names was committed when it was sent."""

    def __init__(self, sessions: sessionmaker[Any], *, broker_up: bool = True) -> None:
        super().__init__(None)
        self.sessions = sessions
        self.broker_up = broker_up
        self.seen: list[tuple[str, tuple[Any, ...], list[str]]] = []

    def send(self, name: str, *args: Any) -> bool:
        with self.sessions() as other:  # a separate connection: sees only committed rows
            names = list(other.scalars(select(things.c.name)))
        self.seen.append((name, args, names))
        return self.broker_up


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'uow.db'}")
    meta.create_all(engine)
    return sessionmaker(engine)


def test_tasks_leave_only_after_the_commit_and_see_the_committed_row(
    sessions: sessionmaker[Any],
) -> None:
    queue = SeeingQueue(sessions)
    with UnitOfWork(sessions, queue) as uow:
        uow.session.execute(insert(things).values(name="a"))
        uow.later("newsletter.plan_post_alerts", 7)
        assert queue.seen == []  # nothing leaves inside the block
    assert queue.seen == [("newsletter.plan_post_alerts", (7,), ["a"])]
    assert uow.sent == [("newsletter.plan_post_alerts", True)] and uow.queued


def test_an_error_inside_rolls_back_and_sends_nothing(sessions: sessionmaker[Any]) -> None:
    queue = SeeingQueue(sessions)
    with pytest.raises(RuntimeError), UnitOfWork(sessions, queue) as uow:
        uow.session.execute(insert(things).values(name="a"))
        uow.later("newsletter.poll_feed", 1)
        raise RuntimeError("refused")
    assert queue.seen == [] and uow.sent == []
    with sessions() as s:
        assert list(s.scalars(select(things.c.name))) == []


def test_a_failed_commit_sends_nothing(sessions: sessionmaker[Any]) -> None:
    with sessions() as s:
        s.execute(insert(things).values(name="taken"))
        s.commit()
    queue = SeeingQueue(sessions)
    with pytest.raises(IntegrityError), UnitOfWork(sessions, queue) as uow:
        uow.later("newsletter.send_digest", 3)
        # An ORM add is flushed only at commit time: the commit itself fails, not the block.
        uow.session.add(Thing("taken"))
    assert queue.seen == [] and uow.sent == []


def test_a_broker_that_refuses_is_reported_not_raised(sessions: sessionmaker[Any]) -> None:
    queue = SeeingQueue(sessions, broker_up=False)
    with UnitOfWork(sessions, queue) as uow:
        uow.session.execute(insert(things).values(name="b"))
        uow.later("newsletter.poll_feed", 2)
    assert uow.sent == [("newsletter.poll_feed", False)] and not uow.queued
    with sessions() as s:  # the row stays committed: the sweeper will find it
        assert list(s.scalars(select(things.c.name))) == ["b"]
