"""The service layer: one function per operation, run the same way by the console, the API and the CLI.

Every operation takes a `UnitOfWork` first. It changes the store through `uow.session` and records
the tasks the worker must run afterwards with `uow.later(...)`; it never commits, and never talks to
the broker. The entry point opens the unit of work, calls the operation, and presents the result:

    with runtime.unit() as uow:                       # web (console or API)
        info = operations.posts.approve(uow, post_id)
    # committed here, and only then PLAN_POST_ALERTS is handed to the broker

The queue therefore never sees a row that is not committed, and a failed commit (or any error
inside the block) sends nothing. A task the broker could not take is not lost: beat's sweeper finds
the rows it would have named (see `subscriptions.queue.TaskQueue`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from sqlalchemy.orm import Session, sessionmaker

from subscriptions.queue import TaskQueue


class UnitOfWork:
    """One transaction, and the tasks it hands to the worker once that transaction is committed.

    `sent` lists, after a successful exit, each recorded task's name and whether the broker took
    it (False: no broker configured or unreachable; the sweeper will pick the work up).
    """

    session: Session

    def __init__(self, sessions: sessionmaker[Session], queue: TaskQueue) -> None:
        self._sessions = sessions
        self._queue = queue
        self._tasks: list[tuple[str, tuple[Any, ...]]] = []
        self.sent: list[tuple[str, bool]] = []

    def __enter__(self) -> Self:
        self.session = self._sessions()
        return self

    def later(self, task: str, *args: Any) -> None:
        """Record task `task` (a `subscriptions.queue` name) to send once the commit succeeded."""
        self._tasks.append((task, args))

    @property
    def queued(self) -> bool:
        """True when every recorded task reached the broker (and at least one was recorded)."""
        return bool(self.sent) and all(ok for _, ok in self.sent)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                self.session.rollback()
                return
            try:
                self.session.commit()
            except BaseException:
                self.session.rollback()
                raise
        finally:
            self.session.close()
            if exc_type is not None:
                self._tasks.clear()
        tasks, self._tasks = self._tasks, []
        self.sent = [(name, self._queue.send(name, *args)) for name, args in tasks]
